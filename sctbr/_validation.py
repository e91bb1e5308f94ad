"""Checks of the user's AnnData and arguments, shared by :class:`sctbr.model.TBR` and :mod:`sctbr.tl`.

Each check raises before anything is written into ``adata``, with a message that names the fix.

Examples
--------
>>> import anndata as ad
>>> import numpy as np
>>> import pandas as pd
>>> from sctbr._validation import as_targets, binary_target, check_setup
>>> adata = ad.AnnData(np.zeros((4, 2)), obs=pd.DataFrame({"sick": [True, False, True, False]}, index=list("abcd")))
>>> as_targets("sick"), binary_target(adata, "sick")
(['sick'], (array([1., 0., 1., 0.]), [False, True]))
>>> check_setup(adata, "sick", None, None, None, require_groupby=False, allow_labels=True)
>>> check_setup(adata, "sick", None, None, None, require_groupby=False)
Traceback (most recent call last):
...
TypeError: Target 'sick' must be numeric, got dtype bool with levels [False, True]. ...
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

__all__ = ["as_targets", "binary_target", "check_setup", "check_target", "label_levels"]


def as_targets(target) -> list[str]:
    """A target name or a sequence of names, as a list of names."""
    if isinstance(target, str):
        return [target]
    return [str(t) for t in target]


def check_target(adata: AnnData, target: str, allow_labels: bool) -> None:
    """Clear errors for a target column that is missing, not numeric (unless ``allow_labels``), not finite or constant."""
    if target not in adata.obs:
        raise KeyError(f"Target {target!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:10]}).")
    y = adata.obs[target]
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        if not allow_labels:
            levels = label_levels(y)
            shown = f" with levels {levels[:10]}" if levels is not None else ""
            raise TypeError(
                f"Target {target!r} must be numeric, got dtype {y.dtype}{shown}. Convert it with .astype(float); for "
                "a binary phenotype use 0/1 values (loss='auto' then fits the logistic loss). sctbr.tl.tbr converts "
                "boolean and two-level columns itself."
            )
        yv, _ = binary_target(adata, target)  # raises for more than two levels
    else:
        yv = y.to_numpy(dtype=float)
    if not np.isfinite(yv).all():
        raise ValueError(
            f"Target {target!r} has {int((~np.isfinite(yv)).sum())} NaN or infinite values; drop those cells first."
        )
    if np.nanstd(yv) == 0:
        raise ValueError(f"Target {target!r} is constant; there is nothing to predict.")


def label_levels(y: pd.Series) -> list | None:
    """The observed levels of a boolean, categorical or string column (``None`` for a numeric one)."""
    if pd.api.types.is_bool_dtype(y):
        return [v for v in (False, True) if (y == v).any()]
    if isinstance(y.dtype, pd.CategoricalDtype):
        present = set(y.dropna().unique())
        return [c for c in y.cat.categories if c in present]
    if not pd.api.types.is_numeric_dtype(y):
        return sorted(y.dropna().unique().tolist(), key=str)
    return None


def binary_target(adata: AnnData, target: str) -> tuple[np.ndarray, list | None]:
    """A target as float values: 0/1 for a boolean or two-level column (1 = the second level), with its levels.

    A column with more than two levels raises a ``ValueError`` naming them.
    """
    y = adata.obs[target]
    levels = label_levels(y)
    if levels is None:
        return y.to_numpy(dtype=np.float64), None
    if len(levels) > 2:
        shown = ", ".join(repr(v) for v in levels[:10]) + (", ..." if len(levels) > 10 else "")
        raise ValueError(
            f"Target {target!r} is categorical with {len(levels)} levels ({shown}); TBR predicts a numeric or a "
            f"binary (two-level) phenotype. Make a binary column (e.g. adata.obs['is_{levels[-1]}'] = "
            f"adata.obs[{target!r}] == {levels[-1]!r}), subset the cells to two levels, or pass one binary column "
            "per level as target=[...]."
        )
    values = np.where(y.isna(), np.nan, (y == levels[-1]).to_numpy(dtype=np.float64))
    return values, levels


def check_setup(
    adata: AnnData,
    target: str | Sequence[str],
    groupby: str | None,
    layer: str | None,
    var_names,
    *,
    require_groupby: bool = True,
    allow_labels: bool = False,
) -> None:
    """Clear errors for bad registrations, raised before anything is written into ``adata``.

    ``allow_labels`` accepts boolean and two-level categorical targets (``sctbr.tl.tbr`` converts them to 0/1).
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} inputs).")
    if target is None:
        raise ValueError("`target` is required: the name of a numeric column of adata.obs.")
    targets = as_targets(target)
    if len(targets) == 0:
        raise ValueError("`target` is an empty list: name at least one column of adata.obs.")
    if len(set(targets)) < len(targets):
        raise ValueError(f"`target` lists a column twice: {targets}.")
    for name in targets:
        check_target(adata, name, allow_labels)
    if groupby is None:
        if require_groupby:
            raise ValueError("`groupby` is required: the categorical column of adata.obs with each cell's environment.")
    elif groupby not in adata.obs:
        raise KeyError(f"groupby {groupby!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:10]}).")
    elif adata.obs[groupby].isna().any():
        raise ValueError(f"groupby {groupby!r} has missing values; every cell needs an environment.")
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found; available layers: {list(adata.layers.keys())}.")
    if var_names is not None:
        var_names = list(var_names)
        missing = [v for v in var_names if v not in adata.var_names]
        if missing:
            raise KeyError(f"{len(missing)} `var_names` are not in adata.var_names: {missing[:10]}.")
        if len(var_names) == 0:
            raise ValueError("`var_names` is empty.")
