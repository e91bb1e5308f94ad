"""Training throughput of ``sctbr`` (Lightning / scvi-tools path) next to a bare PyTorch loop.

Both train the same ``TBRModule`` (same encoder, heads, loss, proximal step) on the same simulated data, in
the same process, alternately, so the ratio is robust to a noisy shared machine. Prints cells/s of each,
their ratio, and the peak resident memory of each phase (Linux ``VmHWM``, reset between phases).

    python benchmarks/throughput.py --cells 10000 --epochs 5 --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import torch

import sctbr
from sctbr.model import TBR
from sctbr.model._data import TBRDataModule


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bare_loop(model: TBR, epochs: int, batch_size: int, lr: float) -> float:
    """Same module, same data, same proximal step, plain PyTorch: returns seconds."""
    module = model.module
    data = model._arrays(model.adata)
    dm = TBRDataModule(data, train_size=1.0, validation_size=0.0, batch_size=batch_size, random_state=0)
    train = dm.train_dataloader()
    train.steps_per_call = 1  # plain mini-batches
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr, eps=1e-8)
    module.train()
    t = time.perf_counter()
    for _ in range(epochs):
        for batch in train:
            _, _, out = module(batch)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            st = opt.state[module.delta]
            denom = (st["exp_avg_sq"] / (1 - 0.999 ** float(st["step"]))).sqrt() + 1e-8
            module.proximal_step(lr / denom)
    return time.perf_counter() - t


def lightning_fit(model: TBR, epochs: int, batch_size: int, lr: float) -> float:
    t = time.perf_counter()
    model.train(
        max_epochs=epochs,
        fit_fraction=0.0,
        refine=False,
        lr=lr,
        batch_size=batch_size,
        validation_size=0.0,
        train_size=1.0,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=10_000)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)

    n_env = 2 ** (args.depth + 1) - 2
    adata = sctbr.datasets.simulate(depth=args.depth, n_obs_per_env=max(1, args.cells // n_env), random_state=0)
    TBR.setup_anndata(adata, target="y", groupby="environment")
    n_cells = adata.n_obs
    print(
        f"cells={n_cells} environments={n_env} inputs={adata.n_vars} epochs={args.epochs} "
        f"batch_size={args.batch_size} torch_threads={torch.get_num_threads()}"
    )
    rows = []
    for r in range(args.repeats):
        for kind in ("bare", "sctbr"):
            model = TBR(adata, tree=adata.uns["environment_tree"], n_latent=5, random_state=r)
            model.module.set_target_scale(float(adata.obs["y"].mean()), float(adata.obs["y"].std()))
            reset_peak()
            if kind == "bare":
                secs = bare_loop(model, args.epochs, args.batch_size, 3e-3)
            else:
                secs = lightning_fit(model, args.epochs, args.batch_size, 3e-3)
            rows.append((kind, r, n_cells * args.epochs / secs, peak_mib()))
            print(f"  repeat {r} {kind:>6}: {rows[-1][2]:>10.0f} cells/s   peak RSS {rows[-1][3]:.0f} MiB")
    bare = np.median([c for k, _, c, _ in rows if k == "bare"])
    ours = np.median([c for k, _, c, _ in rows if k == "sctbr"])
    print(f"median cells/s: bare {bare:.0f}, sctbr {ours:.0f}; ratio sctbr/bare = {ours / bare:.2f}")
    print(f"input matrix: {adata.X.nbytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
