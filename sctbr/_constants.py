"""The names sctbr gives to things: registry keys of the model and the keys it reads and writes in an AnnData.

Every module imports these from here, so that a key is spelled once.

Where a fit's results go (scanpy's ``key_added`` rule, as ``sc.tl.umap``): :func:`result_keys` maps a
``key_added`` to the ``obsm`` key, the ``uns`` key and the stem of the ``obs`` columns; the writer and every reader
use it (readers through :func:`stored_keys`).

Examples
--------
>>> from sctbr._constants import TBR_KEY, prediction_key, result_keys, split_key
>>> result_keys(None, TBR_KEY)
ResultKeys(obsm='X_tbr', uns='tbr', obs='tbr')
>>> result_keys("foo", TBR_KEY)
ResultKeys(obsm='foo', uns='foo', obs='foo')
>>> keys = result_keys(None, TBR_KEY)
>>> prediction_key(keys.obs), split_key(keys.obs)
('tbr_prediction', 'tbr_split')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

# ---------------------------------------------------------------------- scvi-tools registry of sctbr.model.TBR

#: Registry key of the features (``adata.X`` or a layer).
X_KEY = "X"
#: Registry key of the target(s) (``adata.obs[target]``).
Y_KEY = "y"
#: Registry key of the environment of each cell (``adata.obs[groupby]``).
ENV_KEY = "environment"

# ---------------------------------------------------------------------- adata.uns

#: Key of ``adata.uns`` where :func:`sctbr.pp.environment_tree` and the simulators store the tree.
TREE_KEY = "environment_tree"
#: Key of ``adata.uns`` where sctbr records the target and groupby its own functions prepared.
DEFAULTS_KEY = "sctbr"
#: Key of ``adata.uns`` where the simulators store the truth (weights, deltas, parameters).
SIMULATION_KEY = "simulation"
#: Default name of :func:`sctbr.tl.tbr`'s results (``key_added=None``): ``obsm["X_tbr"]``, ``uns["tbr"]``, ``obs["tbr_*"]``.
TBR_KEY = "tbr"
#: Default name of :func:`sctbr.tl.baseline`'s results: ``obsm["X_baseline"]``, ``uns["baseline"]``, ...
BASELINE_KEY = "baseline"
#: Default name of :func:`sctbr.tl.stability`'s results: ``uns["tbr_stability"]``, ``obsm["X_tbr_stability"]``.
STABILITY_KEY = "tbr_stability"
#: Default name of :func:`sctbr.tl.select_n_latent`'s result: ``uns["tbr_n_latent"]``.
N_LATENT_KEY = "tbr_n_latent"
#: Default name of :func:`sctbr.tl.identifiability`'s result: ``uns["tbr_identifiability"]``.
IDENTIFIABILITY_KEY = "tbr_identifiability"
#: Field of a fit's ``uns`` entry naming the ``obsm`` key of its latents (as scanpy's neighbors record theirs).
OBSM_KEY_FIELD = "obsm_key"
#: Categories of the ``obs`` column of the train/validation/test split, in this order.
SPLITS = ("train", "validation", "test")

# ---------------------------------------------------------------------- adata.obsm and adata.obs

#: Key of ``adata.obsm`` where the simulators store the true latents.
TRUE_LATENTS_KEY = "Z_true"

# ---------------------------------------------------------------------- tables

#: Columns of the table of :func:`sctbr.tl.causal_effects` (read by :func:`sctbr.pl.causal_effects`).
CAUSAL_EFFECTS_COLUMNS = ["environment", "latent", "effect", "se", "ci_low", "ci_high", "p_value", "n_cells"]


class ResultKeys(NamedTuple):
    """Where one result lives: ``obsm`` key, ``uns`` key and the stem of its ``obs`` columns."""

    obsm: str
    uns: str
    obs: str


def result_keys(key_added: str | None, default: str) -> ResultKeys:
    """scanpy's ``key_added`` rule (``sc.tl.umap``): ``None`` gives ``("X_" + default, default)``, a name both.

    The ``obs`` columns take the ``uns`` key as their stem (``f"{uns}_prediction"``, ``f"{uns}_split"``).
    """
    if key_added is None:
        return ResultKeys(f"X_{default}", default, default)
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(
            f"`key_added` must be None (the default names: obsm 'X_{default}', uns '{default}') or a non-empty "
            f"string naming both the obsm and the uns entry, got {key_added!r}."
        )
    return ResultKeys(key_added, key_added, key_added)


def stored_keys(entry: Mapping[str, Any] | None, key: str) -> ResultKeys:
    """The keys of the result stored under ``adata.uns[key]``: readers pass that ``uns`` key.

    The ``obsm`` key is the one the writer recorded in the entry (``entry["obsm_key"]``); entries without it
    (written before sctbr recorded it, or by hand) use ``f"X_{key}"``.
    """
    obsm = entry.get(OBSM_KEY_FIELD) if hasattr(entry, "get") else None
    return ResultKeys(str(obsm) if obsm else f"X_{key}", key, key)


def prediction_key(stem: str) -> str:
    """Column of ``adata.obs`` with the predictions of a fit (``"tbr_prediction"`` for the stem ``"tbr"``)."""
    return f"{stem}_prediction"


def split_key(stem: str) -> str:
    """Categorical column of ``adata.obs`` with the train/validation/test split of a fit (``"tbr_split"``)."""
    return f"{stem}_split"
