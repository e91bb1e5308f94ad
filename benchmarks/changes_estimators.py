"""Which estimator of "changed" loses what: the default support estimate against alternatives, with fitted and true latents.

``benchmarks/changes.py`` scores the default fit's "changed" entries of Δ (issue 16). This script asks where its
misses come from. It fits the default ``sctbr.tl.tbr`` once per data set of ``changes.py`` (same simulations, same
call) and keeps the latents; then, with the latents fixed, it re-runs support estimators on

- the **fitted** latents (matched to the true ones on the validation cells, as ``changes.py`` does), and
- the **true** latents (``obsm["Z_true"]``, standardised): a perfectly identified encoder, so what is left is the
  estimator's own error.

Estimators:

- ``adaptive``: the default (``sctbr.tl._support.estimate_changes``: lasso, then adaptive lasso with weights from it,
  λ on the validation cells, 20 bootstraps, frequency ≥ 0.9; or called by the least-squares test with the
  validation cells' variance);
- ``lasso_only``: the default without that test (``test_alpha=0``), the default before 2026-12-01;
- ``adaptive_ls``: ``lasso_only`` with the adaptive weights from the unpenalised least-squares fit (minimum norm where the
  tree leaves it free) instead of the first lasso, the textbook adaptive lasso, so that no entry is excluded by the
  first stage;
- ``ttest``: the unpenalised least-squares fit of ``(w0, Δ)`` on the training cells with its standard errors
  (residual variance × the inverse Gram matrix), an entry changed when ``|Δ| / se`` exceeds the Bonferroni bound for
  ``--alpha`` over all entries; entries on unresolved arc pairs never count;
- ``ttest_validation``: the same fit and tests on the validation cells, which the encoder did not train on;
- ``screen_clean``: the default's "changed" entries, plus those a screen and clean adds (Wasserman & Roeder 2009):
  entries whose change the training cells identify (alone, not only as a sum with another arc) and the training
  t-test keeps at ``--alpha``, then confirmed on the validation cells by a one-sided test in the training estimate's
  direction at 0.05 / (entries screened).

Scores as in ``changes.py``: precision / recall / F1 of "changed" against the true non-zero entries (entries on
unresolved pairs count as not changed), ``f1_placeable`` on the entries the data can place (``changes.py``), and at
k = 0 the fraction called. Fits are cached in ``--cache`` (one pickle
per data set, default in the temporary directory), so a second run takes seconds.

Next to it, ``encoder.csv`` (next to ``--out``) says how far the encoder is from the true latents, per fit: the
residual variance of the validation cells over that of the training cells, both under the heads' least-squares fit
on the training cells (about 1 with the true latents; larger when the encoder fits its training cells' noise), and
the span bound, the mean over true latents of the correlation the best linear map of the fitted latents reaches
(no choice of basis gets an MCC above it); and ``coverage_*``: how often the support estimate's nominal 90%
least-squares intervals hold the true change (entries identified on their own), on the fitted and the true latents,
with the validation cells' residual variance (the default) or the training cells' own.

    OMP_NUM_THREADS=1 python benchmarks/changes_estimators.py                  # 4 settings x 5 seeds, ~7 min of fits
    OMP_NUM_THREADS=1 python benchmarks/changes_estimators.py --settings balanced4 --seeds 2
"""

from __future__ import annotations

import argparse
import logging
import pickle
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from changes import simulate

SETTINGS = (
    "balanced4",
    "balanced4_regulatory",
    "balanced4_k0",
    "yule12",
    "yule16",
    "yule12_regulatory",
    "yule16_regulatory",
)
ESTIMATORS = ("adaptive", "lasso_only", "adaptive_ls", "ttest", "ttest_validation", "screen_clean")


