"""Shared docstring snippets (as scanpy's ``_docs``): parameter blocks that several public functions document.

A docstring names a snippet with a placeholder alone on its line, e.g. ``    {tbr_training}``; :func:`doc_params`
replaces it with the snippet, indented like the placeholder. Other braces in the docstring (``X_{key_added}``) are
left alone, so docstrings need no escaping.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=Callable)

#: Parameter blocks, written at column 0 (a name line, then its description indented by four spaces).
SNIPPETS: dict[str, str] = {
    # -- sctbr.tl.tbr / sctbr.tl.baseline / sctbr.tl.fit ------------------------------------------------------
    "tbr_data": """\
adata
    Cells x inputs (e.g. transcription-factor expression). Left untouched if anything fails.
target
    Column of ``adata.obs`` to predict: numeric, or binary (boolean, 0/1 or a two-level categorical, fitted with
    the logistic loss; a categorical with more levels raises an error). A list of columns fits one head tree
    per target on shared latents (losses and penalties add). Defaults to the target recorded by sctbr's
    simulators.
groupby
    Categorical column of ``adata.obs`` with each cell's environment. Defaults to the column the stored
    tree was built from.""",
    "tbr_tree": """\
tree
    A key of ``adata.uns``, a child->parent mapping, a Newick string, a networkx DiGraph or an
    :class:`~sctbr.EnvironmentTree`. ``None`` uses the tree stored by :func:`sctbr.pp.environment_tree`
    (or a simulator).""",
    "tbr_model": """\
n_latent
    Number of latents.
lam
    Sparsity weight on the arc changes, relative to the standardised target's variance, or ``"auto"``: fit a
    warm-started path of values (``lam_grid``, default 1e-4 to 1e-1) and keep the largest whose validation
    error is within one standard error of the path's best (the lasso's one-standard-error rule; see
    :meth:`sctbr.model.TBR.train`). On simulations it took about 1.6x the time of a fixed-lambda fit and did
    not beat the default 1e-3 on MCC (slightly lower at k = 1); see docs/training.md.
loss
    ``"auto"`` (logistic for a binary target, squared error otherwise), ``"mse"`` or ``"logistic"``; with
    several targets, one value for all or one per target.
penalty
    ``"l1"``, or ``"log"`` for an l0-like penalty minimised by iteratively reweighted l1.
hidden
    Hidden layer widths of the encoder.""",
    "tbr_inputs": """\
var_names
    Subset of ``adata.var_names`` to use as inputs.
layer
    Layer with the inputs (default ``adata.X``).""",
    "tbr_key_added": """\
key_added
    Where the results go, as scanpy's ``key_added`` (``sc.tl.umap``): ``None`` writes the default names
    (``obsm["X_tbr"]``, ``uns["tbr"]``; ``X_baseline``/``baseline`` for the baseline), a name writes
    ``obsm[key_added]`` and ``uns[key_added]``. The ``obs`` columns take the ``uns`` key as their stem (``obs["tbr_prediction"]``,
    ``obs["tbr_split"]``). The full table: "Where results go" in the API reference (docs/api.md).""",
    "tbr_training": """\
max_epochs
    Epochs; ``None`` picks about 20 000 optimiser steps (at most 300 epochs).
lr
    Initial learning rate of Adam (cosine decay); ``None``: 3e-3, scaled by ``sqrt(batch_size / 128)`` when
    ``batch_size`` is also ``None``.
batch_size
    Cells per batch; ``None``: 128; from 8 192 training cells on 512, from 16 384 on 1 024
    (:doc:`/training`, "Speed").
