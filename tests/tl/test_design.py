"""``sctbr.tl.identifiability``: which numbers of latents a tree and its observed cell types can identify."""

from __future__ import annotations

import numpy as np
import pytest

import sctbr
from tests.tl.helpers import roundtrip, snapshot, unchanged


def _cells(tree=None, depth=None, leaves_only=False, n_latent=2):
    """A simulation with a few cells per node: only which nodes have cells matters to the check."""
    kwargs = {"tree": tree} if tree is not None else {"depth": depth}
    return sctbr.datasets.simulate(
        **kwargs, leaves_only=leaves_only, n_latent=n_latent, n_obs_per_env=4, random_state=0
    )


@pytest.fixture(scope="module")
def checks(torch_single_thread):
    """The check on a tree with cells at every node, and on an 8-leaf tree with cells at the leaves only."""
    every = _cells(depth=3)
    leaves = _cells(tree=sctbr.datasets.random_tree(8, random_state=0), leaves_only=True)
    return {
        "every": sctbr.tl.identifiability(every, n_latent=3, n_sims=2, inplace=False),
        "leaves": sctbr.tl.identifiability(leaves, n_latent=[2, 5], n_sims=3, inplace=False),
    }


def test_cells_at_every_node_identify_and_few_leaves_do_not(checks):
    every = checks["every"]["table"].set_index("n_latent")
    # depth 3, all 14 non-root nodes observed: exact recovery up to the refinement's tolerance
    assert (every["mean_mcc"] > 0.99).all(), every
    assert checks["every"]["summary"]["max_identifiable"] == 3
    leaves = checks["leaves"]["table"].set_index("n_latent")
    # 8 leaves and 5 latents: a mixture has sparser changes than the truth (measured 0.74-0.82 on 5 such trees)
    assert leaves.loc[5, "mean_mcc"] < 0.88, leaves
    assert not leaves.loc[5, "identifiable"]
    assert leaves.loc[2, "mean_mcc"] > leaves.loc[5, "mean_mcc"] + 0.05
    summary = checks["leaves"]["summary"]
    assert summary["n_observed"] == 8
    assert summary["max_identifiable"] in (0, 2)
    runs = checks["leaves"]["runs"]
    assert list(runs.columns) == ["n_latent", "sim", "mcc"]
    assert len(runs) == 6
    assert runs["mcc"].between(0, 1 + 1e-9).all()


def test_same_seed_same_numbers_and_h5ad_writable(tmp_path, torch_single_thread):
    adata = _cells(depth=2)
    snap = snapshot(adata)
    first = sctbr.tl.identifiability(adata, n_latent=2, n_sims=2, random_state=3, inplace=False)
    assert unchanged(adata, snap)
    sctbr.tl.identifiability(adata, n_latent=2, n_sims=2, random_state=3, key_added="design")
    assert "tbr_identifiability" not in adata.uns
    back = roundtrip(adata, tmp_path).uns["design"]
    np.testing.assert_array_equal(np.asarray(back["runs"]["mcc"]), first["runs"]["mcc"].to_numpy())
    assert int(back["summary"]["n_sims"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_latent": 0}, "n_latent"),
        ({"n_latent": "3"}, "n_latent"),
        ({"n_sims": 0}, "n_sims"),
        ({"threshold": 1.5}, "threshold"),
        ({"k": 0}, "k=0"),
        ({"k": 2, "n_latent": 1}, "k"),
        ({"n_latent": 20}, "arcs cannot move"),
        ({"groupby": "nope"}, "nope"),
        ({"enable_progress_bar": "yes"}, "enable_progress_bar"),
    ],
)
def test_bad_arguments_fail_before_any_work(kwargs, match):
    adata = _cells(depth=2)
    snap = snapshot(adata)
    with pytest.raises((ValueError, TypeError, KeyError), match=match):
        sctbr.tl.identifiability(adata, **kwargs)
    assert unchanged(adata, snap)


def test_environments_outside_the_tree_are_refused():
    adata = _cells(depth=2)
    adata.obs["environment"] = adata.obs["environment"].astype(str)
    adata.obs.iloc[0, adata.obs.columns.get_loc("environment")] = "elsewhere"
    with pytest.raises(ValueError, match="not nodes of the tree"):
        sctbr.tl.identifiability(adata)