def fit_once(setting: str, seed: int, cache: Path) -> dict:
    """The default fit's latents and what scoring needs, from the cache or fitted now."""
    path = cache / f"{setting}_{seed}.pkl"
    if path.exists():
        with path.open("rb") as fh:
            return pickle.load(fh)
    import torch

    torch.set_num_threads(1)
    import sctbr

    adata = simulate(setting, seed)
    sctbr.tl.tbr(adata, random_state=seed, accelerator="cpu", enable_progress_bar=False)
    tree = sctbr.EnvironmentTree.coerce(dict(adata.uns["environment_tree"]))
    sim = adata.uns["simulation"]
    truth = pd.DataFrame(np.asarray(sim["deltas"], dtype=float), index=np.asarray(sim["arc_labels"]).astype(str))
    out = {
        "latents": adata.obsm["X_tbr"].astype(np.float64),
        "y": adata.obs["y"].to_numpy(),
        "nodes": adata.obs["environment"].astype(str).to_numpy(),
        "tree": dict(adata.uns["environment_tree"]),
        "split": np.asarray(adata.obs["tbr_split"]).astype(str),
        "z_true": np.asarray(adata.obsm["Z_true"], dtype=np.float64),
        "truth": truth.loc[list(tree.arc_labels)].to_numpy(),
    }
    cache.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(out, fh)
    return out


def _least_squares(z, y, nodes, tree, split):
    """Unpenalised ``(w0, Δ)`` on the training cells, standard errors of Δ, and the unresolved-pair mask."""
    from sctbr import _heads_lasso as hl
    from sctbr.tl import _support as sup

    observed = sorted(set(nodes))
    env = pd.Index(observed).get_indexer(nodes)
    path = tree.path_matrix(observed, dtype=np.float64)
    train = split == "train"
    ys = (y - y[train].mean()) / y[train].std()
    prob = hl.Problem(hl.moments(z[train], ys[train], env[train], path))
    root, delta = prob.split(prob.refit(np.ones((prob.n_arcs, prob.d1 - 1), dtype=bool)))
    sigma2 = sup._cell_errors(z[train], ys[train], env[train], path, root, delta).mean()
    se = np.sqrt(np.diag(sigma2 * np.linalg.pinv(prob.g) / prob.mom.n))[prob.d1 :].reshape(delta.shape)
    on_pair = np.zeros(delta.shape, dtype=bool)
    for a, b, _ in sup.unresolved_pairs(tree, observed):
        on_pair[[a, b]] = True
    return prob, delta, se, on_pair


def _cells(data: dict):
    """``(tree, env, path, ys, train, validation)`` of a cached fit: environment codes of the cells, the path matrix
    of the observed environments, the target standardised on the training cells, and the split masks."""
    import sctbr

    tree = sctbr.EnvironmentTree.coerce(data["tree"])
    observed = sorted(set(data["nodes"]))
    split, y = data["split"], data["y"]
    train = split == "train"
    ys = (y - y[train].mean()) / y[train].std()
    env = pd.Index(observed).get_indexer(data["nodes"])
    return tree, env, tree.path_matrix(observed, dtype=np.float64), ys, train, split == "validation"


def encoder_row(setting: str, seed: int, data: dict) -> dict:
    """Validation / training residual variance of the least-squares heads, fitted and true latents; the span bound."""
    from sctbr.tl import _support as sup

    tree, env, path, ys, train, val = _cells(data)
    nodes, split, y = data["nodes"], data["split"], data["y"]
    row = {"setting": setting, "seed": seed}
    for name, z in (("fitted", data["latents"]), ("true", data["z_true"])):
        prob, *_ = _least_squares(z, y, nodes, tree, split)
        root, delta = prob.split(prob.refit(np.ones((prob.n_arcs, prob.d1 - 1), dtype=bool)))
        err = [sup._cell_errors(z[c], ys[c], env[c], path, root, delta).mean() for c in (val, train)]
        row[f"residual_ratio_{name}"] = float(err[0] / err[1])
    x = np.c_[np.ones(val.sum()), data["latents"][val]]
    zt = data["z_true"][val]
    resid = zt - x @ np.linalg.lstsq(x, zt, rcond=None)[0]
    row["span_bound"] = float(np.mean(np.sqrt(1 - resid.var(axis=0) / zt.var(axis=0))))
    return row


