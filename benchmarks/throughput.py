"""Training throughput of ``sctbr`` (Lightning / scvi-tools path) next to a bare PyTorch loop.

Both train the same ``TBRModule`` (same encoder, heads, loss, proximal step) on the same simulated data, in
the same process, alternately, so the ratio is robust to a noisy shared machine. Prints cells/s of each,
their ratio, and the peak resident memory of each phase (Linux ``VmHWM``, reset between phases).

    python benchmarks/throughput.py --cells 10000 --epochs 5 --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np
import torch
from gpu import _peak_mib, _peak_reset, bare_loop, lightning_fit  # the same loops, device-aware

import sctbr
from sctbr.model import TBR

CPU = torch.device("cpu")


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
            _peak_reset(CPU)
            if kind == "bare":
                secs = bare_loop(model, args.epochs, args.batch_size, 3e-3, CPU)
            else:
                secs = lightning_fit(model, args.epochs, args.batch_size, 3e-3, CPU)
            rows.append((kind, r, n_cells * args.epochs / secs, _peak_mib(CPU)))
            print(f"  repeat {r} {kind:>6}: {rows[-1][2]:>10.0f} cells/s   peak RSS {rows[-1][3]:.0f} MiB")
    bare = np.median([c for k, _, c, _ in rows if k == "bare"])
    ours = np.median([c for k, _, c, _ in rows if k == "sctbr"])
    print(f"median cells/s: bare {bare:.0f}, sctbr {ours:.0f}; ratio sctbr/bare = {ours / bare:.2f}")
    print(f"input matrix: {adata.X.nbytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
