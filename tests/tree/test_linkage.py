"""Linkage matrices are validated with scipy.cluster.hierarchy.is_valid_linkage (by EnvironmentTree and pp)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage

from sctbr import EnvironmentTree

Z = linkage(np.array([[0.0], [0.1], [5.0]]))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda z: z.__setitem__((0, 2), -1.0), "negative distances"),
        (lambda z: z.__setitem__((1, 3), -2.0), "negative counts"),
        (lambda z: z.__setitem__((1, 0), z[0, 0]), "already merged"),
        (lambda z: z.__setitem__((0, 0), 4), "refers to cluster 4"),
    ],
)
def test_invalid_linkages_are_rejected_with_the_reason(edit, match):
    bad = Z.copy()
    edit(bad)
    with pytest.raises(ValueError, match=match):
        EnvironmentTree.from_linkage(bad, ["a", "b", "c"])


def test_a_linkage_needs_four_columns():
    with pytest.raises(ValueError, match=r"expected \(2, 4\)"):
        EnvironmentTree.from_linkage(Z[:, :2], ["a", "b", "c"])
