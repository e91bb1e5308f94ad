"""The user's verbs: fit TBR or the baseline and write the results into the AnnData."""

from sctbr.tl._tbr import baseline, tbr

__all__ = ["tbr", "baseline"]
