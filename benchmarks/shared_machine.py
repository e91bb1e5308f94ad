"""A default fit on a quiet machine and on one shared with other CPU-bound processes (issue 17).

Times the default ``sctbr.tl.tbr(adata, n_latent=4)`` call on issue 17's 12 000-cell simulation (see
``profile_fit.py``) as a user runs it: torch's own thread default (run this script **without** ``OMP_NUM_THREADS``
and without ``SCTBR_NUM_THREADS``), so the fit's thread rule (``sctbr.model._threads.fit_threads``) decides. Each
repeat times the call on the machine as it is ("quiet"), then with ``--competitors`` CPU-bound processes
(``python -c "while True: pass"``, started ``--settle`` seconds before the call) running, and reports both wall times
and their ratio, with the thread count the rule picked and the 1-minute load average. The target of issue 17: the
shared fit takes at most 2x the quiet one. Run it with nothing else on the machine, or the "quiet" figure is not.

    python benchmarks/shared_machine.py --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from profile_fit import simulate

import sctbr
from sctbr.model._threads import fit_threads


def call(adata) -> tuple[float, float, int]:
    work = adata.copy()
    threads = fit_threads()
    t = time.perf_counter()
    sctbr.tl.tbr(work, n_latent=4, enable_progress_bar=False)
    secs = time.perf_counter() - t
    return secs, float(sctbr.metrics.mcc(work.obsm["Z_true"], work.obsm["X_tbr"])), threads


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--competitors", type=int, default=1)
    p.add_argument("--settle", type=float, default=5.0, help="seconds between starting the competitors and the call")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("SCTBR_NUM_THREADS"):
        print("note: OMP_NUM_THREADS / SCTBR_NUM_THREADS is set; a user's default would not be", flush=True)
    adata = simulate()
    print(f"cores={os.cpu_count()} torch default threads={torch.get_num_threads()}", flush=True)
    call(adata[:2000].copy())  # warm-up (imports, first Lightning set-up)
    ratios = []
    for r in range(args.repeats):
        quiet, mcc_q, th_q = call(adata)
        load_q = os.getloadavg()[0]
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.competitors)]
        try:
            time.sleep(args.settle)
            shared, mcc_s, th_s = call(adata)
            load_s = os.getloadavg()[0]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        ratios.append(shared / quiet)
        print(
            f"repeat {r}: quiet {quiet:.1f} s ({th_q} thread(s), load {load_q:.2f}, MCC {mcc_q:.3f}); "
            f"shared with {args.competitors} process(es) {shared:.1f} s ({th_s} thread(s), load {load_s:.2f}, "
            f"MCC {mcc_s:.3f}); ratio {shared / quiet:.2f}",
            flush=True,
        )
    print(f"shared / quiet: median {np.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
