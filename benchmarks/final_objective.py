"""Other objectives for the final refinement's basis, on the very heads the default uses (issue 14).

The final refinement (``TBR.train(final_refine=True)``) picks the latent basis that minimises the l1 penalty of the
arc changes of unpenalised (least-squares) heads. With the true heads of leaves-only trees that l1 optimum sits off
the truth (``l1_oracle.py``), and an l0 count identifies there (``l0_search.py``). This benchmark asks whether a
step towards l0 *inside* the final refinement helps the fitted heads: it runs the default ``sctbr.tl.tbr`` on the
300-cell grid of ``small_data.py`` (5 latents, k = 1, MLP) and, at the final refinement, on the same heads and
latent correlations, also computes

- ``l1+logE``: the l1 basis, then a log penalty (``refine_basis(penalty="log", log_eps=E)``, E relative to the mean
  absolute head weight) started from it: an l0-like objective started from the l1 solution, as the issue proposes;
- ``l1x128``: the l1 refinement with 128 starts instead of 32 (is the default's answer limited by its search?).

Each variant's latents are the pre-refinement latents times its map; MCC on the validation cells, paired with the
default fit (whose MCC the ``l1`` column reproduces). ``penalty_l1`` / ``penalty_l1x128``: the l1 penalty each
search reached.

    OMP_NUM_THREADS=1 python benchmarks/final_objective.py               # 4 trees x 5 seeds, 2 jobs, ~5 min
    OMP_NUM_THREADS=1 python benchmarks/final_objective.py --shapes yule12 --seeds 2 --jobs 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from small_data import map_jobs

LOG_EPS = (0.3, 0.1, 0.03)


def run(job: tuple[str, int]) -> dict:
    """One default fit; the MCC of every variant of the final refinement's basis on the same heads."""
    import small_data

    from sctbr.metrics import mcc
    from sctbr.model._basis import refine_basis

    shape, seed = job
    store: dict = {}

    def record(z_all, idx, heads, observed, corr, parents, random_state):
        m1, v1, penalty1, _ = refine_basis(heads, parents, observed, corr, random_state=random_state)
        maps = {"l1": m1}
        for eps in LOG_EPS:  # Z M1 has correlations M1' C M1 (unit variances: M1 is normalised)
            m2 = refine_basis(
                v1, parents, observed, m1.T @ corr @ m1, penalty="log", log_eps=eps, random_state=random_state
            )[0]
            maps[f"l1+log{eps}"] = m1 @ m2
        more = refine_basis(heads, parents, observed, corr, random_state=random_state, n_starts=128)
        maps["l1x128"] = more[0]
        store.update(z=z_all, maps=maps, penalties={"penalty_l1": penalty1, "penalty_l1x128": more[2]})

    adata, held = small_data.fit_recording_final(shape, seed, record)
    z_true = adata.obsm["Z_true"][held]
    out = {"shape": shape, "seed": seed, "default": mcc(z_true, adata.obsm["X_tbr"][held])}
    out.update({name: mcc(z_true, store["z"][held] @ m) for name, m in store["maps"].items()})
    out.update({k: float(v) for k, v in store["penalties"].items()})
    print(json.dumps(out), flush=True)
    return out


def main(argv=None) -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="balanced3,yule12,yule16,pbmc")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/small_data/final_objective.csv")
    args = p.parse_args(argv)
    jobs = [(s, k) for s in args.shapes.split(",") for k in range(args.seeds)]
    rows = map_jobs(run, jobs, args.jobs)
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    variants = [c for c in df.columns if c not in ("shape", "seed") and not c.startswith("penalty")]
    pd.set_option("display.width", 200)
    print(df.groupby("shape")[variants].agg(["mean", "min"]).round(3).to_string())
    for c in variants:
        diff = df[c] - df["l1"]
        print(
            f"{c:>12}: paired {diff.mean():+.4f} ± {diff.std():.4f}, better {(diff > 1e-3).sum()}, worse {(diff < -1e-3).sum()}"
        )
    ratio = df["penalty_l1x128"] / df["penalty_l1"]
    print(
        f"l1 penalty with 128 starts / with 32: min {ratio.min():.3f}, mean {ratio.mean():.3f}, max {ratio.max():.3f}"
    )


if __name__ == "__main__":
    main()
