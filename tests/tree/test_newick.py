"""Newick parsing edge cases that the packages we checked (newick, treeswift) get wrong; see sctbr/_tree/_newick.py."""

from __future__ import annotations

from sctbr import EnvironmentTree


def test_deeply_nested_newick_parses():
    """A caterpillar tree 5000 levels deep (the ``newick`` package raises RecursionError from depth 500)."""
    depth = 5000
    s = "(" * depth + "a" + "".join(f",l{i})n{i}" for i in range(depth)) + ";"
    tree = EnvironmentTree.from_newick(s)
    assert len(tree.nodes) == 2 * depth + 1
    assert tree.parent("a") == "n0"


def test_escaped_quotes_and_underscores_are_kept():
    tree = EnvironmentTree.from_newick("(('a b','it''s')x:0.1,c_d[&&NHX:foo=1]):0.0;")
    assert set(tree.nodes) == {"root", "x", "a b", "it's", "c_d"}
    assert EnvironmentTree.from_newick(tree.to_newick()) == tree
