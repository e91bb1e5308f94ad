"""Gene lists used by the paper's semi-synthetic experiments."""

from __future__ import annotations

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
    return [g for g in HOUSE_KEEPING_GENES if not (drop_weak and g in WEAKLY_REGULATED)]
