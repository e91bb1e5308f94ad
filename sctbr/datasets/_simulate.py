"""Simulated tree-structured datasets following the TBR data-generating process."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd

from sctbr._constants import SIMULATION_KEY, TREE_KEY, TRUE_LATENTS_KEY
from sctbr._tree import EnvironmentTree
from sctbr._utils import record_defaults
from sctbr._validation import ArgumentTypeError, check_bool, check_int, check_real


def random_tree(n_leaves: int, *, random_state: int = 0, prefix: str = "n") -> EnvironmentTree:
    """Draw a random, generally unbalanced, binary tree.

    Starting from a single root, a uniformly chosen leaf is split into two children until there are
    ``n_leaves`` leaves (a Yule process). Such trees have leaves at many depths, which is the harder,
    more realistic case for TBR than a balanced tree.

    Parameters
    ----------
    n_leaves
        Number of leaves, at least 1.
    random_state
        Seed of the random generator.
    prefix
        Prefix of the node names (``"n0"``, ``"n1"``, ...); the root is ``"root"``.

    Returns
    -------
    The tree, with ``2 * n_leaves - 1`` nodes.

    Examples
    --------
    >>> import sctbr
    >>> tree = sctbr.datasets.random_tree(8, random_state=1)
    >>> len(tree.leaves)
    8
    """
    check_int("n_leaves", n_leaves, fix="The number of leaves of the tree, e.g. 8.")
    check_int("random_state", random_state, low=0)
    if not isinstance(prefix, str):
        raise ArgumentTypeError(f'`prefix` must be a str (the prefix of the node names, e.g. "n"), got {prefix!r}.')
    rng = np.random.default_rng(random_state)
    parents: dict[str, str | None] = {"root": None}
    leaves = ["root"]
    counter = 0
    while len(leaves) < n_leaves:
        split = leaves.pop(int(rng.integers(len(leaves))))
        for _ in range(2):
            name = f"{prefix}{counter}"
            counter += 1
            parents[name] = split
            leaves.append(name)
    return EnvironmentTree(parents)


def _draw_supports(n_arcs: int, n_latent: int, k: float, rng: np.random.Generator, cover_all: bool) -> np.ndarray:
    """Boolean (arcs x latents) mask of the nonzero changes."""
    is_rate = isinstance(k, Real) and not isinstance(k, Integral) and 0.0 < float(k) < 1.0
    for _ in range(1000):
        if is_rate:
            mask = rng.random((n_arcs, n_latent)) < float(k)
        else:
            mask = np.zeros((n_arcs, n_latent), dtype=bool)
            for a in range(n_arcs):
                mask[a, rng.choice(n_latent, size=int(k), replace=False)] = True
        if not cover_all or mask.any(axis=0).all() or not mask.any():
            return mask
    raise ValueError(
        f"Could not draw changes that touch every latent with k={k} on {n_arcs} arcs; "
        "increase k or the tree, or pass `all_latents_change=False`."
    )


def _random_mlp(x: np.ndarray, n_out: int, rng: np.random.Generator, n_hidden: int = 64) -> np.ndarray:
    """A random two-layer MLP with leaky-ReLU and tanh units: a fixed nonlinear map Psi."""
    d = x.shape[1]
    w1 = rng.normal(size=(d, n_hidden)) / np.sqrt(d)
    b1 = rng.normal(scale=0.5, size=n_hidden)
    h = x @ w1 + b1
    h = np.where(h > 0, h, 0.2 * h) + np.tanh(h)
    w2 = rng.normal(size=(n_hidden, n_out)) / np.sqrt(n_hidden)
    return h @ w2


def _regulatory_map(x: np.ndarray, n_out: int, rng: np.random.Generator, n_regulators: int = 3) -> np.ndarray:
    """Saturating gene-regulation-like map: each latent sums Hill-type (sigmoid) responses to a few inputs.

    Every latent has ``n_regulators`` regulators (activators or repressors, each with its own threshold and
    steepness) and one AND gate (the product of two activations), so the map is sparse in the inputs, bounded and
    not additive. It shares no unit with :func:`_random_mlp`.
    """
    d = x.shape[1]
    out = np.zeros((x.shape[0], n_out))
    for j in range(n_out):
        regs = rng.choice(d, size=min(n_regulators, d), replace=False)
        for i in regs:
            sign = rng.choice([-1.0, 1.0])
            gain = rng.uniform(1.5, 4.0)
            out[:, j] += sign / (1.0 + np.exp(-gain * (x[:, i] - rng.normal(scale=0.5))))
        a, b = rng.choice(d, size=2, replace=False)
        act = 1.0 / (1.0 + np.exp(-3.0 * (x[:, [a, b]] - rng.normal(scale=0.5, size=2))))
        out[:, j] += 2.0 * act[:, 0] * act[:, 1]
    return out


def tree_weights(
    tree: EnvironmentTree,
    n_latent: int,
    k: float,
    *,
    rng: np.random.Generator,
    all_latents_change: bool = True,
    delta_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw root weights, sparse arc changes and the resulting weights (heads) of every node of a tree.

    The heads :func:`simulate` and :func:`semisynthetic` use, and :func:`sctbr.tl.identifiability` draws on the
    user's tree: standard normal root weights ``w0``, then on every arc ``k`` latents (or each latent with
    probability ``k``) change by a Gaussian amount; a node's head is ``w0`` plus the changes on its root path.

    Parameters
    ----------
    tree
        The tree (:class:`~sctbr.EnvironmentTree`).
    n_latent
        Number of latents.
    k
        Changes per arc: a count between 0 and ``n_latent``, or a Bernoulli rate in ``(0, 1)``.
    rng
        The random generator (``numpy.random.default_rng(seed)``); draws are taken from it in place.
    all_latents_change
        Redraw the changes until every latent changes on some arc (only with ``k > 0``).
    delta_scale
        Standard deviation of the non-zero changes (1, as in the paper).

    Returns
    -------
    ``(w0, deltas, weights)`` with shapes ``(n_latent,)``, ``(n_arcs, n_latent)`` (rows in ``tree.arcs`` order) and
    ``(n_nodes, n_latent)`` (rows in ``tree.nodes`` order).

    Examples
    --------
    >>> import numpy as np
    >>> import sctbr
    >>> tree = sctbr.datasets.random_tree(4, random_state=0)
    >>> w0, deltas, weights = sctbr.datasets.tree_weights(tree, 3, 1, rng=np.random.default_rng(0))
    >>> deltas.shape, weights.shape, int((deltas != 0).sum())  # one change per arc
    ((6, 3), (7, 3), 6)
    """
    check_k(k, n_latent)
    w0 = rng.normal(size=n_latent)
    mask = _draw_supports(tree.n_arcs, n_latent, k, rng, cover_all=all_latents_change and k > 0)
    deltas = np.where(mask, rng.normal(scale=delta_scale, size=mask.shape), 0.0)
    weights = w0[None, :] + np.asarray(tree.path_matrix() @ deltas)
    return w0, deltas, weights


