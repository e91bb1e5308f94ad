"""Gene lists used by the paper's semi-synthetic experiments."""

from __future__ import annotations

from anndata import AnnData

#: Human house-keeping genes of Eisenberg & Levanon (2013), Trends Genet. 29(10):569-574, as used by the TBR paper.
HOUSE_KEEPING_GENES: tuple[str, ...] = (
    "C1orf43",
    "CHMP2A",
    "EMC7",
    "GPI",
    "PSMB2",
    "PSMB4",
    "RAB7A",
    "REEP5",
    "SNRPD3",
    "VCP",
    "VPS29",
)
#: House-keeping genes the paper drops as weakly regulated.
WEAKLY_REGULATED: tuple[str, ...] = ("GPI", "RAB7A")


def house_keeping_genes(*, drop_weak: bool = True) -> list[str]:
    """The house-keeping genes whose expression the paper holds out as latents.

    The eleven human house-keeping genes of Eisenberg & Levanon (2013): C1orf43, CHMP2A, EMC7, GPI, PSMB2,
    PSMB4, RAB7A, REEP5, SNRPD3, VCP and VPS29.

    Parameters
    ----------
    drop_weak
        Drop GPI and RAB7A, which the paper leaves out as weakly regulated (nine genes remain).

    Returns
    -------
    Gene symbols.

    Examples
    --------
    >>> import sctbr
    >>> len(sctbr.datasets.house_keeping_genes()), len(sctbr.datasets.house_keeping_genes(drop_weak=False))
    (9, 11)
    """
    from sctbr._validation import check_bool

    check_bool("drop_weak", drop_weak)
    return [g for g in HOUSE_KEEPING_GENES if not (drop_weak and g in WEAKLY_REGULATED)]


def weakly_correlated_genes(
    adata,
    n_genes: int = 5,
    *,
    layer: str | None = "magic",
    max_corr: float = 0.3,
    min_regulators: int = 3,
    min_fraction: float = 0.1,
    min_r2: float | None = None,
    sources=None,
    exclude=None,
    random_state: int = 0,
) -> list[str]:
    """Latent genes for :func:`semisynthetic` that are weakly correlated with each other, chosen greedily.

    House-keeping genes are strongly co-expressed (after MAGIC their pairwise absolute correlations average about
    0.57 on PBMC3k), so that random mixtures of them already score a high MCC. This rule picks genes that are
    not: a gene is a *candidate* if it is detected (nonzero in ``adata.X``, the counts) in at least
    ``min_fraction`` of the cells, varies in ``layer``, and has at least ``min_regulators`` regulators
    (:func:`regulators`) among the other genes of ``adata`` that vary in ``layer``. Candidates are visited by
    decreasing number of such regulators (ties: higher detection, then name) and a candidate is *kept* if the
    absolute Pearson correlation (in ``layer``) with every kept gene is below ``max_corr``, it regulates no kept
    gene, and no kept gene regulates it (a latent gene is never an input). With ``min_r2``, a candidate is also
    skipped unless the inputs predict it: the inputs being the regulators of the kept genes and of the candidate
    (what :func:`semisynthetic` will take as ``X``), the 5-fold cross-validated R² (:func:`regulator_r2`) of a
    least-squares fit of the candidate on them, in ``layer``, must be at least ``min_r2``. The inputs only grow
    as genes are kept, so every picked gene meets the rule on the final inputs too (up to cross-validation noise).
    A latent that the inputs do not determine cannot be recovered by any encoder and would make every method look
    unidentified. The search stops at ``n_genes``.

    Parameters
    ----------
    adata
        Cells x genes with counts in ``X`` and the (denoised, log-scale) expression in ``layer``.
    n_genes
        Number of genes to pick (fewer are returned, with a warning, if the candidates run out).
    layer
        Layer of the correlations (``None``: ``X``).
    max_corr
        Cap on the absolute correlation of every pair of picked genes.
    min_regulators
        Fewest regulators present in ``adata``.
    min_fraction
        Smallest fraction of cells with a nonzero count.
    min_r2
        Smallest cross-validated R² of the gene on the inputs (its regulators and the kept genes'; ``None``: no
        such rule).
    sources
        Resources of the regulator table, as in :func:`regulators`.
    exclude
        Genes never picked.
    random_state
        Seed of the cross-validation folds of ``min_r2``.

    Returns
    -------
    The picked genes, in the order they were picked.

    Examples
    --------
    >>> import sctbr
    >>> adata = sctbr.datasets.pbmc3k()
    >>> sctbr.pp.magic(adata, library_size="total_counts")  # doctest: +SKIP
    >>> genes = sctbr.datasets.weakly_correlated_genes(adata, 5)  # doctest: +SKIP
    """
    import warnings

    import numpy as np
    import scipy.sparse as sp

    from sctbr._validation import check_fraction, check_int, check_names, check_str
    from sctbr.datasets._regulators import regulators
    from sctbr.datasets._semisynthetic import _columns

    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    check_int("n_genes", n_genes, fix="The number of latent genes to pick, e.g. 5.")
    check_str("layer", layer, none_ok=True, fix="A layer of adata (e.g. 'magic' after sctbr.pp.magic), or None.")
    check_fraction("max_corr", max_corr, zero_ok=False, fix="The cap on the absolute correlation, e.g. 0.3.")
    check_int("min_regulators", min_regulators, low=0, fix="The fewest regulators in adata, e.g. 3.")
    check_fraction("min_fraction", min_fraction, fix="The smallest fraction of cells with a count, e.g. 0.1.")
    check_names("sources", sources, none_ok=True, fix="Resource names of sctbr.datasets.regulators, or None.")
    check_names("exclude", exclude, none_ok=True, fix="Gene names never picked, or None.")
    if min_r2 is not None:
        check_fraction("min_r2", min_r2, fix="The smallest cross-validated R² of a gene on the inputs, e.g. 0.8.")
    check_int("random_state", random_state, low=0, fix="An integer seed, e.g. 0.")
    if layer is not None and layer not in adata.layers:
        hint = " Run sctbr.pp.magic(adata) first." if layer == "magic" else ""
        raise KeyError(f"Layer {layer!r} not found in adata.layers ({list(adata.layers)}).{hint}")
    expr = adata.X if layer is None else adata.layers[layer]
    counts = adata.X
    detected = np.asarray((counts > 0).mean(axis=0)).ravel()
    sd = np.asarray(expr.toarray() if sp.issparse(expr) else expr, dtype=np.float64).std(axis=0)
    genes = [str(g) for g in adata.var_names]
    varying = {g for g, s in zip(genes, sd, strict=True) if s > 0}
    excluded = {str(g) for g in (exclude or [])}
    regs = regulators(genes, sources=sources)
    usable = {g: [tf for tf in regs[g] if tf != g and tf in varying] for g in genes}
    position = {g: i for i, g in enumerate(genes)}
    candidates = [
        g
        for g in genes
        if g in varying
        and g not in excluded
        and detected[position[g]] >= min_fraction
        and len(usable[g]) >= int(min_regulators)
    ]
    candidates.sort(key=lambda g: (-len(usable[g]), -detected[position[g]], g))
    kept: list[str] = []
    kept_cols: list[np.ndarray] = []
    inputs: set[str] = set()  # the regulators of the kept genes (with min_r2)
    for g in candidates:
        if len(kept) == int(n_genes):
            break
        if any(g in usable[h] or h in usable[g] for h in kept):
            continue
        col = _columns(adata, layer, [g]).ravel()
        col = (col - col.mean()) / col.std()
        if not all(abs(float(np.mean(col * other))) < max_corr for other in kept_cols):
            continue
        if min_r2 is not None:
            trial = inputs | set(usable[g])
            x = _columns(adata, layer, sorted(trial))
            if regulator_r2(x, col, random_state=random_state) < min_r2:
                continue
            inputs = trial
        kept.append(g)
        kept_cols.append(col)
    if len(kept) < int(n_genes):
        warnings.warn(
            f"Only {len(kept)} of {n_genes} genes meet the rule ({len(candidates)} candidates); relax `max_corr`, "
            "`min_regulators`, `min_fraction` or `min_r2`.",
            UserWarning,
            stacklevel=2,
        )
    return kept


