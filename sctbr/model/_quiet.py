"""Quiet fits: Lightning's banners and tips, and scvi-tools' misleading failure message, kept out of sctbr's fits.

Applied around each fit only (the Trainer's construction and its one run over all phases), and restored
afterwards, so that Lightning and scvi-tools used outside sctbr behave as usual:

- Lightning's info messages (``GPU available: ...``, ``TPU available: ...``, the ``litlogger`` tip, ```Trainer.fit`
  stopped```) are hidden while ``scanpy.settings.verbosity`` is below ``debug``
  (loggers ``lightning.pytorch``/``lightning.fabric`` raised to WARNING for the fit);
- its tips issued as warnings (the number of training batches smaller than the logging interval, few data-loader
  workers, an unused GPU, modules in eval mode at the start of a model trained before: the training plan switches
  them to train mode in ``on_train_start``) and the deprecation warnings of torch's pytree that Lightning triggers
  (``isinstance(treespec, LeafSpec)``) are filtered for the fit, likewise below ``debug``;
- scvi-tools' ``TrainRunner`` prints ``Exception raised during training. <class 'NameError'> <error>`` before
  re-raising any error from ``Trainer.fit`` (it prints the class ``NameError`` itself, whatever the error). That
  line is always dropped; the real error propagates unchanged, with its traceback.
"""

from __future__ import annotations

import builtins
import logging
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from scvi.train import TrainRunner

#: Lightning's loggers (the ``lightning`` package and the standalone ``pytorch_lightning``/``lightning_fabric``).
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")

#: (message regex, category) of the warnings filtered during a fit.
LIGHTNING_WARNINGS = (
    (r"The number of training batches .* is smaller than the logging interval", Warning),
    (r"The '\w+' does not have many workers", Warning),
    (r"GPU available but not used", Warning),
    # a module trained before starts in scvi-tools' eval mode; TBRTrainingPlan.on_train_start switches it to train mode
    (r"Found \d+ module\(s\) in eval mode at the start of training", Warning),
    (r"TPU available but not used", Warning),
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
)

_SCVI_FAILURE_PRINT = "Exception raised during training."


def _verbose() -> bool:
    """Whether scanpy's verbosity asks for everything (``debug``): then Lightning's messages are shown."""
    try:
        import scanpy as sc

        return int(sc.settings.verbosity) >= 4
    except Exception:  # pragma: no cover - scanpy is a dependency; never let the check break a fit
        return False


@contextmanager
def _quiet_loggers(names=LIGHTNING_LOGGERS) -> Iterator[None]:
    changed = []
    for name in names:
        log = logging.getLogger(name)
        if log.getEffectiveLevel() < logging.WARNING:
            changed.append((log, log.level))
            log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in changed:
            log.setLevel(level)


@contextmanager
def _quiet_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        for message, category in LIGHTNING_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@contextmanager
def no_scvi_failure_print() -> Iterator[None]:
    """Drop scvi-tools' ``print("Exception raised during training.", NameError, e)`` (scvi.train._trainrunner).

    A module-level ``print`` in ``scvi.train._trainrunner`` shadows the builtin for that module only, and passes
    every other call through; the module is restored on exit.
    """
    try:
        from scvi.train import _trainrunner as module
    except ImportError:  # pragma: no cover - a scvi-tools version without the module has no such print
        yield
        return
    missing = object()
    before = module.__dict__.get("print", missing)
    forward = builtins.print if before is missing else before

    def _print(*args, **kwargs):
        if args and args[0] == _SCVI_FAILURE_PRINT:
            return
        forward(*args, **kwargs)

    module.print = _print
    try:
        yield
    finally:
        if before is missing:
            module.__dict__.pop("print", None)
        else:
            module.print = before


@contextmanager
def quiet_training() -> Iterator[None]:
    """Everything above, for one fit (all its phases)."""
    with ExitStack() as stack:
        stack.enter_context(no_scvi_failure_print())
        if not _verbose():
            stack.enter_context(_quiet_loggers())
            stack.enter_context(_quiet_warnings())
        yield


class QuietTrainRunner(TrainRunner):
    """scvi-tools' :class:`~scvi.train.TrainRunner`, constructed and run within :func:`quiet_training`."""

    def __init__(self, *args, **kwargs):
        with quiet_training():
            super().__init__(*args, **kwargs)

    def __call__(self):
        with quiet_training():
            return super().__call__()
