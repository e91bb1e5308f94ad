import pickle

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import linkage

from sctbr import EnvironmentTree
from sctbr._tree import UnknownNodeError

# root
# ├── T
# │   ├── CD4
# │   └── CD8
# └── B
#     └── plasma
SMALL = {"T": "root", "B": "root", "CD4": "T", "CD8": "T", "plasma": "B", "root": None}


@pytest.fixture
def small() -> EnvironmentTree:
    return EnvironmentTree(SMALL)


def random_parents(n: int, seed: int = 0, prefix: str = "v") -> dict[str, str | None]:
    rng = np.random.default_rng(seed)
    return {f"{prefix}{i}": (f"{prefix}{rng.integers(0, i)}" if i else None) for i in range(n)}


# ---------------------------------------------------------------------- basic structure


def test_basic_queries(small):
    assert small.nodes == ("root", "T", "B", "CD4", "CD8", "plasma")
    assert small.root == "root"
    assert small.n_nodes == len(small) == 6
    assert list(small) == list(small.nodes)
    assert "CD4" in small
    assert "NK" not in small
    assert 3 not in small
    assert small.parent("CD4") == "T"
    assert small.parent("root") is None
    assert small.children("T") == ("CD4", "CD8")
    assert small.children("CD4") == ()
    assert small.leaves == ("CD4", "CD8", "plasma")
    assert small.is_leaf("plasma")
    assert not small.is_leaf("B")
    assert [small.depth(n) for n in small.nodes] == [0, 1, 1, 2, 2, 2]
    assert small.max_depth == 2
    assert small.ancestors("CD8") == ("root", "T")
    assert small.ancestors("root") == ()
    assert small.arcs == (("root", "T"), ("root", "B"), ("T", "CD4"), ("T", "CD8"), ("B", "plasma"))
    assert small.n_arcs == 5
    assert small.arc_labels == ("root->T", "root->B", "T->CD4", "T->CD8", "B->plasma")
    assert small.arc_index("plasma") == 4
    assert small.arc_index("T") == 0
    assert small.path("plasma") == [1, 4]
    assert small.path("CD8") == [0, 3]
    assert small.path("root") == []
    assert repr(small) == "EnvironmentTree(n_nodes=6, n_leaves=3, depth=2, root='root')"


def test_arc_i_goes_into_node_i_plus_1(small):
    for i, (p, c) in enumerate(small.arcs):
        assert c == small.nodes[i + 1]
        assert small.parent(c) == p
        assert small.arc_index(c) == i


def test_children_keep_input_order():
    tree = EnvironmentTree({"z": "r", "a": "r", "m": "r", "r": None, "y": "a", "b": "z"})
    assert tree.children("r") == ("z", "a", "m")
    assert tree.nodes == ("r", "z", "a", "m", "b", "y")


def test_parent_only_node_becomes_root_and_no_parent_markers():
    assert EnvironmentTree({"a": "r", "b": "r"}).root == "r"
    assert EnvironmentTree({"r": "", "a": "r"}) == EnvironmentTree({"r": None, "a": "r"})
    assert EnvironmentTree({"r": float("nan"), "a": "r"}).root == "r"
    # pandas Series mapping child -> parent with NaN for the root
    series = pd.Series({"r": np.nan, "a": "r"})
    assert EnvironmentTree(series.to_dict()).parent("a") == "r"


def test_single_node_tree():
    tree = EnvironmentTree({"only": None})
    assert tree.nodes == ("only",)
    assert tree.leaves == ("only",)
    assert tree.n_arcs == 0
    assert tree.max_depth == 0
    assert tree.path_matrix().shape == (1, 0)
    assert EnvironmentTree.from_newick(tree.to_newick()) == tree


def test_numpy_str_names_become_plain_str():
    tree = EnvironmentTree({np.str_("a"): None, np.str_("b"): np.str_("a")})
    assert all(type(n) is str for n in tree.nodes)
    assert tree == EnvironmentTree({"b": "a"})


def test_equality_is_order_insensitive_and_hash_consistent():
    t1 = EnvironmentTree({"a": "r", "b": "r"})
    t2 = EnvironmentTree({"b": "r", "a": "r", "r": None})
    t3 = EnvironmentTree({"a": "r", "b": "a"})
    assert t1 == t2
    assert hash(t1) == hash(t2)
    assert t1 != t3
    assert t1 != {"a": "r", "b": "r"}
    assert len({t1, t2, t3}) == 2


