"""The paper's experiments, at three scales: ``python -m sctbr.experiments NAME|all --profile quick --out DIR``.

Each experiment returns a tidy table (one row per method x setting x repetition: ``experiment``, ``method``, ``k``,
``seed``, ``mcc``, ``test_mse``, ``transfer_mse``, ``n_latent``, ``fit_seconds`` and its own columns) that
:func:`sctbr.pl.mcc`, :func:`sctbr.pl.prediction_error` and :func:`sctbr.pl.transfer` draw. Every fit uses the
paper's 50/25/25 split; hyper-parameters are chosen on the validation cells and every number is reported on the
test cells.
"""

from sctbr.experiments._profiles import PROFILES, Profile
from sctbr.experiments._real import semisynthetic_sweep, transfer
from sctbr.experiments._report import run
from sctbr.experiments._simulation import (
    bernoulli_changes,
    causal_effects,
    latent_dimension,
    leaves_only,
    linear_psi,
    sparsity_sweep,
)

__all__ = [
    "sparsity_sweep",
    "leaves_only",
    "latent_dimension",
    "linear_psi",
    "bernoulli_changes",
    "causal_effects",
    "semisynthetic_sweep",
    "transfer",
    "run",
    "Profile",
    "PROFILES",
]
