"""How many CPU threads torch uses during a fit (no oversubscription on a shared machine).

TBR's network is small: a step is a few matrix products of 128 cells. Several torch threads help little on a quiet
machine and collapse when the cores are busy (threads that wait on each other while another process holds a core).
:func:`fit_threads` picks the count for a fit; :func:`sctbr._utils.torch_threads` applies it and restores the user's setting.

With batches of at most ``ONE_THREAD_BATCH`` cells (every fit below 8 192 training cells) a fit uses one thread
unless told otherwise: a second thread gained 1.05x on a quiet 2-core machine (``benchmarks/threads.py``), and a
fixed count keeps the same seed giving the same numbers (sums split over another number of threads differ in their
last bits, which a fit can amplify). Larger batches gain from threads (1.35x at 512, 1.48x at 1 024), so there the
count follows the machine's load.
"""

from __future__ import annotations

import math
import os

import torch

#: Environment variable with an explicit thread count for fits (the ``num_threads`` argument wins over it).
ENV_VAR = "SCTBR_NUM_THREADS"
#: Largest batch size whose fits use one thread unless told otherwise (the default batch below 8 192 cells).
ONE_THREAD_BATCH = 128


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cores() -> float:
    """Cores kept busy by other processes, the larger of two estimates.

    The 1-minute load average less this process's own share (about 1 while it computes; it may have been idle, e.g.
    a notebook between cells, hence the second estimate), and the tasks runnable right now (``/proc/loadavg``'s
    fourth field, which counts the reading process) less this one.
    """
    estimates = [0.0]
    try:
        estimates.append(os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):
        pass
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        estimates.append(float(running - 1))
    except (OSError, ValueError, IndexError):
        pass
    return max(estimates)


def fit_threads(num_threads: int | None = None, batch_size: int | None = None) -> int:
    """The torch thread count of a fit.

    An explicit choice wins: ``num_threads``, else the environment variable ``SCTBR_NUM_THREADS``. Otherwise a fit
    with batches of at most ``ONE_THREAD_BATCH`` cells uses 1 thread (same seed, same numbers, whatever the load;
    module docstring). Otherwise the rule only ever lowers torch's current setting (``torch.get_num_threads()``,
    which follows ``OMP_NUM_THREADS`` or ``torch.set_num_threads``): at most the cores this process may use
    (``os.sched_getaffinity``), and at most the cores that other processes leave idle (the cores less the 1-minute
    load average not due to this process, rounded down), and at least 1. On a busy machine this is 1 thread.
    """
    if num_threads is None:
        value = os.environ.get(ENV_VAR, "").strip()
        if value:
            try:
                num_threads = int(value)
            except ValueError:
                raise ValueError(f"{ENV_VAR} must be a positive integer, got {value!r}.") from None
    if num_threads is not None:
        if isinstance(num_threads, bool) or int(num_threads) != num_threads or num_threads < 1:
            raise ValueError(f"`num_threads` must be a positive integer, got {num_threads!r}.")
        return int(num_threads)
    if batch_size is not None and batch_size <= ONE_THREAD_BATCH:
        return 1
    cores = available_cores()
    idle = math.floor(cores - busy_cores() + 1e-9)
    return max(1, min(torch.get_num_threads(), cores, idle))