def coverage_row(data: dict, level: float = 0.9) -> dict:
    """Coverage of the support estimate's least-squares intervals at ``level``, fitted and true latents, with the
    residual variance of the validation cells (the default) or of the training cells."""
    from scipy.stats import norm

    from sctbr.metrics import match_latents
    from sctbr.tl import _support as sup

    tree, _, _, _, train_mask, held = _cells(data)
    train = np.flatnonzero(train_mask)
    m = match_latents(data["z_true"][held], data["latents"][held])
    # the truth per standard deviation of its latent, in standardised target units (the estimate's units)
    truth = data["truth"] * data["z_true"][train].std(0)[None, :] / data["y"][train].std()
    bound = float(norm.isf((1 - level) / 2))
    row = {}
    for name, z in (("fitted", data["latents"]), ("true", data["z_true"])):
        for source in ("validation", "training"):
            prob = sup.support_problem(
                z, data["y"], data["nodes"], tree, data["split"], standardize_latents=True, variance=source
            )[0]
            delta, se = sup._least_squares(prob)
            if name == "fitted":  # into true-latent columns, sign-aligned
                d, e = np.full(truth.shape, np.nan), np.full(truth.shape, np.nan)
                d[:, m["true_index"]] = delta[:, m["est_index"]] * np.sign(m["corr"])[None, :]
                e[:, m["true_index"]] = se[:, m["est_index"]]
                delta, se = d, e
            known = np.isfinite(se)
            covered = np.abs(delta - truth)[known] <= bound * se[known]
            row[f"coverage_{name}_{source}"] = float(covered.mean()) if known.any() else np.nan
    return row


def estimate(name: str, z, data: dict, tree, seed: int, alpha: float) -> np.ndarray:
    """Boolean arcs x latents "changed" of one estimator on latents ``z``."""
    from scipy.stats import norm

    from sctbr.tl import _support as sup

    args = (z, data["y"], data["nodes"], tree, data["split"])
    if name in ("ttest", "ttest_validation"):
        split = data["split"] if name == "ttest" else np.where(data["split"] == "validation", "train", "other")
        _, delta, se, on_pair = _least_squares(z, data["y"], data["nodes"], tree, split)
        return (np.abs(delta) / np.maximum(se, 1e-300) > norm.isf(alpha / (2 * delta.size))) & ~on_pair
    if name == "screen_clean":
        prob, delta, se, on_pair = _least_squares(*args)
        # an entry is identified alone when its unit vector lies in the row space of the Gram matrix
        projector = np.linalg.pinv(prob.g) @ prob.g
        alone = (np.abs(np.diag(projector)[prob.d1 :] - 1) < 1e-6).reshape(delta.shape) & ~on_pair
        screened = alone & (np.abs(delta) / np.maximum(se, 1e-300) > norm.isf(alpha / (2 * delta.size)))
        validation = np.where(data["split"] == "validation", "train", "other")
        _, d_val, se_val, _ = _least_squares(z, data["y"], data["nodes"], tree, validation)
        bound = norm.isf(0.05 / max(int(screened.sum()), 1))
        clean = screened & (np.sign(d_val) == np.sign(delta)) & (np.abs(d_val) / np.maximum(se_val, 1e-300) > bound)
        return clean | estimate("adaptive", z, data, tree, seed, alpha)
    if name == "lasso_only":
        return np.asarray(sup.estimate_changes(*args, random_state=seed, test_alpha=0).changed, dtype=bool)
    if name == "adaptive_ls":
        prob, delta, _, _ = _least_squares(*args)
        original = sup._select

        def select(p, method, n_lambda, ratio, lam=None, penalty=None, start=None):
            if penalty is None:  # the full data's path: weights from least squares instead of the first lasso
                init = p.quad.split(p.quad.refit(np.ones((p.quad.n_arcs, p.quad.d1 - 1), dtype=bool)))[1]
                penalty = np.where(init != 0, 1.0 / np.maximum(np.abs(init), 1e-12), np.inf)
            return original(p, method, n_lambda, ratio, lam=lam, penalty=penalty, start=start)

        sup._select = select
        try:
            found = sup.estimate_changes(*args, random_state=seed, test_alpha=0)  # a variant of the lasso alone
        finally:
            sup._select = original
        return np.asarray(found.changed, dtype=bool)
    return np.asarray(sup.estimate_changes(*args, random_state=seed).changed, dtype=bool)


