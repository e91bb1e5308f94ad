"""Where a default fit spends its time, and its cost in units of a bare PyTorch loop.

Simulates issue 17's data (a 20-leaf Yule tree, cells at the leaves, 600 per leaf = 12 000 cells, k = 1, 4 latents,
15 inputs), then in one process, on one torch thread unless ``--threads`` says otherwise:

1. **unit**: a bare PyTorch loop of 2 000 optimiser steps at batch 128 on the same ``TBRModule`` (encoder 15 → 256 →
   64 → 4, heads, Adam, proximal step), batches drawn by index from tensors in memory;
2. **default call**: ``sctbr.tl.tbr(adata, n_latent=4)`` (all defaults otherwise), instrumented with timers on:
   the data path (cutting batches), the training steps (forward, backward, optimiser step, proximal step, loss sums),
   the validation loop, per-epoch hooks of the plan, the basis refinement, Trainer set-up, and the work after the fit
   (latents, predictions, writing into the AnnData). "Lightning overhead" is what remains of the fit's wall time;
3. again the unit, so the ratio is bracketed by two measurements on a shared machine.

The **units** figure = default-call wall time / mean unit time (and the same with CPU time of the process, steadier
on a shared machine: with one thread it counts the work done, not the waiting). The fit's MCC against the true
latents (all cells) is printed.

    OMP_NUM_THREADS=1 python benchmarks/profile_fit.py            # profiled default call (timers cost ~1%)
    OMP_NUM_THREADS=1 python benchmarks/profile_fit.py --plain    # no timers: the units figure alone
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import time
import warnings
from collections import defaultdict

import numpy as np
import torch

import sctbr
from sctbr._constants import ENV_KEY, X_KEY, Y_KEY

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def simulate(n_obs_per_env: int = 600, random_state: int = 0):
    tree = sctbr.datasets.random_tree(20, random_state=0)
    return sctbr.datasets.simulate(
        tree=tree,
        leaves_only=True,
        n_obs_per_env=n_obs_per_env,
        k=1,
        n_latent=4,
        n_inputs=15,
        random_state=random_state,
    )


def bare_unit(adata, steps: int = 2000, batch_size: int = 128, lr: float = 3e-3, seed: int = 0) -> tuple[float, float]:
    """Wall and CPU seconds for ``steps`` steps of a bare loop on the module sctbr would build for ``adata``."""
    from sctbr.model import TBR

    work = adata.copy()
    TBR.setup_anndata(work, target="y", groupby="environment")
    model = TBR(work, tree=work.uns["environment_tree"], n_latent=4, random_state=seed)
    data = model._arrays(work)
    x, y, env = data[X_KEY], data[Y_KEY], data[ENV_KEY]
    module = model.module
    module.set_target_scale(float(y.mean()), float(y.std()))
    module.train()
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr, eps=1e-8)
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    t, c = time.perf_counter(), time.process_time()
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            batch = {X_KEY: x.index_select(0, idx), Y_KEY: y.index_select(0, idx), ENV_KEY: env.index_select(0, idx)}
            _, _, out = module(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            st = opt.state[module.delta]
            denom = (st["exp_avg_sq"] / (1 - 0.999 ** float(st["step"]))).sqrt() + 1e-8
            module.proximal_step(lr / denom)
            done += 1
            if done == steps:
                break
    return time.perf_counter() - t, time.process_time() - c


# ------------------------------------------------------------------------------------------------- instrumentation
def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - t
            CALLS[name] += 1

    return wrapper


def _timed_iter(name: str, fn):
    """Time every ``next`` of the generator ``fn`` returns (the data path of a batch or super-batch)."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        name_ = name.replace("(train + validation)", "(train)" if self.shuffle else "(validation)")
        it = fn(self, *args, **kwargs)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                TIMES[name_] += time.perf_counter() - t
                return
            TIMES[name_] += time.perf_counter() - t
            CALLS[name_] += 1
            yield item

    return wrapper


@contextlib.contextmanager
def instrumented():
    """Wrap the functions of a fit with timers (restored afterwards)."""
    import lightning.pytorch as pl

    from sctbr.model import _data, _model, _phases, _trainingplan
    from sctbr.tl import _core, _write

    plan = _trainingplan.TBRTrainingPlan
    patches = [
        (_data._Batches, "__iter__", _timed_iter, "data: batches (train + validation)"),
        (plan, "training_step", _timed, "train: training_step (all of it)"),
        (plan, "forward", _timed, "train/val: forward + loss"),
        (pl.LightningModule, "manual_backward", _timed, "train: backward (manual_backward)"),
        (plan, "_proximal", _timed, "train: proximal step"),
        (plan, "_accumulate", _timed, "train/val: loss sums"),
        (plan, "validation_step", _timed, "val: validation_step"),
        (plan, "on_train_epoch_start", _timed, "epoch: plan.on_train_epoch_start"),
        (plan, "on_train_epoch_end", _timed, "epoch: plan.on_train_epoch_end (log)"),
        (plan, "on_validation_epoch_end", _timed, "epoch: plan.on_validation_epoch_end (log)"),
        (_phases.PhaseProgressBar, "on_train_epoch_end", _timed, "epoch: progress bar"),
        (_model.TBR, "_refine", _timed, "refinement (basis)"),
        (_model.TBR, "_run_fit", _timed, "fit: _run_fit (Lightning fit, all phases)"),
        (_model.TBR, "train", _timed, "TBR.train"),
        (_model.TBR, "get_latent_representation", _timed, "after: latents"),
        (_model.TBR, "predict", _timed, "after: predictions"),
        (_write, "write_result", _timed, "after: write into AnnData"),
        (_core, "working_anndata", _timed, "before: working AnnData"),
    ]
    saved = []
    for owner, attr, wrap, name in patches:
        original = owner.__dict__.get(attr, getattr(owner, attr))
        saved.append((owner, attr, owner.__dict__.get(attr)))
        setattr(owner, attr, wrap(name, original))
    # the optimiser step as Lightning runs it (LightningOptimizer.step -> strategy -> Adam) and Adam alone
    from lightning.pytorch.core.optimizer import LightningOptimizer

    saved.append((LightningOptimizer, "step", LightningOptimizer.__dict__["step"]))
    LightningOptimizer.step = _timed("train: optimizer step via Lightning", LightningOptimizer.step)
    saved.append((torch.optim.Adam, "step", torch.optim.Adam.__dict__["step"]))
    torch.optim.Adam.step = _timed("train: Adam.step itself", torch.optim.Adam.step)
    # validation loop as a whole (Lightning's loop included)
    from lightning.pytorch.loops import _EvaluationLoop

    saved.append((_EvaluationLoop, "run", _EvaluationLoop.__dict__["run"]))
    _EvaluationLoop.run = _timed("val: validation loop (all of it)", _EvaluationLoop.run)
    try:
        yield
    finally:
        for owner, attr, original in reversed(saved):
            if original is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)


