"""The batch size, learning rate and stopping rule a fit uses when the user leaves them to sctbr.

Chosen by measurement (``benchmarks/small_data.py --recipes fixed_steps,default`` and
``benchmarks/profile_fit.py --compare-before``; :doc:`/training`, "Speed"):

- **Batch size.** 128 below ``LARGE_DATA`` training cells; from there on the largest power of two up to
  ``MAX_BATCH_SIZE`` that still gives ``MIN_STEPS_PER_EPOCH`` optimiser steps per epoch (512 from 8 192 training
  cells, 1 024 from 16 384). The epochs stay those of the ``max_epochs=None`` heuristic, so a larger batch does the
  same passes over the data in fewer, cheaper-per-cell steps (a CPU's matrix products are several times more
  efficient per cell at 512 than at 128; a GPU more so). A few hundred cells per environment (a few thousand
  training cells) keep batches of 128: larger ones leave too few steps (MCC fell on the small-data grid). At 1 024
  cells per batch with about 10 steps per epoch, a balanced tree with 1 000 cells per environment lost identification
  (MCC 0.93 against 0.98), hence the floor of 16 steps.
- **Learning rate.** With the policy's batch size, ``DEFAULT_LR * sqrt(batch_size / DEFAULT_BATCH_SIZE)``
  (square-root scaling for Adam); with a batch size the user gave, ``DEFAULT_LR`` (as before the policy: under DDP
  ``batch_size`` is per process, so scaling it would not follow the effective batch anyway).
- **Stopping.** From ``LARGE_DATA`` training cells on, each phase ends when the
  validation objective has not improved for ``PATIENCE`` epochs (:class:`~sctbr.model._phases.PhaseEarlyStopping`;
  only with validation cells and in one process). Small training sets run every phase to its end: on the
  small-data grid (300 cells per environment) the rule halved the time and helped the balanced tree (mean MCC
  0.928 -> 0.942) but cost leaves-only trees up to 0.15 on single fits (their latents keep improving after the
  validation error stalls).

An explicit ``batch_size``, ``lr`` or ``early_stopping`` always wins.
"""

from __future__ import annotations

import math

import numpy as np

#: Base learning rate (at ``DEFAULT_BATCH_SIZE``) and the batch size of small training sets.
DEFAULT_LR = 3e-3
DEFAULT_BATCH_SIZE = 128
#: Largest default batch size, and the fewest optimiser steps per epoch a larger default batch must leave.
MAX_BATCH_SIZE = 1024
MIN_STEPS_PER_EPOCH = 16
#: Training cells from which batches grow and the stopping rule is on.
LARGE_DATA = 8192
#: Epochs without improvement of the validation objective that end a phase.
PATIENCE = 20


def max_epochs_for(n_obs: int) -> int:
    """The default epochs of ``n_obs`` cells: about 300 for 10^4 cells, fewer for large data (at least 20 000 steps
    of ``DEFAULT_BATCH_SIZE`` cells at the default 80% training split, at most 300 epochs)."""
    steps_per_epoch = max(1, n_obs * 0.8 / DEFAULT_BATCH_SIZE)
    return int(np.clip(np.ceil(20_000 / steps_per_epoch), 20, 300))


def batch_size_for(n_train: int) -> int:
    """The default batch size for ``n_train`` training cells (per process)."""
    size = DEFAULT_BATCH_SIZE
    while n_train >= LARGE_DATA and size * 2 <= MAX_BATCH_SIZE and n_train / (size * 2) >= MIN_STEPS_PER_EPOCH:
        size *= 2
    return size


def lr_for(batch_size: int) -> float:
    """The default learning rate at ``batch_size``: square-root scaling from ``DEFAULT_LR`` at 128."""
    return DEFAULT_LR * math.sqrt(batch_size / DEFAULT_BATCH_SIZE)


def resolve(
    n_train: int, batch_size: int | None, lr: float | None, early_stopping: bool | None, *, can_stop: bool = True
) -> tuple[int, float, bool]:
    """``(batch_size, lr, early_stopping)`` of a fit: the user's values where given, the policy's otherwise.

    ``can_stop``: the fit has validation cells and runs in one process (the stopping rule's conditions).
    """
    if lr is None:
        lr = lr_for(batch_size_for(n_train)) if batch_size is None else DEFAULT_LR
    batch_size = batch_size_for(n_train) if batch_size is None else int(batch_size)
    if early_stopping is None:
        early_stopping = bool(can_stop and n_train >= LARGE_DATA)
    return batch_size, float(lr), bool(early_stopping)
