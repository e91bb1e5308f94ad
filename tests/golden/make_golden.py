"""Record the golden fixture of the default fit: ``python tests/golden/make_golden.py``.

The single source of ``tests/golden/default_fit.npz``: :func:`golden_arrays` runs the default ``sctbr.tl.tbr`` and
``sctbr.tl.baseline`` calls on a small simulation, on CPU with a fixed seed, and returns the latents (``obsm``),
deltas, environment weights and predictions they write. ``tests/test_golden.py`` reruns the same function and
compares with the file within 1e-5, so a refactoring that must not change the numbers is checked against it.

Regenerate the file (and commit it with the reason) only when the numerics change on purpose, e.g. a new basis
refinement: ``PYTHONPATH=. OMP_NUM_THREADS=1 python tests/golden/make_golden.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: The fixture this script writes and tests/test_golden.py reads.
FIXTURE = Path(__file__).with_name("default_fit.npz")
#: The small simulation (6 environments x 60 cells) and the short CPU fit the fixture records.
SIMULATION = {"depth": 2, "n_obs_per_env": 60, "random_state": 0}
FIT = {"max_epochs": 30, "accelerator": "cpu", "enable_progress_bar": False, "random_state": 0}


def golden_arrays() -> dict[str, np.ndarray]:
    """Run the default ``tl.tbr`` and ``tl.baseline`` calls and return what they wrote, as float64 arrays."""
    import torch

    import sctbr

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same numbers on every machine's CPU
    try:
        adata = sctbr.datasets.simulate(**SIMULATION)
        sctbr.tl.tbr(adata, **FIT)
        sctbr.tl.baseline(adata, **FIT)
    finally:
        torch.set_num_threads(threads)
    out = {}
    for key in ("tbr", "baseline"):
        run = adata.uns[key]
        out[f"{key}_latents"] = np.asarray(adata.obsm[f"X_{key}"], dtype=np.float64)
        out[f"{key}_prediction"] = adata.obs[f"{key}_prediction"].to_numpy(dtype=np.float64)
        out[f"{key}_environment_weights"] = run["environment_weights"].to_numpy(dtype=np.float64)
        out[f"{key}_deltas"] = run["deltas"].to_numpy(dtype=np.float64)
        out[f"{key}_lam"] = np.asarray(run["params"]["lam"], dtype=np.float64)
    return out


def main() -> None:
    arrays = golden_arrays()
    np.savez_compressed(FIXTURE, **arrays)
    print(
        f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes): " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    )


if __name__ == "__main__":
    main()
