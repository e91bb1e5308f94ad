"""Command line: ``python -m sctbr.experiments NAME|all --profile quick|local|paper --out DIR``.

Writes ``NAME.csv`` (the tidy table), ``NAME.png`` (the figure) and ``NAME.md`` (mean ± sd per method and
setting, the paper's numbers where known, and whether this run shows what the paper shows) into ``--out``; with
``all`` also ``summary.md``.

    python -m sctbr.experiments sparsity_sweep --profile quick --out experiments_quick
    python -m sctbr.experiments all --profile paper --out experiments_paper --accelerator gpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from sctbr.experiments._profiles import PROFILES  # noqa: E402
from sctbr.experiments._report import EXPERIMENTS, run  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sctbr.experiments",
        description="Run the paper's experiments; write NAME.csv, NAME.png and NAME.md (and summary.md for all).",
    )
    parser.add_argument("name", help=f"one of {', '.join(EXPERIMENTS)}, or all")
    parser.add_argument(
        "--profile",
        default="quick",
        help=f"scale: {', '.join(PROFILES)} (quick: CI, minutes; local: 2 CPU cores, under an hour each; "
        "paper: the paper's scale, for a GPU)",
    )
    parser.add_argument("--out", type=Path, default=Path("experiments_output"), help="output folder")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    parser.add_argument("--random-state", type=int, default=0, help="seed of the first repetition")
    args = parser.parse_args(argv)
    if args.name != "all" and args.name not in EXPERIMENTS:
        parser.error(f"unknown experiment {args.name!r}; choose one of {', '.join(EXPERIMENTS)}, or all")
    run(
        args.name,
        args.profile,
        args.out,
        random_state=args.random_state,
        accelerator=args.accelerator,
        verbose=True,
    )
    print(f"Wrote the results to {args.out}/.")


if __name__ == "__main__":
    main()
