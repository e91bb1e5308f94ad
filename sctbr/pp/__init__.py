"""Preprocessing: AnnData in, AnnData annotated (environment tree, sub-clusters, MAGIC, subsampling)."""

from sctbr.pp._magic import magic
from sctbr.pp._subclusters import subclusters
from sctbr.pp._subsample import subsample
from sctbr.pp._tree import environment_tree

__all__ = ["environment_tree", "magic", "subclusters", "subsample"]
