"""The final refinement at larger scale: the default fit with and without it, side by side, on the same data.

``TBR.train(final_refine=True)`` (the default) refines the basis once more after training, on unpenalised heads
(``docs/training.md``, step 4). ``benchmarks/small_data.py --recipes default,no_final`` measures it with a few hundred
cells per cell type; this script checks the larger, paper-like regime: a balanced tree of depth ``--depth`` with every
node observed, ``--cells`` cells per environment, k = 1, 5 latents (``sctbr.datasets.simulate``), one torch thread.
It prints the MCC on the validation cells and the wall time of each fit.

    OMP_NUM_THREADS=1 python benchmarks/final_refinement.py                      # depth 4 x 1 000 cells, seeds 0-2
    OMP_NUM_THREADS=1 python benchmarks/final_refinement.py --cells 3000 --seeds 0
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--cells", type=int, default=1000, help="cells per environment")
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import sctbr
    from sctbr.metrics import mcc

    for seed in (int(s) for s in args.seeds.split(",")):
        scores = {}
        for final in (True, False):
            adata = sctbr.datasets.simulate(
                depth=args.depth, n_obs_per_env=args.cells, k=1, n_latent=5, random_state=seed
            )
            t = time.perf_counter()
            res = sctbr.tl.fit(
                adata,
                random_state=seed,
                accelerator="cpu",
                train_kwargs={"enable_progress_bar": False, "final_refine": final},
                changes=False,
            )
            held_out = res.split == "validation"
            scores[final] = mcc(adata.obsm["Z_true"][held_out], res.latents[held_out])
            print(
                f"depth {args.depth}, {args.cells} cells per environment, seed {seed}, final_refine={final}: "
                f"MCC {scores[final]:.4f}, {time.perf_counter() - t:.1f} s",
                flush=True,
            )
        print(f"  difference (with - without): {scores[True] - scores[False]:+.4f}", flush=True)


if __name__ == "__main__":
    main()
