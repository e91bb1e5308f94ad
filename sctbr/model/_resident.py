"""Training data resident on the training device: the registered arrays copied to the device once per fit.

On an accelerator, cutting batches on the host costs one host-to-device copy per batch (and for this tiny network
those copies, not the arithmetic, set the pace). When the arrays fit, :func:`resident_arrays` copies inputs,
target and environment codes to the device once, and the batches are cut there by index (``index_select``), so
Lightning's per-batch transfer is a no-op. The rule:

- only arrays in memory: the inputs of a streamed backed AnnData stay on disk (host path);
- the copy must take at most :data:`DEVICE_FRACTION` of the device's free memory (``torch.cuda.mem_get_info``),
  leaving the rest for the network, the optimiser and the batches; otherwise the host path, with a log message;
- sparse inputs become dense on the device (copied in row blocks: the host never holds the dense matrix);
- on CPU nothing is copied: the host path already is the device path (dense inputs are used in place).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from sctbr import _logging as logg
from sctbr._constants import ENV_KEY, X_KEY, Y_KEY
from sctbr.model._backed import BackedRows

#: Largest fraction of the device's free memory that the resident arrays may take.
DEVICE_FRACTION = 0.5
#: Bytes per block when dense rows of a sparse matrix are copied to the device.
COPY_BLOCK_BYTES = 64 * 2**20


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (``None`` where torch cannot tell)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":  # pragma: no cover - Apple GPUs only
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return None
    return None


def resident_bytes(data: dict) -> int:
    """Bytes the arrays of :func:`~sctbr.model._data.prepare_arrays` take on a device (inputs dense float32)."""
    n, p = data[X_KEY].shape
    return int(n) * int(p) * 4 + sum(data[k].numel() * data[k].element_size() for k in (Y_KEY, ENV_KEY))


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def resident_arrays(data: dict, device, *, free_bytes: int | None = None) -> dict | None:
    """Copy of ``data`` on ``device``, or ``None`` (with a log message) when it stays on the host.

    Parameters
    ----------
    data
        Arrays from :func:`~sctbr.model._data.prepare_arrays`.
    device
        Target device. On CPU, dense inputs, target and codes are the host tensors themselves (no copy).
    free_bytes
        Free memory of ``device`` (``None``: asked from torch where it can tell, else no check).
    """
    device = torch.device(device)
    x = data[X_KEY]
    if isinstance(x, BackedRows):
        logg.info(f"Training data stay on disk (backed='stream'): batches are read and copied to {device} per step.")
        return None
    need = resident_bytes(data)
    free = free_memory(device) if free_bytes is None else int(free_bytes)
    if free is not None and need > DEVICE_FRACTION * free:
        logg.info(
            f"Training data stay in host memory: they need {_mb(need)} on {device}, more than "
            f"{DEVICE_FRACTION:.0%} of its {_mb(free)} free; batches are copied to the device per step."
        )
        return None
    if sp.issparse(x):
        n, p = x.shape
        xd = torch.empty((n, p), dtype=torch.float32, device=device)
        step = max(1, COPY_BLOCK_BYTES // (4 * max(1, p)))
        for s in range(0, n, step):
            xd[s : s + step] = torch.from_numpy(np.asarray(x[s : s + step].toarray(), dtype=np.float32)).to(device)
    else:
        xd = x.to(device)
    logg.debug(f"Training data resident on {device} ({_mb(need)}): batches are cut there by index.")
    return {X_KEY: xd, Y_KEY: data[Y_KEY].to(device), ENV_KEY: data[ENV_KEY].to(device)}
