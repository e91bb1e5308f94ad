"""Build ``docs/reproducing.md`` from the output folder of ``python -m sctbr.experiments ... --profile local``.

    python -m sctbr.experiments sparsity_sweep --profile local --out experiments_local   # and the others
    python docs/make_reproducing.py experiments_local --hardware "2 shared CPU cores" --date 2026-11-28

Copies each experiment's ``NAME.csv`` and ``NAME.png`` into ``docs/_static/reproducing/`` and writes one section per
experiment found (its Markdown summary with the headings demoted, the figure and a link to the CSV). Experiments
without results are listed as not run: the page never shows numbers that were not produced by the stated command.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sctbr.experiments._report import EXPERIMENTS

HERE = Path(__file__).parent
STATIC = HERE / "_static" / "reproducing"

#: What the paper reports for each experiment, as far as METHOD.md kept it.
PAPER = {
    "sparsity_sweep": "TBR's MCC is close to 1 at small k and above the baseline's at every k > 0; both fit the "
    "phenotype well (Fig. 3). The values themselves were lost from the stored text.",
    "leaves_only": "The same picture with cells at the leaves only (Fig. 5).",
    "latent_dimension": "TBR's test MSE plateaus at the true number of latents (Fig. 6).",
    "linear_psi": "The same picture as Fig. 3 with a linear map from inputs to latents (Fig. 7).",
    "bernoulli_changes": "TBR ahead of the baseline when changes per arc are drawn at random (Fig. 8).",
    "causal_effects": "Pooled ATE error 0.05 ± 0.07 (TBR) vs 1.51 ± 1.8 (baseline) at k = 1 (Table 3).",
    "semisynthetic_sweep": "On GTEx epithelial cells, TBR's MCC above the baseline's at small k (Fig. 4a).",
    "transfer": "TBR's transfer error to held-out cell types below the baseline's (Fig. 4b).",
}


def _demote(text: str) -> str:
    """Turn the summary's H1 into an H3 (the page owns the H1 and H2s)."""
    return "\n".join(("##" + line) if line.startswith("#") else line for line in text.splitlines())


def build(results: Path, hardware: str, date: str, command: str, discussion: Path | None, code: str) -> str:
    STATIC.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Reproducing the paper",
        "",
        "Every table and figure on this page was produced by the command below on the stated machine; nothing is",
        "copied from elsewhere. The paper's own numbers are quoted where the stored text of the paper kept them",
        "(METHOD.md lost most figure values: there, compare the shape).",
        "",
        f"- **Command:** `{command}`",
        f"- **Hardware:** {hardware}",
        f"- **Date:** {date}",
        f"- **Code:** {code}",
        "- **Scale:** the `local` profile (`sctbr.experiments.PROFILES['local']`): a balanced binary tree of depth 4 "
        "(30 environments, cells at every non-root node; 32 leaves one level deeper for `leaves_only`), 300 cells "
        "per environment, 10 inputs, 5 latents, 5 repetitions (10 for the real cells, PBMC3k capped at 200 cells per "
        "cell type), the default `sctbr.tl.tbr` recipe; MCC and MSE on "
        "the 25% test cells of a 50/25/25 split.",
        "",
    ]
    if discussion is not None:
        lines += [discussion.read_text().rstrip(), ""]
    missing = []
    for name, spec in EXPERIMENTS.items():
        md, png, csv = (results / f"{name}.{ext}" for ext in ("md", "png", "csv"))
        if not md.exists():
            missing.append(name)
            continue
        shutil.copy(png, STATIC / png.name)
        shutil.copy(csv, STATIC / csv.name)
        lines += [
            f"## `{name}` ({spec.figure})",
            "",
            f"**Paper:** {PAPER[name]}",
            "",
            _demote(md.read_text()).rstrip(),
            "",
            f"![{name}](_static/reproducing/{png.name})",
            "",
            f"Raw results: [{csv.name}](_static/reproducing/{csv.name}).",
            "",
        ]
    if missing:
        lines += [
            "## Not run yet at the local scale",
            "",
            "These experiments have no local-profile results on this page yet; their quick-profile versions run in "
            "CI (`make experiments-quick`): " + ", ".join(f"`{m}`" for m in missing) + ".",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="the --out folder of sctbr.experiments")
    p.add_argument("--hardware", required=True)
    p.add_argument("--date", required=True)
    p.add_argument(
        "--command",
        default="python -m sctbr.experiments NAME --profile local --out experiments_local",
        help="the command that produced the results",
    )
    p.add_argument("--discussion", type=Path, default=None, help="Markdown inserted before the results")
    p.add_argument("--code", default="this commit", help="the sctbr version or commit that produced the results")
    args = p.parse_args()
    text = build(args.results, args.hardware, args.date, args.command, args.discussion, args.code)
    (HERE / "reproducing.md").write_text(text)
    print(f"Wrote {HERE / 'reproducing.md'}")


if __name__ == "__main__":
    main()
