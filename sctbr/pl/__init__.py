"""Plots in Scanpy's manner (``ax=None, show=None, save=None, return_fig=False``; None unless ``show=False``).

They read what ``sctbr.tl`` wrote.
"""

from sctbr.pl._causal import causal_effects
from sctbr.pl._history import history
from sctbr.pl._latents import latents_vs_truth
from sctbr.pl._results import mcc, prediction_error, transfer
from sctbr.pl._selection import n_latent, stability
from sctbr.pl._tree import tree
from sctbr.pl._weights import weights

__all__ = [
    "history",
    "latents_vs_truth",
    "mcc",
    "prediction_error",
    "transfer",
    "tree",
    "weights",
    "causal_effects",
    "n_latent",
    "stability",
]
