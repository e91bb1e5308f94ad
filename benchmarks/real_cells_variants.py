"""Why real cells are not identified yet: overfitting, fit variants, and the l1 limit on the sub-cluster tree.

On the set-up of ``real_cells.py`` (PBMC3k sub-clusters, predictable weakly correlated latent genes, k = 1, profile
``local``), for each repetition (seed) and variant it fits ``sctbr.tl.fit`` and prints, on the training and
validation cells, the phenotype's MSE, the MCC and the span R² of the latents (mean R² of each true latent regressed
on the fitted ones). Variants are JSON: keyword arguments of ``tl.fit`` (``"train"`` holds its ``train_kwargs``).

With ``--oracle`` it instead runs the basis refinement on the simulation's **true** heads of this tree, from a random
mix of the true latents (as ``l1_oracle.py`` does on simulated trees): the MCC a perfect encoder would reach.

    OMP_NUM_THREADS=1 python benchmarks/real_cells_variants.py --seeds 0,1,2
    OMP_NUM_THREADS=1 python benchmarks/real_cells_variants.py --seeds 0,1,2 --variants \\
        '{"wd1e-2": {"train": {"plan_kwargs": {"weight_decay": 1e-2}}}, "es_fit": {"train": {"early_stopping": true,
        "early_stopping_phases": ["fit"]}}, "baseline": {"baseline": true}}'
    OMP_NUM_THREADS=1 python benchmarks/real_cells_variants.py --oracle --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings

import numpy as np


def _data(seed: int):
    from sctbr.experiments._profiles import get_profile
    from sctbr.experiments._real import _latent_genes, _prepare, _semi

    prof = get_profile("local")
    prepared, groupby, _ = _prepare(None, None, prof, 0, "subclusters")
    genes = _latent_genes(prepared, "weakly_correlated", prof)
    return _semi(prepared, groupby, 1, prof, seed, genes), groupby


def fit_variant(seed: int, name: str, kwargs: dict) -> dict:
    import sctbr
    from sctbr.experiments._real import span_r2

    semi, groupby = _data(seed)
    z, y = semi.obsm["Z_true"], semi.obs["y"].to_numpy()
    kwargs = dict(kwargs)
    train = {"enable_progress_bar": False, **kwargs.pop("train", {})}
    res = sctbr.tl.fit(
        semi, groupby=groupby, n_latent=z.shape[1], random_state=seed, accelerator="cpu", train_kwargs=train, **kwargs
    )
    split, pred = np.asarray(res.split).astype(str), np.asarray(res.prediction).ravel()
    row = {"seed": seed, "variant": name, "y_var": round(float(y.var()), 2)}
    for part in ("train", "validation"):
        m = split == part
        row[f"{part}_mse"] = round(float(np.mean((pred[m] - y[m]) ** 2)), 3)
        row[f"{part}_mcc"] = round(sctbr.metrics.mcc(z[m], res.latents[m]), 3)
        row[f"{part}_span_r2"] = round(span_r2(z[m], res.latents[m]), 3)
    return row


def oracle(seed: int) -> dict:
    from l1_oracle import l1_with_free_nodes, mixed_truth

    import sctbr
    from sctbr.metrics import mcc
    from sctbr.model import refine_basis

    semi, groupby = _data(seed)
    tree = sctbr.EnvironmentTree.coerce(semi.uns["environment_tree"])
    parent = np.array([-1] + [tree.node_index([p])[0] for p, _ in tree.arcs], dtype=int)
    observed = np.isin(np.asarray(tree.nodes), semi.obs[groupby].astype(str).unique())
    if not np.array_equal(np.asarray(semi.uns["simulation"]["nodes"]).astype(str), np.asarray(tree.nodes).astype(str)):
        raise RuntimeError("the simulation's node order differs from the tree's")
    truth = mixed_truth(semi.obsm["Z_true"], semi.uns["simulation"]["weights"], seed)
    zs, w, zm, heads = (truth[key] for key in ("zs", "w_true", "zm", "heads"))
    row = {
        "seed": seed,
        "nodes": len(parent),
        "observed": int(observed.sum()),
        "mixed_mcc": round(mcc(zs, zm), 3),
        "truth_penalty": round(l1_with_free_nodes(w, parent, observed), 3),
    }
    for lp in (False, True):
        m, _, found, _ = refine_basis(heads, parent, observed, truth["corr"], random_state=seed, lp_start=lp)
        key = "lp" if lp else "plain"
        row[f"{key}_mcc"] = round(mcc(zs, zm @ m), 3)
        row[f"{key}_penalty"] = round(found, 3)
    return row


def main(argv=None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default='{"default": {}}', help="JSON: name -> keyword arguments of tl.fit")
    p.add_argument("--oracle", action="store_true", help="the basis refinement on the true heads instead")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    for seed in (int(s) for s in args.seeds.split(",")):
        if args.oracle:
            print(json.dumps(oracle(seed)), flush=True)
            continue
        for name, kwargs in json.loads(args.variants).items():
            print(json.dumps(fit_variant(seed, name, kwargs)), flush=True)


if __name__ == "__main__":
    main()
