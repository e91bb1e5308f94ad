"""Issue 14: would a margin rule make ``small_data.py``'s recipe ``log_search`` safe?

Recipe ``log_search`` ends the fit's final refinement with a wide search of a log (l0-like) penalty on the same
heads, and keeps the smallest exact value among the polished search results and the polished l1 basis. It helps
the 16-leaf tree at 1 000 cells but also moves a few fits to worse mixtures whose value is only slightly smaller
(a 0.6% near-tie on one balanced fit). A margin rule keeps the search's basis only when its value is at least
``margin`` below the polished l1 basis's, and otherwise the shipped l1 basis (the default fit, unchanged).

Every ``log_search`` row records ``log_search_ratio``: the best polished search value over the polished l1 basis's.
Fits are deterministic on CPU (same seed, same numbers), so a margin rule's fit is exactly the ``log_search`` fit
where ``ratio < 1 - margin`` and exactly the default fit elsewhere: one run of both recipes scores every margin.
The rows of seeds 0-4 chose the margins to look at; seeds 5-9 are the held-out check.

    OMP_NUM_THREADS=1 python benchmarks/small_data.py --shapes balanced3,yule12,yule16,pbmc --cells 300,1000 \\
        --latents 5 --changes k1 --psi mlp --no-baseline --recipes default,log_search --seeds 10 --jobs 2 \\
        --out /tmp/log_margin
    python benchmarks/log_margin.py /tmp/log_margin/fits.csv
    python benchmarks/log_margin.py benchmarks/results/small_data/log_margin_polish.csv   # the committed run
    python benchmarks/log_margin.py benchmarks/results/small_data/log_margin.csv   # the polish before 2026-12-02

``log_margin.csv`` holds the rows of the earlier polish (their recipe, named ``log_search`` there, is
``log_search_l1first`` today: pass ``--recipe log_search_l1first`` for a new run of it). Recipes ``log_margin0.02``
and ``log_margin0.05`` of ``small_data.py`` run a margin rule as a fit; recipe ``log``, the package's option
``final_objective="log"`` (margin 5%), does the same as ``log_margin0.05``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

KEYS = ["shape", "cells", "latents", "changes", "psi", "seed"]
MARGINS = (0.01, 0.02, 0.03, 0.05, 0.08)


def margin_table(fits: pd.DataFrame, recipe: str = "log_search") -> pd.DataFrame:
    """One row per fit: the default's MCC, the search ``recipe``'s, its ratio, and the MCC of every margin rule."""
    default = fits[fits.recipe == "default"][KEYS + ["tbr_mcc"]].rename(columns={"tbr_mcc": "default"})
    search = fits[fits.recipe == recipe][KEYS + ["tbr_mcc", "log_search_ratio"]]
    df = default.merge(search.rename(columns={"tbr_mcc": "log_search", "log_search_ratio": "ratio"}), on=KEYS)
    for m in MARGINS:
        df[f"margin{m}"] = np.where(df.ratio < 1 - m, df.log_search, df.default)
    return df.sort_values(KEYS).reset_index(drop=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="+", help="small_data.py's fits.csv files with recipes default and log_search")
    p.add_argument(
        "--recipe", default="log_search", help="the search's recipe (log_search_l1first: the earlier polish)"
    )
    args = p.parse_args(argv)
    df = margin_table(pd.concat([pd.read_csv(c) for c in args.csv], ignore_index=True), args.recipe)
    rules = ["log_search"] + [f"margin{m}" for m in MARGINS]
    pd.set_option("display.width", 200)
    df["seeds"] = np.where(df.seed < 5, "0-4", "5-9")
    for (latents, psi, seeds), g in df.groupby(["latents", "psi", "seeds"]):
        print(
            f"{latents} latents, psi {psi}, seeds {seeds}: {len(g)} fits; MCC change against the default "
            "(>0.005 better, <-0.005 worse)"
        )
        for rule in rules:
            diff = g[rule] - g.default
            print(
                f"  {rule:>12}: {diff.mean():+.4f} +- {diff.std():.3f}  better {(diff > 0.005).sum():>2} "
                f"worse {(diff < -0.005).sum():>2}  worst change {diff.min():+.3f}"
            )
    print("mean / worst MCC per setting, all seeds")
    cols = ["default", *rules[:1], "margin0.02", "margin0.05"]
    print(df.groupby(["latents", "psi", "shape", "cells"])[cols].agg(["mean", "min"]).round(3).to_string())
    print(
        f"correlation of the ratio with log_search's gain: {np.corrcoef(df.ratio, df.log_search - df.default)[0, 1]:.2f}"
    )
    for lo, hi in [(0, 0.95), (0.95, 0.98), (0.98, 0.995), (0.995, np.inf)]:
        g = df[(df.ratio >= lo) & (df.ratio < hi)]
        diff = g.log_search - g.default
        print(
            f"  ratio in [{lo}, {hi}): {len(g):>2} fits, gain {diff.mean():+.4f}, better {(diff > 0.005).sum()}, "
            f"worse {(diff < -0.005).sum()}"
        )


if __name__ == "__main__":
    main()
