"""Node names: the checks every tree constructor applies, their formatting in messages, and the unknown-node error."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

_MAX_LISTED = 5


class UnknownNodeError(KeyError, ValueError):
    """A node name that is not in the tree.

    Subclasses both :class:`KeyError` and :class:`ValueError`, so either can be caught.

    Examples
    --------
    >>> from sctbr import EnvironmentTree
    >>> tree = EnvironmentTree({"a": None, "b": "a"})
    >>> try:
    ...     tree.parent("zzz")
    ... except KeyError as err:
    ...     print(err)
    unknown node 'zzz'; the tree has nodes 'a', 'b'
    """

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


def _fmt_names(names: Iterable[Any], limit: int = _MAX_LISTED) -> str:
    """Format up to ``limit`` names as ``'a', 'b', ... (N in total)``."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names)} in total)"
    return shown


def _check_name(name: Any, what: str = "node") -> str:
    """Return ``name`` as a plain, non-empty :class:`str` or raise."""
    if isinstance(name, str):  # also numpy.str_
        name = str(name)
        if not name:
            raise ValueError(f"empty {what} name: node names must be non-empty strings")
        if "\x00" in name:
            raise ValueError(f"{what} name {name!r} contains a NUL character, which numpy and h5ad cannot store")
        return name
    raise TypeError(
        f"{what} name {name!r} has type {type(name).__name__}, but node names must be str; "
        "convert the labels to strings first (e.g. `str(x)` or `adata.obs[key].astype(str)`)"
    )


def _is_no_parent(value: Any) -> bool:
    """Whether ``value`` marks a root: ``None``, ``""``, NaN or ``pd.NA``."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, str):
        return value == ""
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return False


def _check_unique(names: list[str], what: str) -> None:
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dups = []
        for n in names:
            if n in seen and n not in dups:
                dups.append(n)
            seen.add(n)
        raise ValueError(f"duplicate node names in {what}: {_fmt_names(dups)}; every node name must be unique")


def _find_cycle(parent_of: Mapping[str, str | None], start: str) -> str:
    """Follow parents from ``start`` (which never reaches a root) and return a node on the cycle."""
    seen: set[str] = set()
    node: str | None = start
    while node is not None and node not in seen:
        seen.add(node)
        node = parent_of[node]
    return node if node is not None else start


def _decode(x: Any) -> Any:
    if isinstance(x, bytes | np.bytes_):
        return bytes(x).decode("utf-8")
    return x


def _as_list(x: Any, what: str) -> list[Any]:
    if isinstance(x, str):
        raise TypeError(f"{what!r} must be a list or array of names, not a single str")
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise ValueError(f"{what!r} must be one-dimensional, got shape {x.shape}")
        return x.tolist()
    return list(x)


def _is_iterator(x: Any) -> bool:
    return isinstance(x, Iterator) or not hasattr(x, "__len__")
