"""Time to quality: wall time, throughput and peak memory of the default fit until held-out MCC >= 0.95 (k = 1).

What is measured
----------------
For each simulation size, ``sctbr.datasets.simulate`` (k = 1 change per arc, 5 latents, 10 inputs, MLP Psi, cells
observed at every non-root node of a balanced binary tree) is fitted with the default recipe, ``TBR.train`` as
``sctbr.tl.tbr`` calls it (three stages: 70% of the epochs unpenalised, basis refinement, 30% proximal at 0.3 x lr;
lambda 1e-3, default 80/20 train/validation split, seed 0), with the speed policy of ``sctbr/model/_policy.py``:
below 8 192 training cells lr 3e-3, batches of 128 and no stopping rule; from 8 192 on batches of 512-1 024 at a
square-root-scaled lr and a plateau rule per phase (so a budget is an upper bound there). ``--before`` fits as
before the policy (batches of 128, lr 3e-3, no stopping rule at every size), for side-by-side factors.

"Time until MCC >= 0.95": the stages, the cosine learning-rate schedule and the stage split all depend on
``max_epochs``, so stopping a fit part-way is not what a user gets from a shorter fit, and MCC before the refinement
and the penalised stage says little about the final fit. The script therefore runs *complete* default fits with a
geometric ladder of budgets, each from scratch: 1 250, 2 500, 5 000, ... optimiser steps (converted to epochs, at
least 2 so that every stage runs), and reports the smallest budget whose fit reaches MCC >= ``--target``, with that
fit's wall time (the time a user who knew the budget would wait), and the ladder's cumulative time (the cost of
finding it). If no budget up to ``--max-steps`` reaches the target, the best MCC and its time are reported.
Budgets are whole epochs, so on large data the smallest budget (2 epochs) can already be far above what is needed.

MCC is :func:`sctbr.metrics.mcc` between the simulation's true latents and ``model.get_latent_representation()`` on
the held-out validation cells (20%): they take no gradient step and, with early stopping off, influence nothing in
the fit (their loss is only logged).

Wall time is that of ``model.train(...)`` alone (all three stages, per-epoch validation, Lightning set-up; not the
simulation or the MCC). Process CPU time is reported next to it: on a loaded machine it varies less than wall time.
Throughput is training cells x epochs / wall time (and / process CPU time). Memory: peak resident set size of
the process (Linux ``VmHWM``)
during ``model.train``, reset just before it, next to the resident size just before (which holds the Python
runtime, torch, the AnnData and the simulation's truth); on a GPU, ``torch.cuda.max_memory_allocated`` instead.
The simulation's own peak RSS is reported separately.

Sizes (``--sizes``; balanced trees, cells at every non-root node):

* ``1e4``: depth 4 (30 environments) x 334 cells = 10 020 cells
* ``1e5``: depth 6 (126 environments) x 794 cells = 100 044 cells
* ``7.6e5``: depth 7 (254 environments, 128 leaves) x 3 000 cells = 762 000 cells, the paper's simulation scale

Torch threads: ``--threads`` (default 1: one core of a shared 2-core machine).

    python benchmarks/time_to_quality.py --sizes 1e4 1e5 7.6e5
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import time
import warnings

import numpy as np
import torch

import sctbr
from sctbr.model import TBR

#: name -> (depth of the balanced tree, cells per environment)
SIZES = {"1e4": (4, 334), "1e5": (6, 794), "7.6e5": (7, 3000)}
BATCH_SIZE = 128


def _status_mib(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak(accelerator: str) -> float:
    """Reset the peak-memory counter; return the current memory in MiB."""
    gc.collect()
    if accelerator == "gpu":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_mib("VmRSS")


def peak_mib(accelerator: str) -> float:
    if accelerator == "gpu":
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_mib("VmHWM")


def budgets(n_train: int, first: int, max_steps: int) -> list[int]:
    """Epoch budgets: steps first, 2 x first, ... <= max_steps, as whole epochs (>= 2), without repeats."""
    per_epoch = math.ceil(n_train / BATCH_SIZE)
    out, steps = [], first
    while steps <= max_steps:
        epochs = max(2, math.ceil(steps / per_epoch))
        if not out or epochs > out[-1]:
            out.append(epochs)
        steps *= 2
    return out


#: The fit before the speed policy (``--before``).
BEFORE = {"batch_size": BATCH_SIZE, "lr": 3e-3, "early_stopping": False}


def fit_once(adata, epochs: int, accelerator: str, seed: int, before: bool = False) -> dict:
    model = TBR(adata, tree=adata.uns["environment_tree"], n_latent=5, random_state=seed)
    mem_before = reset_peak(accelerator)
    cpu0, t0 = time.process_time(), time.perf_counter()
    model.train(
        max_epochs=epochs,
        accelerator=accelerator,
        random_state=seed,
        enable_progress_bar=False,
        enable_model_summary=False,
        **(BEFORE if before else {}),
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak = peak_mib(accelerator)
    val = np.asarray(model.validation_indices, dtype=int)
    z = model.get_latent_representation()
    score = sctbr.metrics.mcc(adata.obsm["Z_true"][val], z[val])
    n_train = len(model.train_indices)
    run_epochs = len(model.history["train_loss"])  # fewer than the budget when the plateau rule ended phases
    steps = run_epochs * math.ceil(n_train / model.batch_size_)
    del model
    gc.collect()
    return {
        "epochs": epochs,
        "epochs_run": run_epochs,
        "steps": steps,
        "mcc": score,
        "wall": wall,
        "cpu": cpu,
        "cells_per_s": n_train * epochs / wall,
        "cells_per_cpu_s": n_train * epochs / cpu,
        "mem_before": mem_before,
        "peak": peak,
    }


def run_size(name: str, depth: int, per_env: int, args) -> dict:
    mem0 = reset_peak("cpu")
    t0 = time.perf_counter()
    adata = sctbr.datasets.simulate(depth=depth, n_obs_per_env=per_env, k=1, random_state=args.seed)
    sim_secs, sim_peak = time.perf_counter() - t0, _status_mib("VmHWM") - mem0
    TBR.setup_anndata(adata, target="y", groupby="environment")
    n_train = int(round(0.8 * per_env)) * (2 ** (depth + 1) - 2)
    ladder = budgets(n_train, args.first_steps, args.max_steps)
    print(
        f"\n[{name}] depth {depth}, {2 ** (depth + 1) - 2} environments x {per_env} = {adata.n_obs} cells "
        f"({n_train} training); simulate: {sim_secs:.1f} s, peak RSS +{sim_peak:.0f} MiB; epoch ladder {ladder}",
        flush=True,
    )
    fits, cumulative = [], 0.0
    for epochs in ladder:
        res = fit_once(adata, epochs, args.accelerator, args.seed, before=args.before)
        cumulative += res["wall"]
        res["cumulative"] = cumulative
        fits.append(res)
        print(
            f"  {epochs:>4} epochs ({res['epochs_run']} run, {res['steps']:>6} steps): MCC {res['mcc']:.3f}  wall {res['wall']:7.1f} s  "
            f"cpu {res['cpu']:7.1f} s  {res['cells_per_s']:>8.0f} cells/s  "
            f"mem {res['mem_before']:.0f} -> peak {res['peak']:.0f} MiB",
            flush=True,
        )
        if res["mcc"] >= args.target:
            break
    hit = next((f for f in fits if f["mcc"] >= args.target), None)
    best = hit or max(fits, key=lambda f: f["mcc"])
    return {
        "size": name,
        "cells": adata.n_obs,
        "environments": 2 ** (depth + 1) - 2,
        "reached": hit is not None,
        "sim_secs": sim_secs,
        "sim_peak": sim_peak,
        **best,
        "fits": fits,
    }


def run(args) -> list[dict]:
    print(
        f"accelerator={args.accelerator} torch_threads={torch.get_num_threads()} target MCC {args.target} "
        f"(held-out validation cells), k=1, default TBR.train; ladder from {args.first_steps} steps, doubling, "
        f"up to {args.max_steps}"
    )
    rows = []
    for name in args.sizes:
        depth, per_env = SIZES[name]
        rows.append(run_size(name, depth, per_env, args))
    print(f"\nsummary (smallest budget reaching MCC >= {args.target}; otherwise the best fit, marked 'not reached'):")
    print(
        f"{'size':>6} {'cells':>8} {'envs':>5} {'epochs':>6} {'steps':>6} {'MCC':>6} {'wall s':>7} {'cpu s':>7} "
        f"{'ladder s':>8} {'cells/s':>8} {'cells/cpu-s':>11} {'RSS before':>10} {'peak RSS':>8} {'sim s':>6} "
        f"{'sim +MiB':>8}"
    )
    for r in rows:
        note = "" if r["reached"] else "  not reached"
        print(
            f"{r['size']:>6} {r['cells']:>8} {r['environments']:>5} {r['epochs']:>6} {r['steps']:>6} {r['mcc']:>6.3f} "
            f"{r['wall']:>7.1f} {r['cpu']:>7.1f} {r['cumulative']:>8.1f} {r['cells_per_s']:>8.0f} "
            f"{r['cells_per_cpu_s']:>11.0f} "
            f"{r['mem_before']:>10.0f} {r['peak']:>8.0f} {r['sim_secs']:>6.1f} {r['sim_peak']:>8.0f}{note}"
        )
    print("memory in MiB (process RSS on CPU; GPU allocated memory with accelerator=gpu); wall/cpu s: that fit only;")
    print("ladder s: wall time of all fits of the ladder up to it.")
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["1e4", "1e5"], choices=list(SIZES))
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--first-steps", type=int, default=1250, help="first budget, in optimiser steps")
    p.add_argument("--max-steps", type=int, default=40_000, help="largest budget, in optimiser steps")
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--before", action="store_true", help="fit as before the speed policy (128, lr 3e-3, no stopping)")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available; run with --accelerator cpu.")
    return run(args)


if __name__ == "__main__":
    main()
