"""Evaluation metrics for latent recovery, effect (ATE) recovery and Δ support recovery, and the heads' spectrum."""

from ._ate import ate_error, ate_table
from ._mcc import chance_mcc, match_latents, mcc, mcc_out_of_sample
from ._spectrum import heads_spectrum
from ._support import support_recovery

__all__ = [
    "mcc",
    "match_latents",
    "mcc_out_of_sample",
    "chance_mcc",
    "ate_error",
    "ate_table",
    "support_recovery",
    "heads_spectrum",
]