def test_immutable_and_picklable(small):
    with pytest.raises(AttributeError, match="immutable"):
        small.foo = 1
    with pytest.raises(AttributeError, match="immutable"):
        small._nodes = ()
    clone = pickle.loads(pickle.dumps(small))
    assert clone == small
    assert clone.nodes == small.nodes


def test_add_node(small):
    bigger = small.add_node("Treg", "CD4")
    assert bigger.parent("Treg") == "CD4"
    assert bigger.n_nodes == 7
    assert "Treg" not in small
    assert small.n_nodes == 6
    assert bigger.add_node("NK", "root").children("root") == ("T", "B", "NK")
    with pytest.raises(ValueError, match="already in the tree"):
        small.add_node("CD8", "B")
    with pytest.raises(KeyError, match="unknown node 'nope'"):
        small.add_node("x", "nope")


# ---------------------------------------------------------------------- newick


def test_from_newick_with_lengths_labels_and_quotes():
    tree = EnvironmentTree.from_newick("((CD4:0.1, CD8:2e-1)T:1,'B cell':0.5, 'it''s')immune:0.0;")
    assert tree.root == "immune"
    assert tree.children("immune") == ("T", "B cell", "it's")
    assert tree.children("T") == ("CD4", "CD8")


def test_from_newick_comments_whitespace_and_no_semicolon():
    tree = EnvironmentTree.from_newick(" ( a [a comment] ,\n b ) r ")
    assert tree == EnvironmentTree({"a": "r", "b": "r"})


def test_from_newick_unlabelled_nodes_get_names():
    tree = EnvironmentTree.from_newick("((a,b),(c,d));")
    assert tree.root == "root"
    assert tree.children("root") == ("node0", "node1")
    assert tree.children("node0") == ("a", "b")
    assert tree.children("node1") == ("c", "d")


def test_from_newick_generated_names_avoid_clashes():
    tree = EnvironmentTree.from_newick("((node0,root),(x,y));")
    names = set(tree.nodes)
    assert len(names) == 7
    assert tree.parent("node0") != "node0"
    assert tree.root not in {"node0", "root"}
    assert tree.parent("node0") == tree.parent("root")


def test_from_newick_single_leaf():
    assert EnvironmentTree.from_newick("A;").nodes == ("A",)


def test_to_newick_quotes_when_needed():
    tree = EnvironmentTree({"T cell": "r", "B": "r", "it's": "B", "x,y": "B", "(p)": "B"})
    text = tree.to_newick()
    assert text == "('T cell',('it''s','x,y','(p)')B)r;"
    assert EnvironmentTree.from_newick(text) == tree


def test_newick_roundtrip_deep_chain_is_not_recursive():
    chain = {f"c{i}": (f"c{i - 1}" if i else None) for i in range(5000)}
    tree = EnvironmentTree(chain)
    back = EnvironmentTree.from_newick(tree.to_newick())
    assert back == tree
    assert back.max_depth == 4999


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("((a,b);", "unclosed|unbalanced"),
        ("(a,b));", "unmatched"),
        ("(a b);", "unexpected character 'b'"),
        ("(a:x,b);", "branch length 'x' is not a number"),
        ("('a,b);", "unterminated quoted label"),
        ("(a,b)[c;", "unterminated"),
        ("(a,b);(c,d);", "after ';'"),
        ("a,b;", "outside parentheses"),
    ],
)
def test_from_newick_syntax_errors(text, match):
    with pytest.raises(ValueError, match=match):
        EnvironmentTree.from_newick(text)


def test_from_newick_duplicate_and_empty():
    with pytest.raises(ValueError, match="duplicate node names.*'a'"):
        EnvironmentTree.from_newick("((a,b)c,a);")
    with pytest.raises(ValueError, match="empty tree"):
        EnvironmentTree.from_newick(" ;")
    with pytest.raises(ValueError, match="empty tree"):
        EnvironmentTree.from_newick("")
    with pytest.raises(TypeError, match="expects a str"):
        EnvironmentTree.from_newick(b"(a,b);")


# ---------------------------------------------------------------------- networkx


