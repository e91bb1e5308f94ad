"""Simulators, readers and bundled data."""

from sctbr.datasets._simulate import random_tree, simulate

__all__ = ["simulate", "random_tree"]
