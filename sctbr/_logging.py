"""sctbr's messages go through scanpy's logging (:mod:`scanpy.logging`), so ``sc.settings.verbosity`` controls them.

``sc.settings.verbosity = "info"`` (or 3 and up) shows sctbr's progress notes, the default (``"warning"``) hides
them; warnings about the user's data are :func:`warnings.warn` (as in scanpy). scanpy is imported on the first
message, not with ``import sctbr``.

Examples
--------
>>> import scanpy as sc
>>> from sctbr import _logging as logg
>>> sc.settings.verbosity = "warning"
>>> _ = logg.info("hidden at scanpy's default verbosity")
"""

from __future__ import annotations

__all__ = ["debug", "fits_progress", "fits_progress_enabled", "info", "verbosity"]


def _logg():
    from scanpy import logging as logg

    return logg


def info(msg: str, **kwargs):
    """Log ``msg`` at scanpy's ``info`` level (shown with ``sc.settings.verbosity >= "info"``)."""
    return _logg().info(msg, **kwargs)


def debug(msg: str, **kwargs):
    """Log ``msg`` at scanpy's ``debug`` level."""
    return _logg().debug(msg, **kwargs)


def verbosity() -> int:
    """scanpy's verbosity as a number (0 error, 1 warning, 2 info, 3 hint, 4 debug)."""
    from scanpy import settings

    return int(settings.verbosity)


def fits_progress(total: int | None, desc: str, *, enabled: bool | None = None, unit: str = "fit"):
    """The outer progress bar over a tool's fits (``tqdm.auto``, as scvi-tools' default ``progress_bar_style``).

    ``enabled=None`` shows it at scanpy's default verbosity and above (``"warning"``); ``sc.settings.verbosity =
    "error"`` (0) hides it, as does ``enabled=False``. A hidden bar is tqdm's no-op bar (``update`` still works).
    """
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = verbosity() >= 1
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def fits_progress_enabled(fit_kwargs) -> bool:
    """Whether the tools' outer bar shows: not with the fits' own ``enable_progress_bar=False``, nor below verbosity 1."""
    return fit_kwargs.get("enable_progress_bar") is not False and verbosity() >= 1
