"""How far can the l1 penalty identify the latents at all? Basis refinement with a perfect encoder and exact heads.

The fit's identification rests on one claim: among all invertible maps of the latents, the true basis gives the
sparsest changes of the heads along the tree. This benchmark tests that claim with no data noise and no encoder
error. For each simulated setting it takes the **true** heads of every node (``uns["simulation"]["weights"]``, i.e.
infinitely many cells) and the true latents, mixes the latents with a random invertible matrix, and runs
``sctbr.model.refine_basis`` (the fit's stage 2) on the mixed heads. It reports

- ``mcc``: MCC of the refined latents against the true ones (1 = the refinement recovers the truth);
- ``truth_penalty``: the l1 penalty of the true basis, with the heads of unobserved nodes at their own optimum
  (one small linear program per latent, scipy HiGHS);
- ``found_penalty``: the penalty the refinement reached from the mixed start;
- ``optimum_off_truth``: the refinement found a basis with a *smaller* penalty than the truth (by more than
  1e-6 relative). Then no optimiser of the l1 objective can return the truth: the exact l1 optimum sits elsewhere,
  and more cells will not fix that tree.

With ``--compare-lp`` it also runs the refinement without the linear-program starts (``lp_start=False``).

With ``--l0`` it also asks whether an l0 criterion would do better: it counts the non-zero arc changes (relative
tolerance 1e-6, unobserved heads at their l1 optimum) of the true basis, of the l1 solution, and of a greedy
l0 choice among the linear programs' candidate directions (``sparse_directions``: the ``d`` directions with the
fewest non-zero changes that stay well conditioned), and reports the latter's MCC and how many true directions are
among the candidates.

    OMP_NUM_THREADS=1 python benchmarks/l1_oracle.py                       # 4 shapes x d = 3, 5 x 5 seeds, minutes
    OMP_NUM_THREADS=1 python benchmarks/l1_oracle.py --compare-lp --seeds 3
    OMP_NUM_THREADS=1 python benchmarks/l1_oracle.py --shapes yule8,yule12 --latents 5 --l0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

import sctbr
from sctbr.metrics import mcc
from sctbr.model import refine_basis
from sctbr.model._basis_lp import _DirectionProgram, _free_heads, _greedy_sets, sparse_directions


def _tree_arrays(adata):
    tree = sctbr.EnvironmentTree.coerce(adata.uns["environment_tree"])
    parent = np.array([-1] + [tree.node_index([p])[0] for p, _ in tree.arcs], dtype=int)
    observed = np.isin(np.asarray(tree.nodes), adata.obs["environment"].astype(str).unique())
    sim_nodes = np.asarray(adata.uns["simulation"]["nodes"]).astype(str)
    if not np.array_equal(sim_nodes, np.asarray(tree.nodes).astype(str)):
        raise RuntimeError("the simulation's node order differs from the tree's")
    return parent, observed


def l1_with_free_nodes(weights: np.ndarray, parent: np.ndarray, observed: np.ndarray) -> float:
    """Smallest sum of |w_child - w_parent| over the heads of unobserved nodes (observed heads fixed), by LP."""
    program = _DirectionProgram(weights, parent, observed)
    return _free_heads(program, np.eye(weights.shape[1]))[0]


def _l0(program: _DirectionProgram, n: np.ndarray, tol: float = 1e-6) -> int:
    """Non-zero arc changes of head direction ``n`` (unobserved heads at their l1 optimum)."""
    _, free = _free_heads(program, n[:, None])
    c = program.a_dir @ n + (program.a_free @ free[:, 0] if program.n_free else 0.0)
    return int((np.abs(c) > tol * np.abs(c).max()).sum())


def l0_search(heads, parent, observed, corr, m_l1, true_dirs, seed: int) -> dict:
    """l0 counts of the truth and the l1 solution, and a greedy l0 basis from the LP candidate directions."""
    d = heads.shape[1]
    program = _DirectionProgram(heads, parent, observed)
    raw, rounded = sparse_directions(heads, parent, observed, corr, max_programs=300, random_state=seed)
    cinv = np.linalg.inv(corr)
    unique: list[np.ndarray] = []
    for n, _ in [*rounded, *raw]:
        if all(abs(n @ cinv @ m) < 0.999 for m in unique):
            unique.append(n)
    counts = np.array([_l0(program, n) for n in unique], dtype=float)
    sets = _greedy_sets(unique, counts, cinv, 1, np.random.default_rng(seed))
    n_l1 = np.linalg.inv(m_l1).T
    unit = [t / np.sqrt(t @ cinv @ t) for t in true_dirs.T]
    row = {
        "l0_truth": sum(_l0(program, t) for t in true_dirs.T),
        "l0_l1_solution": sum(_l0(program, n_l1[:, j]) for j in range(d)),
        "candidates": len(unique),
        "true_among_candidates": sum(any(abs(t @ cinv @ n) > 0.999 for n in unique) for t in unit),
    }
    if sets:
        row["l0_greedy"] = sum(_l0(program, sets[0][:, j]) for j in range(d))
        row["m_l0_greedy"] = np.linalg.inv(sets[0]).T
    return row


def simulate(shape: str, d: int, seed: int, k):
    common = {"n_latent": d, "k": k, "n_obs_per_env": 60, "random_state": seed}
    if shape.startswith("balanced"):
        return sctbr.datasets.simulate(depth=int(shape.removeprefix("balanced")), **common)
    tree = sctbr.datasets.random_tree(int(shape.removeprefix("yule")), random_state=seed)
    return sctbr.datasets.simulate(tree=tree, leaves_only=True, **common)


def mixed_truth(z_true, weights, seed: int) -> dict:
    """The true latents and heads seen through a random invertible mix (seed ``1000 + seed``), all unit variance.

    Returns ``zs`` (true latents, unit variance), ``w_true`` (their heads), ``zm`` (the mixed latents, unit
    variance), ``heads`` (the heads in the mixed basis: ``zm @ heads.T == zs @ w_true.T``), ``corr`` (of ``zm``) and
    ``true_dirs`` (``heads @ true_dirs == w_true``).
    """
    z = np.asarray(z_true, dtype=np.float64)
    sd = z.std(axis=0)
    d = z.shape[1]
    w_true = np.asarray(weights, dtype=np.float64) * sd  # heads of unit-variance latents
    zs = z / sd
    mix = np.random.default_rng(1000 + seed).normal(size=(d, d)) + np.eye(d)
    zm = zs @ mix
    scale = zm.std(axis=0)
    zm /= scale
    to_mixed = np.linalg.inv(mix).T * scale  # W M^-T, then unit-variance mixed latents
    return {
        "zs": zs,
        "w_true": w_true,
        "zm": zm,
        "heads": w_true @ to_mixed,
        "corr": np.atleast_2d(np.corrcoef(zm.T)),
        "true_dirs": np.linalg.inv(to_mixed),
    }


def run_one(shape: str, d: int, seed: int, k, lp_start: bool, l0: bool = False) -> dict:
    adata = simulate(shape, d, seed, k)
    parent, observed = _tree_arrays(adata)
    mixed = mixed_truth(adata.obsm["Z_true"], adata.uns["simulation"]["weights"], seed)
    zs, w_true, zm, heads, corr = (mixed[key] for key in ("zs", "w_true", "zm", "heads", "corr"))
    t = time.perf_counter()
    m, _, found, _ = refine_basis(heads, parent, observed, corr, random_state=seed, lp_start=lp_start)
    seconds = time.perf_counter() - t
    truth = l1_with_free_nodes(w_true, parent, observed)
    extra = {}
    if l0:
        extra = l0_search(heads, parent, observed, corr, m, mixed["true_dirs"], seed)
        m_l0 = extra.pop("m_l0_greedy", None)
        extra["mcc_l0_greedy"] = mcc(zs, zm @ m_l0) if m_l0 is not None else np.nan
    return extra | {
        "shape": shape,
        "latents": d,
        "k": k,
        "seed": seed,
        "lp_start": lp_start,
        "mcc": mcc(zs, zm @ m),
        "truth_penalty": truth,
        "found_penalty": found,
        "optimum_off_truth": bool(found < truth * (1 - 1e-6)),
        "seconds": seconds,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="balanced3,yule8,yule12,yule16")
    p.add_argument("--latents", default="3,5")
    p.add_argument("--k", default="1")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--compare-lp", action="store_true")
    p.add_argument("--l0", action="store_true", help="also count non-zero changes and try a greedy l0 basis")
    p.add_argument("--out", default=None, help="CSV file for the rows")
    args = p.parse_args(argv)
    rows = []
    for shape in args.shapes.split(","):
        for d in (int(x) for x in args.latents.split(",")):
            for k in (float(x) if "." in x else int(x) for x in args.k.split(",")):
                for seed in range(args.seeds):
                    for lp in (True, False) if args.compare_lp else (True,):
                        row = run_one(shape, d, seed, k, lp, args.l0)
                        rows.append(row)
                        print(
                            f"{shape:>9} d={d} k={k} seed={seed} lp={lp!s:<5} MCC {row['mcc']:.3f}  penalty found "
                            f"{row['found_penalty']:.3f} truth {row['truth_penalty']:.3f}"
                            f"{'  (l1 optimum off the truth)' if row['optimum_off_truth'] else ''}"
                            + (
                                f"; l0: truth {row['l0_truth']}, l1 solution {row['l0_l1_solution']}, greedy "
                                f"{row.get('l0_greedy', '-')} (MCC {row['mcc_l0_greedy']:.3f}), true directions among "
                                f"{row['candidates']} candidates {row['true_among_candidates']}/{d}"
                                if args.l0
                                else ""
                            ),
                            flush=True,
                        )
    df = pd.DataFrame(rows)
    table = df.groupby(["shape", "latents", "k", "lp_start"]).agg(
        mcc_mean=("mcc", "mean"),
        mcc_worst=("mcc", "min"),
        off_truth=("optimum_off_truth", "sum"),
        fits=("mcc", "size"),
        seconds=("seconds", "mean"),
    )
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    if args.out:
        df.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