def score(setting: str, seed: int, data: dict, estimators, alpha: float) -> list[dict]:
    import sctbr
    from sctbr.metrics import match_latents, support_recovery
    from sctbr.tl._support import sparsest_status

    tree = sctbr.EnvironmentTree.coerce(data["tree"])
    held = data["split"] == "validation"
    matching = match_latents(data["z_true"][held], data["latents"][held])
    ti, ei = matching["true_index"], matching["est_index"]
    z_true = (data["z_true"] - data["z_true"].mean(0)) / data["z_true"].std(0)
    truth = data["truth"]
    has_cells = np.isin(np.asarray(tree.nodes), sorted(set(data["nodes"])))
    ambiguous = np.logical_and(*sparsest_status(tree.parent_index, has_cells, truth))
    rows = []
    for latents, z in (("fitted", data["latents"]), ("true", z_true)):
        for name in estimators:
            changed = estimate(name, z, data, tree, seed, alpha)
            if latents == "fitted":  # into true-latent columns
                aligned = np.zeros(truth.shape, dtype=bool)
                aligned[:, ti] = changed[:, ei]
                changed = aligned
            row = {
                "setting": setting,
                "seed": seed,
                "latents": latents,
                "estimator": name,
                "frac_called": float(changed.mean()),
                "mcc": float(np.mean(matching["abs_corr"])),
            }
            if (truth != 0).any():
                res = support_recovery(truth, changed.astype(float))
                row.update(precision=res["precision"], recall=res["recall"], f1=res["f1"])
                # off the entries the data cannot place (changes.py's f1_placeable)
                off = support_recovery(truth[~ambiguous][:, None], changed[~ambiguous][:, None].astype(float))
                row.update(f1_placeable=off["f1"])
            rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--estimators", default=",".join(ESTIMATORS))
    p.add_argument("--alpha", type=float, default=1e-4, help="family-wise level of the t-tests (Bonferroni)")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "sctbr_changes_estimators"))
    p.add_argument("--out", default="benchmarks/results/changes/estimators.csv")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    estimators = args.estimators.split(",")
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        p.error(f"unknown estimators {sorted(unknown)}; choose from {ESTIMATORS}")
    rows, encoder = [], []
    for setting in args.settings.split(","):
        for seed in range(args.seeds):
            data = fit_once(setting, seed, Path(args.cache))
            new = score(setting, seed, data, estimators, args.alpha)
            rows += new
            encoder.append(encoder_row(setting, seed, data) | coverage_row(data) | {"mcc": new[0]["mcc"]})
            print(
                f"{setting:>21} seed={seed} MCC {new[0]['mcc']:.3f}  "
                + "  ".join(f"{r['latents']}/{r['estimator']} F1 {r.get('f1', np.nan):.3f}" for r in new),
                flush=True,
            )
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    enc = pd.DataFrame(encoder)
    enc.to_csv(Path(args.out).with_name("encoder.csv"), index=False)
    print(enc.groupby("setting", sort=False).mean(numeric_only=True).drop(columns="seed").round(3).to_string())
    table = df.groupby(["setting", "latents", "estimator"], sort=False).agg(
        f1_mean=("f1", "mean"),
        f1_worst=("f1", "min"),
        f1_placeable=("f1_placeable", "mean"),
        precision=("precision", "mean"),
        recall=("recall", "mean"),
        frac_called=("frac_called", "mean"),
    )
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