def store_truth(
    adata: ad.AnnData,
    tree: EnvironmentTree,
    *,
    groupby: str,
    truth: tuple[np.ndarray, np.ndarray, np.ndarray],
    params: dict,
    **extra,
) -> None:
    """Store the tree (with its groupby), the true heads and the sctbr defaults of a simulated phenotype ``y``."""
    w0, deltas, weights = truth
    tree_dict = tree.to_dict()
    tree_dict["groupby"] = groupby
    adata.uns[TREE_KEY] = tree_dict
    adata.uns[SIMULATION_KEY] = {
        "root_weights": w0,
        "deltas": deltas,
        "arc_labels": np.array(tree.arc_labels, dtype=str),
        "weights": weights,
        "nodes": np.array(tree.nodes, dtype=str),
        **extra,
        "params": params,
    }
    record_defaults(adata, target="y", groupby=groupby, tree_key=TREE_KEY)


def check_k(k, n_latent: int) -> None:
    """Validate a sparsity level: a count ``0 <= k <= n_latent`` or a rate in ``(0, 1)``."""
    if isinstance(k, bool) or not isinstance(k, Real):
        raise TypeError(f"`k` must be a count (int) or a rate (float in (0, 1)), got {k!r}.")
    if isinstance(k, Integral):
        if not 0 <= k <= n_latent:
            raise ValueError(f"`k` (changes per arc) must be between 0 and n_latent={n_latent}, got {k}.")
    elif not 0.0 < k < 1.0:
        raise ValueError(f"A float `k` is a Bernoulli rate and must lie in (0, 1), got {k}.")