def default_call(adata, **kwargs) -> tuple[float, float, float]:
    """Wall and CPU seconds of the default ``tl.tbr`` call on a copy of ``adata``, and its MCC (all cells)."""
    work = adata.copy()
    t, c = time.perf_counter(), time.process_time()
    sctbr.tl.tbr(work, n_latent=4, **kwargs)
    secs, cpu = time.perf_counter() - t, time.process_time() - c
    mcc = sctbr.metrics.mcc(work.obsm["Z_true"], work.obsm["X_tbr"])
    return secs, cpu, float(mcc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    p.add_argument("--cells-per-env", type=int, default=600)
    p.add_argument("--plain", action="store_true", help="no timers: the units figure only")
    p.add_argument("--repeats", type=int, default=1, help="default calls (each bracketed by bare units)")
    p.add_argument(
        "--compare-unfused",
        action="store_true",
        help="also time the call with torch's default (unfused) Adam, plan_kwargs={'fused': False}, alternately",
    )
    p.add_argument(
        "--compare-before",
        action="store_true",
        help="also time the call as it was before the speed policy (batch 128, lr 3e-3, no stopping rule), alternately",
    )
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    adata = simulate(args.cells_per_env)
    print(
        f"cells={adata.n_obs} inputs={adata.n_vars} environments={adata.obs['environment'].nunique()} "
        f"torch_threads={torch.get_num_threads()} load average={os.getloadavg()[0]:.2f}",
        flush=True,
    )
    bare_unit(adata, steps=200)  # warm-up
    variants = {"default": {}}
    if args.compare_unfused:
        variants = {"unfused Adam": {"plan_kwargs": {"fused": False}}, "default": {}}
    if args.compare_before:
        variants = {"before (128, fixed steps)": {"batch_size": 128, "lr": 3e-3, "early_stopping": False}, **variants}
    units: dict[str, list[float]] = {name: [] for name in variants}
    cpu_units: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, kwargs in variants.items():
            u0, c0 = bare_unit(adata)
            ctx = contextlib.nullcontext() if args.plain else instrumented()
            TIMES.clear()
            CALLS.clear()
            with ctx:
                secs, cpu, mcc = default_call(adata, **kwargs)
            u1, c1 = bare_unit(adata)
            unit, cpu_unit = (u0 + u1) / 2, (c0 + c1) / 2
            units[name].append(secs / unit)
            cpu_units[name].append(cpu / cpu_unit)
            print(
                f"repeat {r} {name}: unit (2000 bare steps) wall {u0:.2f} / {u1:.2f} s, CPU {c0:.2f} / {c1:.2f} s; "
                f"call wall {secs:.1f} s, CPU {cpu:.1f} s; MCC {mcc:.3f}; units wall {secs / unit:.2f}, "
                f"CPU {cpu / cpu_unit:.2f}; load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            if not args.plain:
                report(secs)
    for name in variants:
        print(
            f"units, {name}: wall median {np.median(units[name]):.2f} ({', '.join(f'{u:.2f}' for u in units[name])}); "
            f"CPU median {np.median(cpu_units[name]):.2f} ({', '.join(f'{u:.2f}' for u in cpu_units[name])})"
        )


def report(total: float) -> None:
    fit = TIMES.get("fit: _run_fit (Lightning fit, all phases)", 0.0)
    step = TIMES.get("train: training_step (all of it)", 0.0)
    val = TIMES.get("val: validation loop (all of it)", 0.0)
    data = TIMES.get("data: batches (train)", 0.0)
    refine = TIMES.get("refinement (basis)", 0.0)
    epoch = sum(v for k, v in TIMES.items() if k.startswith("epoch:"))
    # the data path of validation runs inside the validation loop; of training, outside the steps
    print(f"{'part':<50} {'seconds':>9} {'% call':>7} {'calls':>8}")
    for name in sorted(TIMES):
        print(f"{name:<50} {TIMES[name]:>9.2f} {100 * TIMES[name] / total:>6.1f}% {CALLS[name]:>8}")
    lightning = fit - step - val - data - refine - epoch
    print(
        f"{'= Lightning per-step/per-epoch overhead (rest of fit)':<50} {lightning:>9.2f} {100 * lightning / total:>6.1f}%"
    )
    print(f"{'= default call total':<50} {total:>9.2f}")


if __name__ == "__main__":
    main()
