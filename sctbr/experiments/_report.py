"""Running experiments by name and writing their results: ``NAME.csv``, ``NAME.png`` and ``NAME.md``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sctbr import pl
from sctbr.experiments._profiles import Profile, get_profile
from sctbr.experiments._real import semisynthetic_sweep, transfer
from sctbr.experiments._simulation import (
    PAPER_ATE,
    bernoulli_changes,
    causal_effects,
    latent_dimension,
    leaves_only,
    linear_psi,
    sparsity_sweep,
)

_LABELS = {"mcc": "MCC", "test_mse": "test MSE", "transfer_mse": "transfer MSE", "ate_error": "ATE error"}
_LOST = "The paper's values for this figure are not in METHOD.md (the stored text lost them); compare the shape."


@dataclass(frozen=True)
class _Spec:
    """How an experiment is run, summarised and drawn."""

    func: Callable[..., pd.DataFrame]
    figure: str
    x: str
    metrics: tuple[str, ...]
    panels: tuple[tuple[str, str, str, bool], ...]  # (sctbr.pl function, x, y, log)
    expectation: str


EXPERIMENTS: dict[str, _Spec] = {
    "sparsity_sweep": _Spec(
        sparsity_sweep,
        "Fig. 3a (MCC) and 3b (MSE)",
        "k",
        ("mcc", "test_mse"),
        (("mcc", "k", "mcc", False), ("prediction_error", "k", "test_mse", True)),
        "TBR identifies the latents at k = 1 (MCC near 1) and stays ahead of the baseline as k grows; at k = 0 "
        "neither can identify them.",
    ),
    "leaves_only": _Spec(
        leaves_only,
        "Fig. 5",
        "k",
        ("mcc", "test_mse"),
        (("mcc", "k", "mcc", False), ("prediction_error", "k", "test_mse", True)),
        "As in Fig. 3, with cells at the leaves only: TBR ahead of the baseline at k = 1.",
    ),
    "latent_dimension": _Spec(
        latent_dimension,
        "Fig. 6",
        "n_latent",
        ("test_mse", "mcc"),
        (("prediction_error", "n_latent", "test_mse", True), ("mcc", "n_latent", "mcc", False)),
        "TBR's test MSE drops until the true number of latents and plateaus after it.",
    ),
    "linear_psi": _Spec(
        linear_psi,
        "Fig. 7",
        "k",
        ("mcc", "test_mse"),
        (("mcc", "k", "mcc", False), ("prediction_error", "k", "test_mse", True)),
        "With a linear map from inputs to latents, the same picture as Fig. 3.",
    ),
    "bernoulli_changes": _Spec(
        bernoulli_changes,
        "Fig. 8",
        "k",
        ("mcc", "test_mse"),
        (("mcc", "k", "mcc", False), ("prediction_error", "k", "test_mse", True)),
        "With random per-arc sparsity (k is the Bernoulli rate), TBR stays ahead of the baseline at low rates.",
    ),
    "causal_effects": _Spec(
        causal_effects,
        "Table 3",
        "environment",
        ("ate_error",),
        (("prediction_error", "k", "ate_error", True),),
        "At k = 1 TBR recovers the per-environment effects of the latents; the baseline does not.",
    ),
    "semisynthetic_sweep": _Spec(
        semisynthetic_sweep,
        "Fig. 4a",
        "k",
        ("mcc", "test_mse"),
        (("mcc", "k", "mcc", False), ("prediction_error", "k", "test_mse", True)),
        "On real cells (house-keeping genes as latents) TBR's MCC is above the baseline's at small k.",
    ),
    "transfer": _Spec(
        transfer,
        "Fig. 4b",
        "k",
        ("transfer_mse", "test_mse"),
        (("transfer", "k", "transfer_mse", True), ("mcc", "k", "mcc", False)),
        "TBR, predicting an unseen cell type with its closest observed type's head, errs less than a baseline "
        "trained on that neighbour alone.",
    ),
}


def _mean_sd(values: pd.Series) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "–"
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.3g} ± {sd:.2g}" if np.isfinite(sd) else f"{values.mean():.3g}"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _levels(values: pd.Series) -> list:
    present = list(pd.unique(values.dropna()))
    if not pd.api.types.is_numeric_dtype(values):
        return present  # first-appearance order (tree order for environments)
    return sorted(present)


def summary_table(results: pd.DataFrame, x: str, metrics: tuple[str, ...]) -> str:
    """Mean ± sd of every metric per method and level of ``x``, as a Markdown table."""
    methods = list(pd.unique(results["method"]))
    header = [x] + [f"{_LABELS.get(m, m)} {method}" for m in metrics for method in methods]
    rows = []
    for level in _levels(results[x]):
        at = results[results[x] == level]
        rows.append(
            [f"{level:g}" if isinstance(level, float) else str(level)]
            + [_mean_sd(at.loc[at["method"] == method, m]) for m in metrics for method in methods]
        )
    return _markdown_table(header, rows)


def _mean_at(results: pd.DataFrame, metric: str, method: str, **where) -> float:
    mask = results["method"] == method
    for col, value in where.items():
        mask &= np.isclose(results[col].astype(float), float(value))
    return float(results.loc[mask, metric].mean())


def verdict(name: str, results: pd.DataFrame) -> str:
    """One line: does this run show what the paper shows?"""
    methods = set(results["method"])

    def compare(metric: str, higher_is_better: bool, **where) -> str:
        tbr, base = (_mean_at(results, metric, m, **where) for m in ("tbr", "baseline"))
        if not (np.isfinite(tbr) and np.isfinite(base)):
            return "not measured"
        ok = tbr > base if higher_is_better else tbr < base
        return f"{'yes' if ok else 'no'} (TBR {tbr:.3g} vs baseline {base:.3g})"

    if name == "latent_dimension":
        # median over repetitions: one fit stuck in a poor local minimum should not move the elbow
        mse = results[results["method"] == "tbr"].groupby("n_latent")["test_mse"].median()
        if len(mse) < 2:
            return "TBR was not fitted at two or more latent dimensions."
        # the elbow: the smallest dimension that achieves 90% of the drop from the smallest dimension to the best
        enough = mse.to_numpy() <= mse.min() + 0.1 * (mse.iloc[0] - mse.min())
        plateau = int(mse.index[np.argmax(enough)])
        true = int(results["n_latent_true"].iloc[0])
        ok = "yes" if plateau == true else "no"
        return (
            f"TBR's test MSE plateaus (90% of its drop reached) at the true dimension: {ok} (plateau at "
            f"n_latent = {plateau}, true {true}; median MSE by n_latent: {', '.join(f'{v:.3g}' for v in mse)})."
        )
    if not {"tbr", "baseline"} <= methods:
        return "TBR and the baseline were not both fitted."
    if name == "causal_effects":
        return f"TBR below the baseline on the pooled ATE error: {compare('ate_error', False)}."
    if name == "transfer":
        k = min(results["k"])
        return f"TBR below the baseline on transfer MSE at k = {k}: {compare('transfer_mse', False, k=k)}."
    if name == "bernoulli_changes":
        rate = min(results["k"])
        return f"TBR ahead of the baseline on MCC at rate {rate:g}: {compare('mcc', True, k=rate)}."
    if 1 not in set(results["k"]):
        return "k = 1 was not run."
    return f"TBR ahead of the baseline on MCC at k = 1: {compare('mcc', True, k=1)}."


def markdown(name: str, results: pd.DataFrame, profile: Profile, seconds: float) -> str:
    """The short Markdown summary of one experiment."""
    spec = EXPERIMENTS[name]
    lines = [
        f"# `{name}` ({spec.figure}), profile `{profile.name}`",
        "",
        f"{len(results)} rows, {results['seed'].nunique()} repetition(s), {seconds:.0f} s wall time. "
        "Mean ± sd over repetitions; MCC and MSE on the 25% test cells.",
        "",
        f"**Paper:** {spec.expectation}",
        "",
        f"**This run:** {verdict(name, results)}",
        "",
    ]
    if name == "causal_effects":
        methods = list(pd.unique(results["method"]))
        pooled = [_mean_sd(results.loc[results["method"] == m, "ate_error"]) for m in methods]
        paper = [(f"{PAPER_ATE[m][0]} ± {PAPER_ATE[m][1]}" if m in PAPER_ATE else "–") for m in methods]
        lines += [
            _markdown_table(["ATE error", *methods], [["pooled, this run", *pooled], ["paper (Table 3)", *paper]]),
            "",
            "Per environment:",
            "",
            summary_table(results, "environment", ("ate_error",)),
        ]
    else:
        lines += [summary_table(results, spec.x, spec.metrics), "", _LOST]
    return "\n".join(lines) + "\n"


def _fallback_panel(ax, results: pd.DataFrame, x: str, y: str, log: bool) -> None:
    """Mean ± sd per method (used when ``sctbr.pl`` lacks the plot)."""
    for method, group in results.groupby("method", sort=False):
        stats = group.groupby(x)[y].agg(["mean", "std"])
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=method)
    ax.set_xlabel(x)
    ax.set_ylabel(_LABELS.get(y, y))
    if log:
        ax.set_yscale("log")
    ax.legend(frameon=False)


def figure(name: str, results: pd.DataFrame):
    """The experiment's figure: one panel per entry of its spec, drawn with ``sctbr.pl``."""
    spec = EXPERIMENTS[name]
    fig, axes = plt.subplots(1, len(spec.panels), figsize=(4.6 * len(spec.panels), 3.4), squeeze=False)
    for ax, (plot, x, y, log) in zip(axes[0], spec.panels, strict=True):
        data = results[np.isfinite(pd.to_numeric(results[y], errors="coerce"))]
        if data.empty:
            ax.set_axis_off()
            continue
        log = log and bool((data[y] > 0).all())
        if hasattr(pl, plot):
            kwargs = {"log": log} if plot != "mcc" else {}
            getattr(pl, plot)(data, x=x, y=y, ax=ax, show=False, **kwargs)
            if y == "ate_error":
                ax.set_ylabel(_LABELS[y])
        else:
            _fallback_panel(ax, data, x, y, log)
    fig.suptitle(f"{name} ({spec.figure})")
    fig.tight_layout()
    return fig


