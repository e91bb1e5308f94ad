"""Simulators, readers and bundled data."""

from sctbr.datasets._genes import house_keeping_genes, regulator_r2, weakly_correlated_genes
from sctbr.datasets._gtex import read_gtex, select_epithelial
from sctbr.datasets._pbmc import pbmc3k
from sctbr.datasets._regulators import regulators
from sctbr.datasets._semisynthetic import semisynthetic
from sctbr.datasets._simulate import random_tree, simulate, tree_weights

__all__ = [
    "simulate",
    "random_tree",
    "tree_weights",
    "semisynthetic",
    "pbmc3k",
    "read_gtex",
    "select_epithelial",
    "regulators",
    "house_keeping_genes",
    "regulator_r2",
    "weakly_correlated_genes",
]