def regulator_r2(inputs, target, *, n_folds: int = 5, random_state: int = 0) -> float:
    """Cross-validated R² of a least-squares fit (with intercept) of ``target`` on the columns of ``inputs``.

    The cells are split into ``n_folds`` folds at random; each fold is predicted by the fit on the others, and
    R² is one minus the pooled squared error over the variance of ``target``.

    Parameters
    ----------
    inputs
        Cells x regulators.
    target
        Expression of one gene (cells).
    n_folds
        Number of folds.
    random_state
        Seed of the folds.

    Returns
    -------
    The cross-validated R² (at most 1; negative when the fit predicts worse than the mean).

    Examples
    --------
    >>> import numpy as np
    >>> from sctbr.datasets import regulator_r2
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 3))
    >>> round(regulator_r2(x, x @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=500)), 2)
    1.0
    >>> bool(regulator_r2(x, rng.normal(size=500)) < 0.05)
    True
    """
    import numpy as np

    from sctbr._validation import check_int

    check_int("n_folds", n_folds, low=2, fix="The number of cross-validation folds, e.g. 5.")
    check_int("random_state", random_state, low=0, fix="An integer seed, e.g. 0.")
    x = np.asarray(inputs, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"`inputs` must be cells x regulators with one row per value of `target`; got {x.shape}, {y.shape}."
        )
    if y.shape[0] < 2 * n_folds:
        raise ValueError(
            f"At least {2 * n_folds} cells are needed for {n_folds}-fold cross-validation, got {y.shape[0]}."
        )
    folds = np.random.default_rng(random_state).permutation(y.shape[0]) % n_folds
    design = np.column_stack([np.ones(len(y)), x])
    pred = np.empty_like(y)
    for f in range(n_folds):
        test = folds == f
        coef = np.linalg.lstsq(design[~test], y[~test], rcond=None)[0]
        pred[test] = design[test] @ coef
    var = float(np.var(y))
    return 1.0 - float(np.mean((y - pred) ** 2)) / var if var > 0 else float("nan")
