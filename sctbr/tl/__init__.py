"""The user's verbs: fit TBR or the baseline and write the results into the AnnData."""

from sctbr.tl._causal import causal_effects
from sctbr.tl._core import FitResult, fit
from sctbr.tl._identifiability import identifiability
from sctbr.tl._select import select_n_latent
from sctbr.tl._stability import stability
from sctbr.tl._tbr import baseline, tbr

__all__ = ["tbr", "baseline", "select_n_latent", "stability", "identifiability", "causal_effects", "fit", "FitResult"]
