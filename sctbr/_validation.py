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

import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

__all__ = [
    "ArgumentTypeError",
    "as_targets",
    "binary_target",
    "check_bool",
    "check_choice",
    "check_fraction",
    "check_grid",
    "check_int",
    "check_key_added",
    "check_model_args",
    "check_names",
    "check_obs_key",
    "check_path",
    "check_real",
    "check_setup",
    "check_str",
    "check_target",
    "check_train_args",
    "check_unique_names",
    "check_widths",
    "label_levels",
]


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
    check_unique_names(adata)
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
        if len(set(var_names)) < len(var_names):
            dup = sorted({str(v) for v in var_names if var_names.count(v) > 1})
            raise ValueError(f"`var_names` lists {dup[:5]} more than once; pass each input once.")


# -- single arguments: type and range, checked before any work -----------------------------------------------------
class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type; also a ``ValueError``, as the bad values of the same argument are."""


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value, *, low: int = 1, high: int | None = None, none_ok: bool = False, fix: str = "") -> None:
    """``value`` is an integer in ``[low, high]`` (or ``None`` with ``none_ok``); the error names the argument."""
    if value is None and none_ok:
        return
    want = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "") + (" or None" if none_ok else "")
    hint = f" {fix}" if fix else ""
    if not _is_int(value):
        raise ArgumentTypeError(f"`{name}` must be {want}, got {value!r} ({type(value).__name__}).{hint}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"`{name}` must be {want}, got {value!r}.{hint}")


def check_real(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    none_ok: bool = False,
    fix: str = "",
) -> None:
    """``value`` is a finite number within the bounds (open or closed); the error names the argument and the fix."""
    if value is None and none_ok:
        return
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    want = "a finite number" + (f" {' and '.join(parts)}" if parts else "") + (" or None" if none_ok else "")
    hint = f" {fix}" if fix else ""
    if not _is_real(value):
        raise ArgumentTypeError(f"`{name}` must be {want}, got {value!r} ({type(value).__name__}).{hint}")
    v = float(value)
    bad = not np.isfinite(v)
    bad = bad or (low is not None and (v <= low if low_open else v < low))
    bad = bad or (high is not None and (v >= high if high_open else v > high))
    if bad:
        raise ValueError(f"`{name}` must be {want}, got {value!r}.{hint}")


def check_fraction(name: str, value, *, zero_ok: bool = True, one_ok: bool = True, fix: str = "") -> None:
    """``value`` is a fraction in [0, 1] (ends as allowed)."""
    check_real(name, value, low=0.0, high=1.0, low_open=not zero_ok, high_open=not one_ok, fix=fix)


def check_bool(name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"`{name}` must be True or False, got {value!r} ({type(value).__name__}).")


def check_choice(name: str, value, choices: Sequence) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


def check_widths(name: str, value) -> None:
    """Hidden layer widths: a sequence of positive integers (empty: no hidden layer)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ArgumentTypeError(f"`{name}` must be a sequence of positive integers, e.g. (256, 64); got {value!r}.")
    bad = [w for w in value if not _is_int(w) or w < 1]
    if bad:
        raise ValueError(f"`{name}` must hold positive integers (layer widths), e.g. (256, 64); got {value!r}.")


def check_grid(name: str, value, *, min_len: int = 2, none_ok: bool = True) -> None:
    """A grid of finite non-negative numbers with at least ``min_len`` values."""
    if value is None and none_ok:
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ArgumentTypeError(
            f"`{name}` must be a sequence of non-negative numbers, e.g. [1e-4, 1e-3, 1e-2]; got {value!r}."
        )
    values = list(np.asarray(value).reshape(-1))
    if len(values) < min_len or not all(_is_real(v) and np.isfinite(v) and v >= 0 for v in values):
        raise ValueError(
            f"`{name}` must hold at least {min_len} finite non-negative numbers, e.g. [1e-4, 1e-3, 1e-2]; got {value!r}."
        )


def check_str(name: str, value, *, none_ok: bool = False, fix: str = "") -> None:
    """``value`` is a non-empty string (or ``None`` with ``none_ok``)."""
    if value is None and none_ok:
        return
    if not isinstance(value, str) or not value:
        want = "a non-empty str" + (" or None" if none_ok else "")
        raise ArgumentTypeError(
            f"`{name}` must be {want}, got {value!r} ({type(value).__name__}).{' ' + fix if fix else ''}"
        )


def check_names(name: str, value, *, none_ok: bool = False, fix: str = "") -> None:
    """``value`` is a name (str) or a collection of names (or ``None`` with ``none_ok``); iterators are not consumed."""
    if value is None and none_ok:
        return
    if isinstance(value, str):
        return
    hint = f" {fix}" if fix else ""
    want = "a str or a list of str" + (" or None" if none_ok else "")
    if isinstance(value, bytes) or not isinstance(value, Iterable):
        raise ArgumentTypeError(f"`{name}` must be {want}, got {value!r} ({type(value).__name__}).{hint}")
    if isinstance(value, (Sequence, np.ndarray, pd.Index, pd.Series, set, frozenset)):
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise ArgumentTypeError(f"`{name}` must be {want}; {bad[:5]!r} are not str.{hint}")


