"""The benchmark figures on a GPU: throughput, time to quality and tree scaling with ``accelerator="gpu"``.

Runs, on one CUDA device:

1. Throughput: the same ``TBRModule`` trained through sctbr (Lightning / scvi-tools, ``accelerator="gpu"``) and
   through a bare PyTorch loop on the same device, alternately, as ``benchmarks/throughput.py`` does on the CPU
   (cells/s, their ratio, peak GPU memory allocated by torch).
2. Time to quality: ``benchmarks/time_to_quality.py`` with ``--accelerator gpu`` (held-out MCC >= 0.95 at k = 1).
3. Tree scaling: ``benchmarks/tree_scaling.py`` with ``--device cuda`` (sparse paths vs a dense path matrix).

Exits with a clear message when CUDA is not available. ``--device cpu`` runs the same code on the CPU (to check
the code path on a machine without a GPU); ``--quick`` shrinks every part to a smoke test.

    python benchmarks/gpu.py                        # on a GPU machine
    python benchmarks/gpu.py --device cpu --quick   # code-path check without a GPU
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import sctbr
from sctbr.model import TBR
from sctbr.model._data import TBRDataModule


def _peak_reset(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bare_loop(model: TBR, epochs: int, batch_size: int, lr: float, device: torch.device) -> float:
    """Same module, data, Adam and proximal step as sctbr, in plain PyTorch on ``device``; returns seconds."""
    module = model.module.to(device)
    dm = TBRDataModule(model._arrays(model.adata), batch_size=batch_size, train_size=1.0, validation_size=0.0)
    train = dm.train_dataloader()
    train.steps_per_call = 1
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr, eps=1e-8)
    module.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(epochs):
        for batch in train:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            _, _, out = module(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            st = opt.state[module.delta]
            denom = (st["exp_avg_sq"] / (1 - 0.999 ** float(st["step"]))).sqrt() + 1e-8
            module.proximal_step(lr / denom)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def lightning_fit(model: TBR, epochs: int, batch_size: int, lr: float, device: torch.device) -> float:
    t = time.perf_counter()
    model.train(
        max_epochs=epochs,
        fit_fraction=0.0,
        refine=False,
        lr=lr,
        batch_size=batch_size,
        validation_size=0.0,
        train_size=1.0,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def throughput(cells: int, depth: int, epochs: int, repeats: int, device: torch.device) -> None:
    n_env = 2 ** (depth + 1) - 2
    adata = sctbr.datasets.simulate(depth=depth, n_obs_per_env=max(1, cells // n_env), random_state=0)
    TBR.setup_anndata(adata, target="y", groupby="environment")
    print(f"cells={adata.n_obs} environments={n_env} epochs={epochs} batch_size=128 device={device}")
    rows = []
    for r in range(repeats):
        for kind in ("bare", "sctbr"):
            model = TBR(adata, tree=adata.uns["environment_tree"], n_latent=5, random_state=r)
            model.module.set_target_scale(float(adata.obs["y"].mean()), float(adata.obs["y"].std()))
            _peak_reset(device)
            fit = bare_loop if kind == "bare" else lightning_fit
            secs = fit(model, epochs, 128, 3e-3, device)
            rows.append((kind, adata.n_obs * epochs / secs, _peak_mib(device)))
            print(f"  repeat {r} {kind:>6}: {rows[-1][1]:>10.0f} cells/s   peak memory {rows[-1][2]:.0f} MiB")
    bare = np.median([c for k, c, _ in rows if k == "bare"])
    ours = np.median([c for k, c, _ in rows if k == "sctbr"])
    print(f"median cells/s: bare {bare:.0f}, sctbr {ours:.0f}; ratio sctbr/bare = {ours / bare:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: check the code path only")
    p.add_argument("--parts", nargs="+", default=["throughput", "quality", "tree"])
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "benchmarks/gpu.py: CUDA is not available on this machine (torch "
            f"{torch.__version__}, cuda build: {torch.version.cuda}). Run it on a GPU machine, or pass --device cpu "
            "to exercise the same code on the CPU."
        )
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
    else:
        torch.set_num_threads(1)
        print("device=cpu (code-path check; these are not GPU figures)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    time_to_quality = importlib.import_module("time_to_quality")
    tree_scaling = importlib.import_module("tree_scaling")
    threads = ["--threads", "0" if device.type == "cuda" else "1"]

    if "throughput" in args.parts:
        print("\n== throughput ==")
        if args.quick:
            throughput(cells=2_000, depth=3, epochs=1, repeats=1, device=device)
        else:
            throughput(cells=100_000, depth=4, epochs=5, repeats=3, device=device)
    if "quality" in args.parts:
        print("\n== time to quality ==")
        accel = ["--accelerator", "gpu" if device.type == "cuda" else "cpu"]
        if args.quick:
            time_to_quality.main(["--sizes", "1e4", "--max-steps", "1250", *accel, *threads])
        else:
            time_to_quality.main(["--sizes", "1e4", "1e5", "7.6e5", *accel, *threads])
    if "tree" in args.parts:
        print("\n== tree scaling ==")
        dev = ["--device", args.device]
        if args.quick:
            tree_scaling.main(["--envs", "10", "100", "--repeats", "1", "--max-seconds", "0.5", *dev, *threads])
        else:
            tree_scaling.main(["--envs", "10", "100", "1000", "10000", *dev, *threads])


if __name__ == "__main__":
    main()
