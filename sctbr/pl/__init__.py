"""Plots in Scanpy's manner: ``ax=None, show=None, return_fig=False``; they read what ``sctbr.tl`` wrote."""

from sctbr.pl._latents import latents_vs_truth

__all__ = ["latents_vs_truth"]
