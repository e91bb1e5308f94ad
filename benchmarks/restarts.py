"""Do restarts of the default fit help where the data are small? Issue 14's "restarts or a consensus of restarts".

For each setting of ``small_data.py`` (300 cells per environment, 5 latents, k = 1, MLP by default) it runs
``sctbr.tl.tbr(adata, n_restarts=R)`` once and records every restart (restart 0 is the default call, the others
use the seeds ``random_state + 1000 r`` on the same training / validation split): its MCC and minimum span R² on
the validation cells and its penalised validation objective (what ``n_restarts`` selects on). From these it
scores four rules side by side:

- ``default``: restart 0 (the default call);
- ``best_of_R`` / ``best_of_2``: the restart with the lowest validation objective among all / the first two
  (what ``n_restarts=R`` / ``n_restarts=2`` return);
- ``medoid``: the restart that agrees most (mean MCC) with the others;
- ``average``: the mean of the restarts' latents after matching each to the medoid's (permutation and sign);
- ``average_refined_R``: the mean of the first R restarts' latents (matched to restart 0's), then the fit's final
  refinement run on it (least-squares heads of the cells the final refinement uses, basis search
  ``refine_basis``): a consensus of restarts that chooses its basis again.

One JSON line per setting, then a table (mean / worst MCC per shape and rule).

    OMP_NUM_THREADS=1 python benchmarks/restarts.py --shapes balanced3,yule12 --out a.jsonl &
    OMP_NUM_THREADS=1 python benchmarks/restarts.py --shapes yule16,pbmc --out b.jsonl
    python benchmarks/restarts.py --table a.jsonl b.jsonl
    # the consensus of two restarts (results/small_data/consensus.jsonl): --restarts 2
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np


def _align(ref: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``z``'s columns matched to ``ref``'s (Hungarian on |correlation|), sign-flipped and standardised."""
    from scipy.optimize import linear_sum_assignment

    c = np.corrcoef(ref.T, z.T)[: ref.shape[1], ref.shape[1] :]
    rows, cols = linear_sum_assignment(-np.abs(c))
    out = z[:, cols] * np.sign(c[rows, cols])
    return (out - out.mean(0)) / out.std(0)


def run(shape: str, seed: int, cells: int, latents: int, n_restarts: int) -> dict:
    import torch
    from small_data import _held_out, _span_r2, simulate

    import sctbr
    import sctbr.tl._core as core
    from sctbr.metrics import mcc

    torch.set_num_threads(1)
    adata = simulate(shape, cells, latents, "k1", "mlp", seed)
    restarts = []
    score = core._restart_score

    def record(model):  # every restart's score and latents, as the core scores them
        value = score(model)
        restarts.append((value, model.get_latent_representation()))
        return value

    import sctbr.model._model as model_mod

    final = model_mod.refine_final
    context: dict = {}

    def recording(module, tree, environments, data, idx, train_idx, random_state, **kwargs):
        if not context:  # restart 0: what the final refinement works on (its cells, tree and target scale)
            context.update(module=module, tree=tree, environments=environments, data=data, idx=np.asarray(idx))
            context.update(random_state=random_state)
        return final(module, tree, environments, data, idx, train_idx, random_state, **kwargs)

    core._restart_score = record
    model_mod.refine_final = recording
    try:
        cpu = time.process_time()
        sctbr.tl.tbr(adata, n_restarts=n_restarts, random_state=seed, accelerator="cpu", enable_progress_bar=False)
        cpu = time.process_time() - cpu
    finally:
        core._restart_score = score
        model_mod.refine_final = final
    held_out = _held_out(adata, "tbr")
    z_true = adata.obsm["Z_true"][held_out]
    scores = np.array([s for s, _ in restarts])
    zs = [z[held_out] for _, z in restarts]
    mccs = np.array([mcc(z_true, z) for z in zs])
    pair = np.array([[mcc(a, b) for b in zs] for a in zs])
    medoid = int(np.argmax(pair.sum(1)))
    average = np.mean([_align(zs[medoid], z) for z in zs], axis=0)
    refined = {r: _refined_average([z for _, z in restarts[:r]], context) for r in sorted({2, n_restarts})}
    return {
        "shape": shape,
        "seed": seed,
        "cells": cells,
        "latents": latents,
        "mcc": mccs.round(4).tolist(),
        "score": scores.round(5).tolist(),
        "span": [round(_span_r2(z_true, z), 4) for z in zs],
        "default": round(float(mccs[0]), 4),
        f"best_of_{n_restarts}": round(float(mccs[np.argmin(scores)]), 4),
        "best_of_2": round(float(mccs[np.argmin(scores[:2])]), 4),
        "medoid": round(float(mccs[medoid]), 4),
        "average": round(float(mcc(z_true, average)), 4),
        **{f"average_refined_{r}": round(float(mcc(z_true, z[held_out])), 4) for r, z in refined.items()},
        "agreement": round(float((pair.sum() - len(zs)) / (len(zs) ** 2 - len(zs))), 4),
        "cpu_seconds": round(cpu, 1),
    }


def _refined_average(zs: list, context: dict) -> np.ndarray:
    """Mean of the latents ``zs`` (all cells) matched to the first, then the final refinement's basis search on it
    (on the fit's own least-squares heads of those latents, ``sctbr.model._heads.least_squares_heads``)."""
    from sctbr.model._basis import refine_basis
    from sctbr.model._heads import least_squares_heads

    z = np.mean([_align(zs[0], z) for z in zs], axis=0)
    idx, tree = context["idx"], context["tree"]
    heads, observed = least_squares_heads(
        context["module"], tree, context["environments"], context["data"], idx, z=z[idx]
    )
    corr = np.corrcoef(z[idx].T)
    m = refine_basis(heads[0], np.asarray(tree.parent_index), observed, corr, random_state=context["random_state"])[0]
    return z @ m


def table(rows: list[dict]) -> str:
    rules = [
        k for k in rows[0] if k in ("default", "medoid", "average") or k.startswith(("best_of_", "average_refined"))
    ]
    by_shape = defaultdict(list)
    for r in rows:
        by_shape[r["shape"]].append(r)
    lines = [f"{'shape':>10} {'fits':>4} " + " ".join(f"{rule:>14}" for rule in rules)]
    for shape, rs in by_shape.items():
        cells = [np.array([r[rule] for r in rs]) for rule in rules]
        lines.append(
            f"{shape:>10} {len(rs):>4} " + " ".join(f"{c.mean():.3f} / {c.min():.3f}".rjust(14) for c in cells)
        )
    return "mean / worst MCC on the validation cells\n" + "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="balanced3,yule12,yule16,pbmc")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--cells", type=int, default=300)
    p.add_argument("--latents", type=int, default=5)
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--out", type=Path, default=None, help="JSON-lines file the rows are appended to")
    p.add_argument("--table", nargs="*", type=Path, default=None, help="only print the table of these files")
    args = p.parse_args(argv)
    if args.table:
        print(table([json.loads(line) for path in args.table for line in path.read_text().splitlines() if line]))
        return
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    rows = []
    for shape in args.shapes.split(","):
        for seed in range(args.seeds):
            row = run(shape, seed, args.cells, args.latents, args.restarts)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
