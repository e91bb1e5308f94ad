"""Wall time of ``import scanpy`` next to ``import sctbr``, in fresh interpreters, alternating.

Each repetition starts one fresh ``python -c "import scanpy"`` and one ``python -c "import sctbr"`` (in
alternating order, so a noisy shared machine affects both alike) and times the whole process. Prints the median
wall time of each, their ratio (target: sctbr at most 1.3x scanpy) and, for information, the time of importing
sctbr with its light subpackages (``pp``, ``pl``, ``datasets``, ``metrics``) and with ``sctbr.tl`` (which loads
torch, scvi-tools and Lightning). A warm-up round (not counted) fills the OS file cache first.

    python benchmarks/import_time.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STATEMENTS = {
    "scanpy": "import scanpy",
    "sctbr": "import sctbr",
    "sctbr + pp/pl/datasets/metrics": "import sctbr, sctbr.pp, sctbr.pl, sctbr.datasets, sctbr.metrics",
    "sctbr + tl (torch, scvi-tools)": "import sctbr, sctbr.tl",
}


def wall(statement: str) -> float:
    """Seconds from start to exit of a fresh interpreter that runs ``statement``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", action="store_true", help="time only `import scanpy` and `import sctbr`")
    args = p.parse_args()
    names = list(STATEMENTS)[:2] if args.only else list(STATEMENTS)
    for name in names:  # warm-up
        wall(STATEMENTS[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.repeats):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(wall(STATEMENTS[name]))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.repeats} fresh interpreters each, alternating; median wall time (all runs):")
    for name in names:
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"  {name:<34} {medians[name]:6.2f} s   ({runs})   {medians[name] / medians['scanpy']:.2f}x scanpy")
    ratio = medians["sctbr"] / medians["scanpy"]
    print(f"import sctbr / import scanpy = {ratio:.2f} (target <= 1.3): {'OK' if ratio <= 1.3 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
