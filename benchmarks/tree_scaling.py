"""Cost of the tree parameterisation as the tree grows: sctbr's sparse paths vs a DendroNet-style dense path matrix.

All variants are the same :class:`sctbr.model._module.TBRModule` (same encoder ``(256, 64)``, 5 latents, same
loss, Adam, the same proximal soft-threshold step on ``Delta`` after every Adam step, batches of 128 cells) and
differ only in how the heads ``w_e = w_0 + P[e] @ Delta`` are formed:

* ``sctbr``: the package's own module. Up to 256 environments ``env_weights()`` multiplies the *sparse*
  (environments x arcs) path matrix with ``Delta`` (``torch.sparse.mm``) every batch; above, each batch's heads are
  gathered from the arcs on its environments' paths (a padded arc index), O(batch x depth x latents) per step.
* ``sparse-all``: the sparse product over all environments every batch (the package's path for small trees, and
  its only path before the gathering was added); the cost grows with environments x mean depth.
* ``dense-full``: the formulation in the brief: a *dense* (environments x arcs) path matrix multiplied with
  ``Delta`` every batch, i.e. the heads of all environments recomputed densely per batch
  (O(environments x arcs x latents) per step, and a dense matrix of environments x arcs floats held in memory).
* ``dense-batch``: what DendroNet's published code does (``DendroPRS.forward``: ``delta_mat @
  path_mat[:, node_idx]``): the dense path rows of the batch's environments only (O(batch x arcs x latents)),
  still with the dense path matrix held in memory.

Trees: ``sctbr.datasets.random_tree(n)`` (a Yule tree, unbalanced like real lineages) with cells observed at its
``n`` leaves (the environments), ``2n - 2`` arcs; data from ``sctbr.datasets.simulate(tree=..., leaves_only=True)``.
Before timing, the script checks that all variants give the same predictions and the same gradient of
``Delta`` for a random ``Delta`` (so they are the same model).

Protocol: per tree size, each repeat builds every variant fresh (same seed, so the same initial weights) and runs
them one after the other, so the ratios compare variants measured side by side under the same machine load. Per
variant: 5 warm-up steps, then up to ``--steps`` timed steps (stopping after ``--max-seconds``, at least 5 steps).
A step is forward + backward + Adam + proximal step on a batch already cut from the data (batch cutting is
excluded). The median over repeats is reported. Memory: ``tensors`` is the exact size of parameters, buffers and
Adam state of the module (what the parameterisation itself costs); ``peak`` is the rise of the process's peak
resident memory (Linux ``VmHWM``, reset before building the variant) over its resident memory just before, which
also counts autograd temporaries (on a GPU: ``torch.cuda.max_memory_allocated``). Torch threads: ``--threads``
(default 1, so that one core of a shared 2-core machine is used).

    python benchmarks/tree_scaling.py --envs 10 100 1000 10000
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
import warnings

import numpy as np
import torch

import sctbr
from sctbr.model._module import ENV_KEY, X_KEY, Y_KEY, TBRModule

VARIANTS = ("sctbr", "sparse-all", "dense-full", "dense-batch")


# -- the DendroNet-style variants ------------------------------------------------------------------------------
def _all_heads(module: TBRModule) -> None:
    """Switch off sctbr's per-batch gathering of heads (large trees), so ``env_weights`` forms every head."""
    module.gather_heads = False
    for name in ("path_index", "path_value"):
        if name in module._buffers:
            del module._buffers[name]


