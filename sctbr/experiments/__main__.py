"""Command line: ``python -m sctbr.experiments NAME|all --profile quick|local|paper --out DIR``.

Writes ``NAME.csv`` (the tidy table), ``NAME.png`` (the figure) and ``NAME.md`` (mean ± sd per method and
setting, the paper's numbers where known, and whether this run shows what the paper shows) into ``--out``; with
``all`` also ``summary.md``.

    python -m sctbr.experiments sparsity_sweep --profile quick --out experiments_quick
    python -m sctbr.experiments all --profile paper --out experiments_paper --accelerator gpu
    python -m sctbr.experiments sparsity_sweep --profile paper --set ks=1 --set n_repeats=2   # a paper-scale spot check

``--set FIELD=VALUE`` changes one field of the profile (:class:`sctbr.experiments.Profile`); the value is a Python
literal (``ks=1`` or ``ks=0,1`` for tuples, ``max_epochs=None``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from sctbr.experiments._profiles import PROFILES, Profile  # noqa: E402
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
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one profile field (repeatable), e.g. --set n_repeats=2 --set ks=1",
    )
    args = parser.parse_args(argv)
    if args.name != "all" and args.name not in EXPERIMENTS:
        parser.error(f"unknown experiment {args.name!r}; choose one of {', '.join(EXPERIMENTS)}, or all")
    overrides = _parse_overrides(parser, args.overrides)
    run(
        args.name,
        args.profile,
        args.out,
        random_state=args.random_state,
        accelerator=args.accelerator,
        verbose=True,
        **overrides,
    )
    print(f"Wrote the results to {args.out}/.")


def _parse_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict:
    """``["ks=1", "n_repeats=2"]`` -> ``{"ks": 1, "n_repeats": 2}``; errors name the field."""
    fields = {f.name for f in dataclasses.fields(Profile)}
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            parser.error(f"--set {item!r}: write FIELD=VALUE, e.g. --set n_repeats=2")
        if key not in fields:
            parser.error(f"--set {item!r}: unknown profile field {key!r}; the fields are: {', '.join(sorted(fields))}")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()  # a bare word, e.g. a method name
        overrides[key] = value  # Profile.replace turns a single value of a tuple field into a tuple
    return overrides


if __name__ == "__main__":
    main()
