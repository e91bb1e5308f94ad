"""Small helpers shared by every layer: where sctbr records its defaults in ``adata.uns``."""

from __future__ import annotations

from typing import Any

import anndata as ad

#: Key of ``adata.uns`` where :func:`sctbr.pp.environment_tree` and the simulators store the tree.
TREE_KEY = "environment_tree"
#: Key of ``adata.uns`` where sctbr records the target and groupby its own functions prepared.
DEFAULTS_KEY = "sctbr"


def record_defaults(adata: ad.AnnData, **values: Any) -> None:
    """Record ``target``/``groupby``/``tree_key`` so that ``sctbr.tl.tbr(adata)`` finds them."""
    current = dict(adata.uns.get(DEFAULTS_KEY, {}))
    current.update({k: v for k, v in values.items() if v is not None})
    adata.uns[DEFAULTS_KEY] = current


def recorded_default(adata: ad.AnnData, name: str) -> Any | None:
    """Return a value recorded by :func:`record_defaults`, or None."""
    return dict(adata.uns.get(DEFAULTS_KEY, {})).get(name)