train_size, validation_size
    Fractions of every environment's cells for training and validation.""",
    "tbr_restarts": """\
n_restarts
    Fits from different initialisations; the one with the lowest penalised validation objective is kept.""",
    "tbr_device": """\
accelerator, devices
    Lightning's device selection (``"auto"``: GPU when present).""",
    "tbr_seed": """\
random_state
    Seed of initialisation, split and batch order; the same seed gives the same latents on CPU.""",
    # -- sctbr.tl.select_n_latent / sctbr.tl.stability -----------------------------------------------------------
    "inplace_key_added": """\
key_added
    With ``inplace=True`` the result goes to ``adata.uns[key_added]`` (``None``: the tool's default name), as in
    "Where results go" in the API reference (docs/api.md).""",
    "fit_key": """\
key
    The fit to read: its ``uns`` key, i.e. the ``key_added`` it was given, or ``"tbr"`` / ``"baseline"`` for
    ``key_added=None`` ("Where results go" in the API reference, docs/api.md).""",
    # -- sctbr.experiments ------------------------------------------------------------------------------------
    "experiment_run": """\
profile
    ``"quick"``, ``"local"``, ``"paper"`` or a :class:`~sctbr.experiments.Profile`.
random_state
    Seed of the first repetition (repetition ``r`` uses ``random_state + r`` for the data and the fits).
accelerator
    Lightning's accelerator (``"auto"``: a GPU when present).
**overrides
    Fields of :class:`~sctbr.experiments.Profile` to change, e.g. ``ks=(0, 1), n_repeats=1``.""",
    # -- sctbr.pl ---------------------------------------------------------------------------------------------
    "pl_results": """\
results
    sctbr's tidy results table, as the experiment functions return it: one row per method x setting x
    repetition, with columns ``method`` (``"tbr"``, ``"baseline"`` or any other name), ``k`` (sparsity
    level: number of changed latents per arc, or a rate), ``seed``, ``mcc``, ``test_mse`` and
    ``transfer_mse`` (NaN outside the transfer experiment), optionally ``n_latent``, ``fit_seconds`` and
    ``experiment``.""",
    "pl_results_order": """\
order
    Levels of ``x`` to draw, in this order (default: all, sorted).
hue_order
    Methods to draw, in this order (default: TBR, baseline, then the others).""",
    "pl_results_title": """\
title
    Axes title.
random_state
    Seed of the horizontal jitter of the points.""",
    "pl_ax": """\
ax
    Axes to draw into (e.g. one cell of a grid of plots), or None for a new figure. The axes shrinks inside its
    slot to make room for its legend and labels, so the plot never spills into its neighbours.""",
    "pl_show": """\
show
    Show the figure (``plt.show()``); ``None`` follows ``scanpy.settings.autoshow``. Pass ``show=False`` to get
    the Axes back, e.g. to draw several plots into one figure.
save
    Save the figure, as Scanpy does: ``True`` or a suffix such as ``"_fit.png"`` writes
    ``{sc.settings.figdir}/<plot name><suffix>``, the extension (``.png``, ``.pdf``, ``.svg``) choosing the format
    (default ``sc.settings.file_format_figs``). ``None`` follows ``scanpy.settings.autosave``.
return_fig
    Return the Figure, not shown (``save`` still writes it).""",
    "pl_returns": """\
The Axes if ``show=False``, the Figure if ``return_fig=True``, otherwise None (as Scanpy's plots).""",
}

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{(?P<name>\w+)\}[ \t]*$", re.MULTILINE)


def fill(doc: str, names: tuple[str, ...]) -> str:
    """``doc`` with every placeholder line ``{name}`` of ``names`` replaced by its snippet, indented alike."""
    unknown = [n for n in names if n not in SNIPPETS]
    if unknown:
        raise KeyError(f"Unknown docstring snippet(s) {unknown}; known: {sorted(SNIPPETS)}.")

    def sub(match: re.Match) -> str:
        name = match["name"]
        if name not in names:
            return match[0]
        return "\n".join(match["indent"] + line if line else line for line in SNIPPETS[name].splitlines())

    filled = _PLACEHOLDER.sub(sub, doc)
    left = [n for n in names if "{" + n + "}" in filled]
    if left or filled == doc:
        raise ValueError(f"Docstring snippet(s) {left or list(names)} have no placeholder line in the docstring.")
    return filled


def doc_params(*names: str) -> Callable[[T], T]:
    """Decorator: fill the snippets ``names`` into the decorated object's docstring (see :func:`fill`)."""

    def decorate(obj: T) -> T:
        obj.__doc__ = fill(obj.__doc__ or "", names)
        return obj

    return decorate