def check_path(name: str, value) -> None:
    """``value`` is a path: a str or an ``os.PathLike``."""
    if not isinstance(value, (str, os.PathLike)):
        raise ArgumentTypeError(
            f"`{name}` must be a path (str or pathlib.Path), got {value!r} ({type(value).__name__})."
        )


def check_obs_key(adata: AnnData, name: str, key, *, none_ok: bool = False) -> None:
    """``key`` names a column of ``adata.obs``."""
    if key is None and none_ok:
        return
    if not isinstance(key, str):
        raise ArgumentTypeError(f"`{name}` must be the name (str) of a column of adata.obs, got {key!r}.")
    if key not in adata.obs:
        raise KeyError(f"`{name}` {key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:10]}).")


def check_key_added(name: str, value) -> None:
    """An output key: ``None`` (the default) or a non-empty string."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ArgumentTypeError(f"`{name}` must be None (the default key) or a non-empty str, got {value!r}.")


def check_unique_names(adata: AnnData) -> None:
    """Duplicate ``var_names`` or ``obs_names`` make inputs or cells ambiguous: a clear error, as in scanpy."""
    for axis, fix in (("var_names", "adata.var_names_make_unique()"), ("obs_names", "adata.obs_names_make_unique()")):
        names = getattr(adata, axis)
        if not names.is_unique:
            dup = names[names.duplicated()].unique().tolist()
            raise ValueError(
                f"adata.{axis} has {len(dup)} duplicated name(s), e.g. {dup[:5]}; make them unique first with {fix}."
            )


def check_model_args(*, n_latent, hidden, lam, baseline, penalty, proximal, random_state, loss) -> None:
    """The arguments of :class:`sctbr.model.TBR` (and the same ones of ``sctbr.tl``), before any work."""
    check_int("n_latent", n_latent, fix="The number of latent programs, e.g. 5.")
    check_widths("hidden", hidden)
    if isinstance(lam, str):
        if lam != "auto":
            raise ValueError(f"`lam` must be a non-negative number or 'auto', got {lam!r}.")
    else:
        check_real("lam", lam, low=0.0, fix="The sparsity weight, e.g. 1e-3, or 'auto'.")
    check_bool("baseline", baseline)
    check_choice("penalty", penalty, ("l1", "log"))
    check_bool("proximal", proximal)
    check_int("random_state", random_state, low=0)
    losses = [loss] if isinstance(loss, str) else loss
    if not isinstance(losses, (Sequence, np.ndarray)) or not all(
        isinstance(v, str) and v in ("auto", "mse", "logistic") for v in losses
    ):
        raise ValueError(f"`loss` must be 'auto', 'mse' or 'logistic' (or one per target), got {loss!r}.")


def check_train_args(
    *,
    max_epochs,
    lr,
    batch_size,
    train_size,
    validation_size,
    random_state,
    fit_fraction=0.5,
    sparsify_lr_factor=1.0,
    lam_grid=None,
    path_epochs=0.5,
    refine=True,
    final_refine=True,
    final_objective="l1",
    early_stopping=False,
) -> None:
    """The numeric arguments of :meth:`sctbr.model.TBR.train` (and of ``sctbr.tl``), before any work."""
    check_int("max_epochs", max_epochs, none_ok=True, fix="Pass the number of epochs (e.g. 300), or None.")
    check_real("lr", lr, low=0.0, low_open=True, none_ok=True, fix="The learning rate, e.g. 3e-3, or None.")
    check_int("batch_size", batch_size, none_ok=True, fix="Cells per batch, e.g. 128, or None.")
    check_fraction("train_size", train_size, zero_ok=False, fix="The fraction of cells for training, e.g. 0.8.")
    check_fraction(
        "validation_size", validation_size, one_ok=False, fix="The fraction of cells for validation, e.g. 0.2."
    )
    if float(train_size) + float(validation_size) > 1 + 1e-9:
        raise ValueError(
            f"`train_size` + `validation_size` must be at most 1, got {train_size!r} + {validation_size!r}; the "
            "rest of the cells is the test set."
        )
    check_int("random_state", random_state, low=0)
    check_fraction("fit_fraction", fit_fraction, fix="The fraction of the epochs spent in phase 1, e.g. 0.7.")
    check_real("sparsify_lr_factor", sparsify_lr_factor, low=0.0, low_open=True, fix="e.g. 0.3.")
    check_grid("lam_grid", lam_grid)
    check_real("path_epochs", path_epochs, low=0.0, high=1.0, low_open=True, fix="A fraction of max_epochs, e.g. 0.1.")
    check_bool("refine", refine)
    check_bool("final_refine", final_refine)
    if final_objective not in ("l1", "log"):
        raise ValueError(
            f"`final_objective` must be 'l1' or 'log', got {final_objective!r}; 'log' adds a search of a log "
            "penalty to the final refinement."
        )
    if early_stopping is not None:
        check_bool("early_stopping", early_stopping)