def test_networkx_roundtrip(small):
    g = small.to_networkx()
    assert isinstance(g, nx.DiGraph)
    assert list(g.nodes) == list(small.nodes)
    assert list(g.edges) == list(small.arcs)
    back = EnvironmentTree.from_networkx(g)
    assert back == small
    assert back.nodes == small.nodes


def test_from_networkx_errors():
    with pytest.raises(ValueError, match="'c' has 2 parents"):
        EnvironmentTree.from_networkx(nx.DiGraph([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c")]))
    with pytest.raises(TypeError, match="bfs_tree"):
        EnvironmentTree.from_networkx(nx.Graph([("r", "a")]))
    with pytest.raises(ValueError, match="empty tree"):
        EnvironmentTree.from_networkx(nx.DiGraph())
    with pytest.raises(TypeError, match="convert the labels"):
        EnvironmentTree.from_networkx(nx.DiGraph([(0, 1)]))


# ---------------------------------------------------------------------- linkage


def test_from_linkage_scipy():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 3))
    Z = linkage(X, method="average")
    names = ["a", "b", "c", "d", "e"]
    tree = EnvironmentTree.from_linkage(Z, names)
    assert sorted(tree.leaves) == names
    internal = [n for n in tree.nodes if not tree.is_leaf(n)]
    assert len(internal) == 4
    assert sorted(internal) == ["node0", "node1", "node2", "root"]
    assert tree.root == "root"
    first_a, first_b = (names[int(i)] for i in Z[0, :2])
    assert tree.parent(first_a) == tree.parent(first_b) == "node0"
    # every row i merges exactly the two clusters it lists
    for i, (a, b) in enumerate(Z[:, :2].astype(int)):
        name = "root" if i == 3 else f"node{i}"
        kids = [names[c] if c < 5 else ("root" if c - 5 == 3 else f"node{c - 5}") for c in (a, b)]
        assert tree.children(name) == tuple(kids)


def test_from_linkage_options_and_errors():
    Z = linkage(np.array([[0.0], [0.1], [5.0]]))
    tree = EnvironmentTree.from_linkage(Z, ["a", "b", "c"], internal_prefix="cl", root_name="top")
    assert set(tree.nodes) == {"a", "b", "c", "cl0", "top"}
    with pytest.raises(ValueError, match="clash.*'node0'.*internal_prefix or root_name"):
        EnvironmentTree.from_linkage(Z, ["node0", "b", "c"])
    with pytest.raises(ValueError, match="clash.*'root'"):
        EnvironmentTree.from_linkage(Z, ["a", "root", "c"])
    with pytest.raises(ValueError, match=r"expected \(3, 4\) for 4 leaves"):
        EnvironmentTree.from_linkage(Z, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="duplicate"):
        EnvironmentTree.from_linkage(Z, ["a", "a", "c"])
    bad = Z.copy()
    bad[1, 0] = bad[0, 0]  # reuse a leaf that was already merged
    with pytest.raises(ValueError, match="already merged"):
        EnvironmentTree.from_linkage(bad, ["a", "b", "c"])
    bad = Z.copy()
    bad[0, 0] = 4  # cluster 4 does not exist yet at row 0
    with pytest.raises(ValueError, match="refers to cluster 4"):
        EnvironmentTree.from_linkage(bad, ["a", "b", "c"])


def test_from_linkage_single_leaf():
    tree = EnvironmentTree.from_linkage(np.empty((0, 4)), ["only"])
    assert tree.nodes == ("only",)
    with pytest.raises(ValueError, match="empty tree"):
        EnvironmentTree.from_linkage(np.empty((0, 4)), [])


# ---------------------------------------------------------------------- dict / h5ad


def test_to_dict_is_plain_unicode(small):
    d = small.to_dict()
    assert d["nodes"].dtype.kind == "U"
    assert d["parents"].dtype.kind == "U"
    assert d["nodes"].tolist() == list(small.nodes)
    assert d["parents"].tolist() == ["", "root", "root", "T", "T", "B"]
    back = EnvironmentTree.from_dict(d)
    assert back == small
    assert back.nodes == small.nodes


def test_from_dict_lists_none_and_extra_keys():
    d = {"nodes": ["r", "a", "b"], "parents": [None, "r", "a"], "groupby": "cell_type"}
    assert EnvironmentTree.from_dict(d) == EnvironmentTree({"a": "r", "b": "a"})
    d = {"nodes": np.array([b"r", b"a"]), "parents": np.array([b"", b"r"])}
    assert EnvironmentTree.from_dict(d) == EnvironmentTree({"a": "r"})


def test_from_dict_errors():
    with pytest.raises(ValueError, match="duplicate node names.*'a'"):
        EnvironmentTree.from_dict({"nodes": ["r", "a", "a"], "parents": ["", "r", "r"]})
    with pytest.raises(ValueError, match="'nodes' has 2 entries but 'parents' has 1"):
        EnvironmentTree.from_dict({"nodes": ["r", "a"], "parents": [""]})
    with pytest.raises(KeyError, match="parent 'x' of node 'a' is not listed"):
        EnvironmentTree.from_dict({"nodes": ["r", "a"], "parents": ["", "x"]})
    with pytest.raises(ValueError, match="keys 'nodes' and 'parents'"):
        EnvironmentTree.from_dict({"nodes": ["r"]})
    with pytest.raises(ValueError, match="empty tree"):
        EnvironmentTree.from_dict({"nodes": [], "parents": []})


def test_h5ad_roundtrip(tmp_path, small):
    anndata = pytest.importorskip("anndata")
    adata = anndata.AnnData(X=np.zeros((3, 2), dtype=np.float32))
    tree = small.add_node("it's a 'quoted', (odd) name", "plasma")
    adata.uns["tree"] = tree.to_dict()
    adata.uns["single"] = EnvironmentTree({"only": None}).to_dict()
    path = tmp_path / "t.h5ad"
    adata.write_h5ad(path)
    back = anndata.read_h5ad(path)
    restored = EnvironmentTree.from_dict(back.uns["tree"])
    assert restored == tree
    assert restored.nodes == tree.nodes
    assert EnvironmentTree.from_dict(back.uns["single"]).nodes == ("only",)
    assert EnvironmentTree.coerce(back.uns["tree"]) == tree


# ---------------------------------------------------------------------- coerce / balanced


def test_coerce(small):
    assert EnvironmentTree.coerce(small) is small
    assert EnvironmentTree.coerce(small.to_dict()) == small
    assert EnvironmentTree.coerce(SMALL) == small
    assert EnvironmentTree.coerce(small.to_newick()) == small
    assert EnvironmentTree.coerce(small.to_networkx()) == small
    with pytest.raises(TypeError, match="Newick string.*networkx.DiGraph"):
        EnvironmentTree.coerce([("root", "T")])
    with pytest.raises(TypeError, match="cannot make an EnvironmentTree from int"):
        EnvironmentTree.coerce(3)


def test_balanced():
    tree = EnvironmentTree.balanced(depth=4)
    assert (tree.n_nodes, len(tree.leaves), tree.n_arcs, tree.max_depth) == (31, 16, 30, 4)
    assert tree.nodes[:7] == ("root", "n0", "n1", "n00", "n01", "n10", "n11")
    assert all(tree.depth(leaf) == 4 for leaf in tree.leaves)
    assert EnvironmentTree.balanced(0).nodes == ("root",)
    ternary = EnvironmentTree.balanced(2, 3, prefix="x")
    assert ternary.n_nodes == 13
    assert ternary.children("x2") == ("x20", "x21", "x22")
    wide = EnvironmentTree.balanced(2, 12)
    assert wide.n_nodes == 1 + 12 + 144  # names stay unique with more than 10 children
    assert wide.parent("n10_3") == "n10"
    assert wide.parent("n1_0") == "n1"
    with pytest.raises(ValueError, match="depth must be a non-negative int"):
        EnvironmentTree.balanced(-1)
    with pytest.raises(ValueError, match="branching must be a positive int"):
        EnvironmentTree.balanced(2, 0)


# ---------------------------------------------------------------------- path matrix


def test_path_matrix_exact(small):
    P = small.path_matrix()
    assert isinstance(P, sp.csr_matrix)
    assert P.dtype == np.float32
    # arcs: root->T, root->B, T->CD4, T->CD8, B->plasma
    expected = np.array(
        [
            [0, 0, 0, 0, 0],  # root
            [1, 0, 0, 0, 0],  # T
            [0, 1, 0, 0, 0],  # B
            [1, 0, 1, 0, 0],  # CD4
            [1, 0, 0, 1, 0],  # CD8
            [0, 1, 0, 0, 1],  # plasma
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(P.toarray(), expected)
    sub = small.path_matrix(["plasma", "CD4", "plasma"], dtype=np.float64)
    assert sub.dtype == np.float64
    assert isinstance(sub, sp.csr_matrix)
    np.testing.assert_array_equal(sub.toarray(), expected[[5, 3, 5]])
    cats = pd.Categorical(["CD8", "root"])
    np.testing.assert_array_equal(small.path_matrix(cats).toarray(), expected[[4, 0]])


def test_path_matrix_times_delta_sums_along_ancestors(small):
    rng = np.random.default_rng(0)
    delta = rng.normal(size=small.n_arcs)
    effect = small.path_matrix(dtype=np.float64) @ delta
    for i, node in enumerate(small.nodes):
        chain = [*small.ancestors(node), node]
        expected = sum(delta[small.arc_index(n)] for n in chain[1:])
        assert effect[i] == pytest.approx(expected)


def test_path_matrix_is_fresh_each_call(small):
    P = small.path_matrix()
    P.data[:] = 7
    assert small.path_matrix().max() == 1


def test_path_matrix_large_random_tree():
    tree = EnvironmentTree(random_parents(10_000, seed=3))
    P = tree.path_matrix()
    assert P.shape == (10_000, 9_999)
    depths = np.array([tree.depth(n) for n in tree.nodes])
    np.testing.assert_array_equal(np.asarray(P.sum(axis=1)).ravel(), depths)
    assert P.nnz == depths.sum()
    rng = np.random.default_rng(4)
    for i in rng.choice(10_000, size=50, replace=False):
        row = P.getrow(i)
        assert sorted(row.indices.tolist()) == tree.path(tree.nodes[i])
    cells = rng.choice(np.array(tree.nodes), size=20_000)
    Q = tree.path_matrix(cells)
    assert Q.shape == (20_000, 9_999)
    for j in (0, 123, 19_999):
        assert sorted(Q.getrow(j).indices.tolist()) == tree.path(cells[j])


# ---------------------------------------------------------------------- distances, indices


def test_distance_and_closest(small):
    assert small.distance("CD4", "CD4") == 0
    assert small.distance("CD4", "CD8") == 2
    assert small.distance("CD4", "plasma") == 4
    assert small.distance("root", "plasma") == small.distance("plasma", "root") == 2
    assert small.closest("CD4", ["plasma", "CD8"]) == "CD8"
    assert small.closest("CD4", ["plasma", "CD4"]) == "CD4"
    assert small.closest("CD4", ["CD8", "root"]) == "root"  # both at distance 2, root first in nodes
    assert small.closest("T", ["plasma", "B"]) == "B"
    assert small.closest("plasma", ["CD8", "CD4"]) == "CD4"  # tie at 4, CD4 first in nodes
    with pytest.raises(ValueError, match="at least one candidate"):
        small.closest("CD4", [])
    with pytest.raises(KeyError, match="unknown node 'NK'"):
        small.closest("CD4", ["NK"])


def test_node_index(small):
    np.testing.assert_array_equal(small.node_index(["plasma", "root", "plasma"]), [5, 0, 5])
    np.testing.assert_array_equal(small.node_index(pd.Series(["B", "T"], dtype="category")), [2, 1])
    np.testing.assert_array_equal(small.node_index("CD8"), [4])
    assert small.node_index([]).shape == (0,)
    unknown = ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]
    with pytest.raises(KeyError, match=r"7 name\(s\).*'u1', 'u2', 'u3', 'u4', 'u5', \.\.\. \(7 in total\)"):
        small.node_index(["T", *unknown])
    with pytest.raises(ValueError, match="'u6'"):  # also a ValueError
        small.node_index(["u6"])
    with pytest.raises(UnknownNodeError, match="astype"):
        small.node_index([1, 2])


def test_query_errors(small):
    with pytest.raises(KeyError, match="unknown node 'NK'"):
        small.parent("NK")
    with pytest.raises(KeyError, match="unknown node 'NK'"):
        small.path("NK")
    with pytest.raises(ValueError, match="root and has no incoming arc"):
        small.arc_index("root")
    with pytest.raises(TypeError, match="must be str"):
        small.depth(1)


# ---------------------------------------------------------------------- validation


def test_validation_errors():
    with pytest.raises(ValueError, match=r"2 roots \('a', 'b'\).*add a common root"):
        EnvironmentTree({"a": None, "b": None, "c": "a"})
    with pytest.raises(ValueError, match=r"2 roots \('r', 's'\)"):
        EnvironmentTree({"a": "r", "b": "s"})
    with pytest.raises(ValueError, match="no root.*cycle through '[abc]'.*map exactly one node"):
        EnvironmentTree({"a": "b", "b": "c", "c": "a"})
    with pytest.raises(ValueError, match="not connected to the root 'r'.*cycle through '[xy]'"):
        EnvironmentTree({"a": "r", "x": "y", "y": "x", "r": None})
    with pytest.raises(ValueError, match="'a' is its own parent"):
        EnvironmentTree({"a": "a", "r": None})
    with pytest.raises(ValueError, match="empty node name"):
        EnvironmentTree({"": None, "a": None})
    with pytest.raises(ValueError, match="empty tree"):
        EnvironmentTree({})
    with pytest.raises(ValueError, match="NUL character"):  # numpy unicode arrays would drop it
        EnvironmentTree({"a\x00": None})
    with pytest.raises(TypeError, match=r"name 3 has type int.*convert the labels"):
        EnvironmentTree({3: None})
    with pytest.raises(TypeError, match=r"parent of 'a'.*name 1\.5 has type float"):
        EnvironmentTree({"a": 1.5})
    with pytest.raises(TypeError, match="coerce"):
        EnvironmentTree("(a,b);")


def test_cycle_hanging_off_a_tail_names_a_node_on_the_cycle():
    # t -> x -> y -> z -> x : t is not on the cycle; the reported node must be
    with pytest.raises(ValueError, match="cycle through '[xyz]'"):
        EnvironmentTree({"t": "x", "x": "y", "y": "z", "z": "x", "r": None})


# ---------------------------------------------------------------------- property-based

NAME_ALPHABET = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


@st.composite
def random_trees(draw, max_nodes: int = 30) -> EnvironmentTree:
    n = draw(st.integers(1, max_nodes))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    if draw(st.booleans()):
        names = draw(st.lists(st.text(NAME_ALPHABET, min_size=1, max_size=6), min_size=n, max_size=n, unique=True))
    else:
        names = [f"v{i}" for i in range(n)]
    mapping = {names[i]: (None if p is None else names[p]) for i, p in enumerate(parents)}
    return EnvironmentTree(mapping)


@settings(max_examples=60, deadline=None)
@given(random_trees())
def test_property_dict_roundtrip(tree):
    back = EnvironmentTree.from_dict(tree.to_dict())
    assert back == tree
    assert back.nodes == tree.nodes


@settings(max_examples=60, deadline=None)
@given(random_trees())
def test_property_newick_roundtrip(tree):
    back = EnvironmentTree.from_newick(tree.to_newick())
    assert back == tree
    assert back.nodes == tree.nodes


@settings(max_examples=60, deadline=None)
@given(random_trees())
def test_property_networkx_roundtrip(tree):
    g = tree.to_networkx()
    assert nx.is_arborescence(g) or tree.n_nodes == 1
    back = EnvironmentTree.from_networkx(g)
    assert back == tree
    assert back.nodes == tree.nodes


@settings(max_examples=60, deadline=None)
@given(random_trees())
def test_property_path_matrix_rows_are_paths(tree):
    P = tree.path_matrix()
    assert P.shape == (tree.n_nodes, tree.n_arcs)
    sums = np.asarray(P.sum(axis=1)).ravel()
    np.testing.assert_array_equal(sums, [tree.depth(n) for n in tree.nodes])
    for i, node in enumerate(tree.nodes):
        assert P.indices[P.indptr[i] : P.indptr[i + 1]].tolist() == tree.path(node)
        assert len(tree.ancestors(node)) == tree.depth(node)


@settings(max_examples=40, deadline=None)
@given(random_trees(), st.data())
def test_property_distance_matches_networkx(tree, data):
    a = data.draw(st.sampled_from(tree.nodes))
    b = data.draw(st.sampled_from(tree.nodes))
    undirected = tree.to_networkx().to_undirected()
    assert tree.distance(a, b) == nx.shortest_path_length(undirected, a, b)
