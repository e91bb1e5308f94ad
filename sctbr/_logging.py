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

__all__ = ["debug", "info", "progress_enabled", "verbosity"]


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
