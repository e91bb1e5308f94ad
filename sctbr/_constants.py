"""The names sctbr gives to things: registry keys of the model and the keys it reads and writes in an AnnData.

Every module imports these from here, so that a key is spelled once.

Examples
--------
>>> from sctbr._constants import TBR_KEY, latents_key, prediction_key
>>> latents_key(TBR_KEY), prediction_key(TBR_KEY)
('X_tbr', 'tbr_prediction')
"""

from __future__ import annotations

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
#: Default ``key_added`` of :func:`sctbr.tl.tbr` (``uns``, and the stem of its ``obsm``/``obs`` keys).
TBR_KEY = "tbr"
#: Default ``key_added`` of :func:`sctbr.tl.baseline`.
BASELINE_KEY = "baseline"

# ---------------------------------------------------------------------- adata.obsm and adata.obs

#: Key of ``adata.obsm`` where the simulators store the true latents.
TRUE_LATENTS_KEY = "Z_true"

# ---------------------------------------------------------------------- tables

#: Columns of the table of :func:`sctbr.tl.causal_effects` (read by :func:`sctbr.pl.causal_effects`).
CAUSAL_EFFECTS_COLUMNS = ["environment", "latent", "effect", "se", "ci_low", "ci_high", "p_value", "n_cells"]


def latents_key(key: str) -> str:
    """Key of ``adata.obsm`` holding the latents of the run ``uns[key]`` (``"X_tbr"`` for ``"tbr"``)."""
    return f"X_{key}"


def prediction_key(key: str) -> str:
    """Key of ``adata.obs`` holding the predictions of the run ``uns[key]`` (``"tbr_prediction"`` for ``"tbr"``)."""
    return f"{key}_prediction"