def write(name: str, results: pd.DataFrame, out: Path, profile: Profile, seconds: float) -> list[Path]:
    """Write ``NAME.csv``, ``NAME.png`` and ``NAME.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.csv", out / f"{name}.png", out / f"{name}.md"]
    results.to_csv(paths[0], index=False)
    fig = figure(name, results)
    try:
        fig.savefig(paths[1], dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    paths[2].write_text(markdown(name, results, profile, seconds))
    return paths


def run(
    name: str,
    profile: str | Profile = "quick",
    out: str | Path | None = None,
    *,
    random_state: int = 0,
    accelerator: str = "auto",
    verbose: bool = False,
    **overrides,
) -> pd.DataFrame:
    """Run one experiment (or ``"all"``) and, with ``out``, write its CSV, figure and Markdown summary.

    Parameters
    ----------
    name
        An experiment (``"sparsity_sweep"``, ``"leaves_only"``, ``"latent_dimension"``, ``"linear_psi"``,
        ``"bernoulli_changes"``, ``"causal_effects"``, ``"semisynthetic_sweep"``, ``"transfer"``) or ``"all"``.
    profile
        ``"quick"``, ``"local"``, ``"paper"`` or a :class:`~sctbr.experiments.Profile`.
    out
        Folder for ``NAME.csv``, ``NAME.png`` and ``NAME.md`` (with ``"all"`` also ``summary.md``: every
        experiment's verdict and wall time); ``None`` writes nothing.
    random_state
        Seed of the first repetition.
    accelerator
        Lightning's accelerator (``"auto"``: a GPU when present).
    verbose
        Print each experiment's verdict and wall time.
    **overrides
        Fields of :class:`~sctbr.experiments.Profile` to change.

    Returns
    -------
    The tidy results table (for ``"all"``, every experiment's rows, told apart by ``experiment``).

    Examples
    --------
    >>> import sctbr
    >>> results = sctbr.experiments.run("sparsity_sweep", "quick", out="experiments_quick")  # doctest: +SKIP
    """
    names = list(EXPERIMENTS) if name == "all" else [name]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"Unknown experiment {name!r}; choose one of {[*EXPERIMENTS, 'all']}.")
    prof = get_profile(profile, **overrides)
    out = Path(out) if out is not None else None
    frames, lines = [], []
    for n in names:
        start = time.perf_counter()
        results = EXPERIMENTS[n].func(prof, random_state=random_state, accelerator=accelerator)
        seconds = time.perf_counter() - start
        line = f"`{n}` ({EXPERIMENTS[n].figure}, {seconds:.0f} s): {verdict(n, results)}"
        lines.append(line)
        if verbose:
            print(line, flush=True)
        if out is not None:
            write(n, results, out, prof, seconds)
        frames.append(results)
    if out is not None and name == "all":
        text = [f"# Experiments, profile `{prof.name}`", "", *[f"- {line}" for line in lines]]
        (out / "summary.md").write_text("\n".join(text) + "\n")
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
