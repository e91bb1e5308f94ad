"""Torch threads of a fit on a shared machine: 1, 2 and torch's default, with and without a competing process.

Times the training step of the default model (``TBRModule``, encoder 15 → 256 → 64 → 4, Adam as the fit builds it,
proximal step, batches of 128 drawn by index from in-memory tensors) on issue 17's simulation, in one process, for
each thread count in turn (rotated between repeats), first on the machine as it is, then with ``--competitors``
extra CPU-bound processes (``python -c "while True: pass"``) started by this script. Each measurement runs
``--steps`` steps or ``--max-seconds``, whichever comes first, and reports steps/s. Also prints the count
``sctbr.model._threads.fit_threads()`` picks in each situation, and the 1-minute load average.

    python benchmarks/threads.py --steps 400 --repeats 3
    python benchmarks/threads.py --batch-sizes 128,512,1024 --competitors 0   # a quiet machine, larger batches
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from profile_fit import simulate

from sctbr._constants import ENV_KEY, X_KEY, Y_KEY
from sctbr.model import TBR
from sctbr.model._threads import fit_threads
from sctbr.model._trainingplan import adam


def steps_per_second(
    module, data, threads: int, steps: int, max_seconds: float, seed: int = 0, batch_size: int = 128
) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, y, env = data[X_KEY], data[Y_KEY], data[ENV_KEY]
        opt = adam([{"params": [p for p in module.parameters() if p.requires_grad]}], lr=1e-4, eps=1e-8)
        g = torch.Generator().manual_seed(seed)
        t = time.perf_counter()
        done = 0
        while done < steps and time.perf_counter() - t < max_seconds:
            idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
            batch = {X_KEY: x.index_select(0, idx), Y_KEY: y.index_select(0, idx), ENV_KEY: env.index_select(0, idx)}
            _, _, out = module(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            st = opt.state[module.delta]
            module.proximal_step(1e-4 / ((st["exp_avg_sq"] / (1 - 0.999 ** float(st["step"]))).sqrt() + 1e-8))
            done += 1
        return done / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--max-seconds", type=float, default=20.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--competitors", type=int, default=1)
    p.add_argument("--batch-sizes", default="128", help="comma-separated; 128 is the default below 8 192 cells")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    default = torch.get_num_threads()
    adata = simulate()
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=adata.uns["environment_tree"], n_latent=4)
    module = model.module
    module.lam = 1e-3
    data = model._arrays(adata)
    module.set_target_scale(float(data[Y_KEY].mean()), float(data[Y_KEY].std()))
    module.train()
    counts = sorted({1, 2, default})
    print(f"torch default threads {default}; cores {len(os.sched_getaffinity(0))}; counts {counts}", flush=True)
    steps_per_second(module, data, 1, 50, 5)  # warm-up
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    for n_comp, batch_size in [(c, b) for c in sorted({0, args.competitors}) for b in batch_sizes]:
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_comp)]
        try:
            if n_comp:
                time.sleep(5)
            rates: dict[int, list[float]] = {n: [] for n in counts}
            loads = []
            for r in range(args.repeats):
                order = counts[r % len(counts) :] + counts[: r % len(counts)]
                for n in order:
                    rates[n].append(
                        steps_per_second(module, data, n, args.steps, args.max_seconds, batch_size=batch_size)
                    )
                    loads.append(os.getloadavg()[0])
            picked = fit_threads()
            summary = ", ".join(f"{n} thread(s) {np.median(v):.0f} steps/s" for n, v in rates.items())
            print(
                f"batch {batch_size}, competitors {n_comp}: {summary}; ratio to 1 thread: "
                + ", ".join(f"{n}: {np.median(v) / np.median(rates[1]):.2f}" for n, v in rates.items())
                + f"; load average {min(loads):.2f}–{max(loads):.2f}; the rule picks {picked}",
                flush=True,
            )
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
