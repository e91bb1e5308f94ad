"""Memory and time of a TBR fit on 10^6 simulated cells x 200 inputs in 1,000 environments (CPU).

The data are generated directly with numpy, in float32 and in chunks (``sctbr.datasets.simulate`` builds the
data-generating process in float64 with per-environment bookkeeping meant for small benchmarks): inputs
``X ~ N(0, I)``, latents ``Z = tanh(X A) + noise`` (5 latents), a balanced tree with branching 10 and depth 3 whose
1,000 leaves are the environments, one nonzero change per arc, ``y = w_env . Z + noise``.

What is measured (Linux ``/proc/self/status``):

- ``baseline``: resident memory (RSS) after importing the libraries, before any data exist;
- ``input``: ``X.nbytes`` of the float32 input matrix (10^6 x 200 x 4 bytes = 800 MB);
- ``peak``: the peak RSS (``VmHWM``, reset after the data were generated, so generation temporaries do not count)
  during registration, training, the refinement and inference, minus ``baseline``. It includes the data
  themselves (the input matrix and ``obs``). The requirement is ``peak <= 2 x input``.
- time per epoch of each training stage (from a callback at every epoch end), and of inference.

    nice python benchmarks/million.py                  # full size, 2 epochs (one per stage)
    python benchmarks/million.py --cells 100000        # a quick run
    python benchmarks/million.py --sparse              # CSR inputs (about 30% non-zero)
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
import warnings

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from sctbr import EnvironmentTree
from sctbr.model import TBR


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024.0
    raise KeyError(key)


def rss() -> float:
    return _status("VmRSS")


def peak() -> float:
    return _status("VmHWM")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def simulate(n_cells: int, n_inputs: int, branching: int, depth: int, n_latent: int, seed: int, sparse: bool):
    """Float32 data generated in chunks; returns the AnnData and the tree."""
    rng = np.random.default_rng(seed)
    tree = EnvironmentTree.balanced(depth, branching=branching)
    leaves = list(tree.leaves)
    # heads: w_0 plus one nonzero change (of one latent) on every arc
    delta = np.zeros((tree.n_arcs, n_latent), dtype=np.float32)
    delta[np.arange(tree.n_arcs), rng.integers(0, n_latent, tree.n_arcs)] = rng.normal(size=tree.n_arcs)
    w0 = rng.normal(size=n_latent).astype(np.float32)
    heads = w0[None, :] + np.asarray(tree.path_matrix(leaves) @ delta, dtype=np.float32)
    mixing = (rng.normal(size=(n_inputs, n_latent)) / np.sqrt(n_inputs)).astype(np.float32)

    env = rng.integers(0, len(leaves), n_cells)
    x = np.empty((n_cells, n_inputs), dtype=np.float32)
    y = np.empty(n_cells, dtype=np.float64)
    chunk = 100_000
    for s in range(0, n_cells, chunk):
        e = min(n_cells, s + chunk)
        xc = rng.standard_normal((e - s, n_inputs), dtype=np.float32)
        if sparse:
            xc[xc < 0.5] = 0.0  # about 30% non-zero
        x[s:e] = xc
        z = np.tanh(xc @ mixing) + 0.1 * rng.standard_normal((e - s, n_latent), dtype=np.float32)
        y[s:e] = (z * heads[env[s:e]]).sum(1) + 0.1 * rng.standard_normal(e - s)
    if sparse:
        x = sp.csr_matrix(x)
    obs = pd.DataFrame(
        {"y": y, "environment": pd.Categorical.from_codes(env, categories=leaves)},
        index=pd.RangeIndex(n_cells).astype(str),
    )
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"tf{i}" for i in range(n_inputs)]))
    return adata, tree


class EpochTimer(pl.Callback):
    def __init__(self, times: list):
        self.times = times

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--branching", type=int, default=10)
    parser.add_argument("--depth", type=int, default=3, help="branching ** depth environments (default 1,000)")
    parser.add_argument("--latents", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="epochs in all (2: one of stage 1, one of stage 3)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--sparse", action="store_true", help="CSR inputs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    gc.collect()
    baseline = rss()

    t0 = time.perf_counter()
    adata, tree = simulate(
        args.cells, args.inputs, args.branching, args.depth, args.latents, args.seed, sparse=args.sparse
    )
    x = adata.X
    nbytes = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes if sp.issparse(x) else x.nbytes
    gen_seconds = time.perf_counter() - t0
    gc.collect()
    after_data = rss()
    reset_peak()

    epoch_times: list[float] = []
    t0 = time.perf_counter()
    TBR.setup_anndata(adata, target="y", groupby="environment")
    model = TBR(adata, tree=tree, n_latent=args.latents)
    setup_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        accelerator="cpu",
        enable_progress_bar=False,
        callbacks=[EpochTimer(epoch_times)],
    )
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    z = model.get_latent_representation()
    infer_seconds = time.perf_counter() - t0
    peak_bytes = peak()

    gib = 2.0**30
    print(f"cells {args.cells:,}  inputs {args.inputs}  environments {len(tree.leaves):,}  latents {args.latents}")
    print(f"input matrix: {'CSR' if args.sparse else 'dense'} float32, {nbytes / gib:.3f} GiB")
    print(f"RSS baseline after imports: {baseline / gib:.3f} GiB")
    print(f"RSS after generating the data: {after_data / gib:.3f} GiB (+{(after_data - baseline) / gib:.3f} GiB)")
    print(
        f"peak RSS during setup + training + inference: {peak_bytes / gib:.3f} GiB; over the baseline "
        f"+{(peak_bytes - baseline) / gib:.3f} GiB = {(peak_bytes - baseline) / nbytes:.2f} x the input matrix "
        f"(fit on top of the data: +{(peak_bytes - after_data) / gib:.3f} GiB)"
    )
    print(f"data generation {gen_seconds:.1f} s, setup_anndata + model {setup_seconds:.1f} s")
    stages = ["stage 1 (lam=0)"] * int(round(0.7 * args.epochs)) + ["stage 3 (proximal)"] * args.epochs
    for i, seconds in enumerate(epoch_times):
        print(f"epoch {i} [{stages[i]}]: {seconds:.1f} s ({args.cells * 0.8 / seconds:,.0f} training cells/s)")
    other = train_seconds - sum(epoch_times)
    print(f"train() {train_seconds:.1f} s in all (validation, refinement, Lightning set-up: {other:.1f} s)")
    print(f"get_latent_representation {infer_seconds:.1f} s; latents finite: {bool(np.isfinite(z).all())}")
    print(f"torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