class SparseAllModule(TBRModule):
    """sctbr's sparse path product over ALL environments every batch (sctbr's path for small trees)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _all_heads(self)


class DenseFullModule(TBRModule):
    """Heads of all environments from a dense path matrix, recomputed every batch (the brief's formulation)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("dense_paths", self.env_paths.to_dense(), persistent=False)
        self.env_paths = torch.empty(0)  # the sparse copy is not needed (and not counted)
        _all_heads(self)

    def env_weights(self) -> torch.Tensor:
        return self.w0.unsqueeze(0) + self.dense_paths @ self.delta


class DenseBatchModule(DenseFullModule):
    """DendroNet's published forward: dense path rows of the batch's environments only."""

    def generative(self, z: torch.Tensor, env: torch.Tensor) -> dict[str, torch.Tensor]:
        paths = self.dense_paths.index_select(0, env.reshape(-1).long())
        weights = self.w0.unsqueeze(0) + paths @ self.delta
        return {"y_std_pred": (z * weights).sum(-1) + self.bias}


MODULES = {
    "sctbr": TBRModule,
    "sparse-all": SparseAllModule,
    "dense-full": DenseFullModule,
    "dense-batch": DenseBatchModule,
}


# -- measurement helpers ---------------------------------------------------------------------------------------
def _status_kib(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def reset_peak(device: torch.device) -> float:
    """Reset the peak-memory counter; return the current memory in MiB (RSS on CPU, allocated on a GPU)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_kib("VmRSS") / 1024


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _status_kib("VmHWM") / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensor_mib(module: torch.nn.Module, opt: torch.optim.Optimizer) -> float:
    """Exact size of parameters, buffers and optimiser state (sparse tensors: indices + values)."""

    def size(t: torch.Tensor) -> int:
        if t.is_sparse:
            return size(t._indices()) + size(t._values())
        return t.numel() * t.element_size()

    total = sum(size(p) for p in module.parameters()) + sum(size(b) for b in module.buffers())
    for state in opt.state.values():
        total += sum(size(v) for v in state.values() if torch.is_tensor(v))
    return total / 2**20


def proximal(module: TBRModule, opt: torch.optim.Adam, lr: float) -> None:
    """The training plan's soft-threshold of ``Delta`` in Adam's diagonal metric."""
    st = opt.state[module.delta]
    denom = (st["exp_avg_sq"] / (1 - 0.999 ** float(st["step"]))).sqrt() + 1e-8
    module.proximal_step(lr / denom)


def step(module: TBRModule, opt: torch.optim.Adam, batch: dict, lr: float) -> None:
    _, _, out = module(batch)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    proximal(module, opt, lr)


# -- one tree size ---------------------------------------------------------------------------------------------
def make_data(n_env: int, cells: int, seed: int):
    tree = sctbr.datasets.random_tree(n_env, random_state=seed)
    adata = sctbr.datasets.simulate(
        tree=tree, leaves_only=True, n_obs_per_env=max(4, cells // n_env), random_state=seed
    )
    envs = list(adata.obs["environment"].cat.categories)
    paths = tree.path_matrix(envs)
    data = {
        X_KEY: torch.from_numpy(np.asarray(adata.X, dtype=np.float32)),
        Y_KEY: torch.from_numpy(adata.obs["y"].to_numpy(np.float32)),
        ENV_KEY: torch.from_numpy(adata.obs["environment"].cat.codes.to_numpy(np.int64)),
    }
    return tree, paths, data


def build(kind: str, paths, n_input: int, lam: float, seed: int, device: torch.device) -> TBRModule:
    torch.manual_seed(seed)
    module = MODULES[kind](n_input, 5, paths, lam=lam).to(device)
    module.train()
    return module


def check_same_model(paths, data: dict, lam: float, device: torch.device) -> float:
    """The variants give the same prediction and gradient for a random Delta; return the largest difference."""
    gen = torch.Generator().manual_seed(1)
    delta = torch.randn(paths.shape[1], 5, generator=gen)
    batch = {k: v[:256].to(device) for k, v in data.items()}
    ref = None
    worst = 0.0
    for kind in VARIANTS:
        module = build(kind, paths, data[X_KEY].shape[1], lam, 0, device)
        with torch.no_grad():
            module.delta.copy_(delta.to(device))
        _, gen_out, out = module(batch)
        out.loss.backward()
        got = (gen_out["y_std_pred"].detach().cpu(), module.delta.grad.detach().cpu())
        if ref is None:
            ref = got
        else:
            worst = max(worst, float((got[0] - ref[0]).abs().max()), float((got[1] - ref[1]).abs().max()))
    return worst


def measure(kind, paths, data, batches, args, seed, device) -> dict:
    mem_before = reset_peak(device)
    module = build(kind, paths, data[X_KEY].shape[1], args.lam, seed, device)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=args.lr, eps=1e-8)
    for i in range(5):
        step(module, opt, batches[i % len(batches)], args.lr)
    sync(device)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while n < args.steps:
        step(module, opt, batches[(5 + n) % len(batches)], args.lr)
        n += 1
        if n >= 5 and n % 5 == 0:
            sync(device)
            if time.perf_counter() - t0 > args.max_seconds:
                break
    sync(device)
    secs, cpu = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
    out = {
        "ms": 1e3 * secs,
        "cpu_ms": 1e3 * cpu,
        "steps": n,
        "tensors": tensor_mib(module, opt),
        "peak": peak_mib(device) - mem_before,
    }
    del module, opt
    gc.collect()
    return out


def run(args, device: torch.device) -> list[dict]:
    """Measure every tree size; print a table and return its rows."""
    rows = []
    print(
        f"device={device} torch_threads={torch.get_num_threads()} batch_size={args.batch_size} "
        f"repeats={args.repeats} (median) steps<= {args.steps} or {args.max_seconds:g} s per variant"
    )
    short = {"sctbr": "sctbr", "sparse-all": "sp-all", "dense-full": "full", "dense-batch": "batch"}
    names = [short[k] for k in VARIANTS]
    print(
        f"{'envs':>6} {'arcs':>6} {'nnz(P)':>7} | ms/step: "
        + " ".join(f"{n:>7}" for n in names)
        + " | wall/sctbr: "
        + " ".join(f"{n:>6}" for n in names[1:])
        + " | cpu/sctbr: "
        + " ".join(f"{n:>6}" for n in names[1:])
        + " | tensors MiB: "
        + " ".join(f"{n:>7}" for n in names)
        + " | peak MiB: "
        + " ".join(f"{n:>6}" for n in names)
    )
    for n_env in args.envs:
        tree, paths, data = make_data(n_env, args.cells, args.seed)
        diff = check_same_model(paths, data, args.lam, device)
        if diff > 1e-4:
            raise AssertionError(f"variants disagree by {diff:.2e} at {n_env} environments")
        gen = torch.Generator().manual_seed(args.seed)
        n = data[ENV_KEY].shape[0]
        batches = []
        for _ in range(64):
            idx = torch.randint(n, (args.batch_size,), generator=gen)
            batches.append({k: v.index_select(0, idx).to(device) for k, v in data.items()})
        res = {k: [] for k in VARIANTS}
        for r in range(args.repeats):
            for kind in (
                VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            ):  # rotate the order between repeats
                res[kind].append(measure(kind, paths, data, batches, args, args.seed + r, device))
        med = {k: {f: float(np.median([m[f] for m in res[k]])) for f in res[k][0]} for k in VARIANTS}
        row = {"envs": n_env, "arcs": tree.n_arcs, "nnz": int(paths.nnz), "max_abs_diff": diff, **med}
        rows.append(row)
        ms = [med[k]["ms"] for k in VARIANTS]
        cpu = [med[k]["cpu_ms"] for k in VARIANTS]
        print(
            f"{n_env:>6} {tree.n_arcs:>6} {paths.nnz:>7} | ms/step: "
            + " ".join(f"{v:>7.3f}" for v in ms)
            + " | wall/sctbr: "
            + " ".join(f"{v / ms[0]:>6.2f}" for v in ms[1:])
            + " | cpu/sctbr: "
            + " ".join(f"{v / cpu[0]:>6.2f}" for v in cpu[1:])
            + " | tensors MiB: "
            + " ".join(f"{med[k]['tensors']:>7.2f}" for k in VARIANTS)
            + " | peak MiB: "
            + " ".join(f"{med[k]['peak']:>6.0f}" for k in VARIANTS),
            flush=True,
        )
    print(
        "sctbr: the package (batch heads gathered from their paths' arcs above 256 environments); sp-all: the\n"
        "sparse path product over all environments every batch; full = dense-full (all heads from a dense path\n"
        "matrix per batch); batch = dense-batch (DendroNet's code);\n"
        "ms/step: wall time, median over repeats; ratios > 1: slower than sctbr (cpu: the same ratios in\n"
        "process CPU time, less sensitive to other jobs on CPU; meaningless on a GPU); tensors: parameters +\n"
        "buffers + Adam state;\n"
        "peak: rise of peak memory while building and stepping the variant (RSS on CPU)."
    )
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, nargs="+", default=[10, 100, 1000, 10000], help="leaves (environments)")
    p.add_argument("--cells", type=int, default=20_000, help="cells in all (at least 4 per environment)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=300, help="most timed steps per variant and repeat")
    p.add_argument("--max-seconds", type=float, default=3.0, help="stop timing a variant after this long")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lam", type=float, default=1e-3)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available; run with --device cpu.")
    return run(args, device)


if __name__ == "__main__":
    main()