def simulate(
    *,
    depth: int = 4,
    tree: EnvironmentTree | None = None,
    leaves_only: bool = False,
    n_inputs: int = 10,
    n_latent: int = 5,
    k: float = 1,
    psi: Literal["mlp", "regulatory", "linear"] = "mlp",
    n_obs_per_env: int = 300,
    noise_z: float = 0.1,
    noise_y: float = 0.1,
    delta_scale: float = 1.0,
    all_latents_change: bool = True,
    random_state: int = 0,
) -> ad.AnnData:
    """Simulate cells in tree-structured environments with a sparse-change phenotype.

    The data-generating process of the TBR paper: inputs :math:`X \\sim N(0, I)`, latents
    :math:`Z = \\Psi(X) + \\eta` with :math:`\\Psi` shared by all environments, and a phenotype
    :math:`Y = w_e^\\top Z + \\varepsilon` whose head :math:`w_e = w_0 + \\sum_{a \\in path(e)} \\delta_a`
    changes by ``k`` nonzero Gaussian entries on every arc of the tree.

    Parameters
    ----------
    depth
        Depth of the balanced binary tree, used when ``tree`` is None (depth 4: 31 nodes, 16 leaves).
    tree
        Any tree :meth:`sctbr.EnvironmentTree.coerce` accepts, instead of a balanced one.
    leaves_only
        Observe cells at the leaves only (the biological case) instead of at every non-root node.
    n_inputs
        Number of inputs (columns of ``X``).
    n_latent
        Number of true latents.
    k
        Sparsity of the changes: an int is the number of nonzero entries per arc (0 to ``n_latent``);
        a float in (0, 1) makes each entry change independently with that probability (Bernoulli).
    psi
        ``"mlp"``: a fixed random two-layer network (leaky-ReLU and tanh units); ``"regulatory"``: a saturating,
        gene-regulation-like map (each latent sums sigmoid responses to three random inputs, activating or
        repressing, plus one AND gate of two inputs), a second non-linearity that shares nothing with the MLP;
        ``"linear"``: a random linear map.
    n_obs_per_env
        Cells per observed environment.
    noise_z, noise_y
        Standard deviations of the latent noise :math:`\\eta` (relative to unit-variance latents) and of
        the phenotype noise :math:`\\varepsilon`.
    delta_scale
        Standard deviation of the nonzero changes.
    all_latents_change
        Ensure that every latent changes on at least one arc when ``k > 0`` (the theory's assumption).
    random_state
        Seed; the same seed gives the same data.

    Returns
    -------
    AnnData with ``X`` (float32 inputs), ``obs["environment"]`` (categorical, tree order), ``obs["y"]``,
    ``obsm["Z_true"]``, the tree in ``uns["environment_tree"]`` (with its ``groupby``) and the truth in
    ``uns["simulation"]``: ``root_weights``, ``deltas`` (arcs x latents), ``arc_labels``, ``weights``
    (nodes x latents), ``nodes`` and the parameters. ``uns["sctbr"]`` records the target and groupby
    so that ``sctbr.tl.tbr(adata)`` needs no arguments.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.simulate(depth=3, n_obs_per_env=50, random_state=0)
    >>> adata.obs["environment"].nunique(), adata.obsm["Z_true"].shape[1]
    (14, 5)
    """
    if tree is None:
        if not isinstance(depth, Integral) or depth < 1:
            raise ValueError(f"`depth` must be a positive integer, got {depth!r}.")
        tree = EnvironmentTree.balanced(int(depth))
    else:
        tree = EnvironmentTree.coerce(tree)
    if tree.n_arcs == 0:
        raise ValueError("The tree has a single node; TBR needs at least one arc.")
    for name, value in {"n_inputs": n_inputs, "n_latent": n_latent, "n_obs_per_env": n_obs_per_env}.items():
        if not isinstance(value, Integral) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    check_k(k, n_latent)
    if psi not in ("mlp", "regulatory", "linear"):
        raise ValueError(f"`psi` must be 'mlp', 'regulatory' or 'linear', got {psi!r}.")
    for name, value in {"noise_z": noise_z, "noise_y": noise_y, "delta_scale": delta_scale}.items():
        check_real(name, value, low=0.0, fix="A standard deviation, e.g. 0.1.")
    check_bool("leaves_only", leaves_only)
    check_bool("all_latents_change", all_latents_change)
    check_int("random_state", random_state, low=0)

    rng = np.random.default_rng(random_state)
    observed = list(tree.leaves) if leaves_only else [n for n in tree.nodes if n != tree.root]
    w0, deltas, weights = tree_weights(
        tree, n_latent, k, rng=rng, all_latents_change=all_latents_change, delta_scale=delta_scale
    )

    n = n_obs_per_env * len(observed)
    x = rng.normal(size=(n, n_inputs))
    if psi == "mlp":
        z = _random_mlp(x, n_latent, rng)
    elif psi == "regulatory":
        z = _regulatory_map(x, n_latent, rng)
    else:
        z = x @ rng.normal(size=(n_inputs, n_latent))
    z = (z - z.mean(0)) / z.std(0)
    z = z + noise_z * rng.normal(size=z.shape)

    env = np.repeat(np.arange(len(observed)), n_obs_per_env)
    node_rows = tree.node_index(observed)
    y = np.einsum("ij,ij->i", z, weights[node_rows][env]) + noise_y * rng.normal(size=n)

    adata = ad.AnnData(
        X=x.astype(np.float32),
        obs=pd.DataFrame(
            {
                "environment": pd.Categorical.from_codes(env, categories=observed),
                "y": y.astype(np.float64),
            },
            index=[f"cell{i}" for i in range(n)],
        ),
        var=pd.DataFrame(index=[f"x{j}" for j in range(n_inputs)]),
    )
    adata.obsm[TRUE_LATENTS_KEY] = z.astype(np.float32)
    store_truth(
        adata,
        tree,
        groupby="environment",
        truth=(w0, deltas, weights),
        params={
            "leaves_only": bool(leaves_only),
            "n_inputs": int(n_inputs),
            "n_latent": int(n_latent),
            "k": float(k),
            "psi": psi,
            "n_obs_per_env": int(n_obs_per_env),
            "noise_z": float(noise_z),
            "noise_y": float(noise_y),
            "delta_scale": float(delta_scale),
            "random_state": int(random_state),
        },
    )
    return adata
