"""Record the golden fixture of the default fit: ``python tests/golden/make_golden.py``.

The single source of ``tests/golden/default_fit.npz``: :func:`golden_arrays` runs the default ``sctbr.tl.tbr`` and
``sctbr.tl.baseline`` calls on a small simulation, on CPU with a fixed seed, and returns the latents (``obsm``),
deltas, environment weights and predictions they write. ``tests/test_golden.py`` reruns the same function and
compares with the file within 1e-5, so a refactoring that must not change the numbers is checked against it.

Regenerate the file (and commit it with the reason) only when the numerics change on purpose, e.g. a new basis
refinement: ``PYTHONPATH=. OMP_NUM_THREADS=1 python tests/golden/make_golden.py``.

The TBR arrays are reproducible on one kind of CPU only: torch's float32 kernels round differently with other
instruction sets (AVX2, AVX-512, ...), the baseline's arrays move by ~1e-6 then, and TBR's basis refinement (a
choice among starts) and proximal zeros turn such differences into another basis (seen 2026-12-02: a fixture
recorded on the previous CI machine, TBR latents off by 7.5, baseline by 1.2e-6). So the fixture also stores
:func:`float_signature`, a digest of a small float32 training run on this CPU; the test compares the TBR arrays only
where the signature matches and the baseline's everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: The fixture this script writes and tests/test_golden.py reads.
FIXTURE = Path(__file__).with_name("default_fit.npz")
#: The small simulation (6 environments x 60 cells) and the short CPU fit the fixture records.
SIMULATION = {"depth": 2, "n_obs_per_env": 60, "random_state": 0}
FIT = {"max_epochs": 30, "accelerator": "cpu", "enable_progress_bar": False, "random_state": 0}


def float_signature() -> str:
    """A digest of this CPU's float32 arithmetic as torch uses it: an MLP trained by Adam for 20 steps, one thread.

    Equal on machines whose kernels round alike (where the default fit is reproduced exactly), different otherwise.
    """
    import hashlib

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():  # the global seed below leaves the caller's random state as it was
            g = torch.Generator().manual_seed(0)
            x, y = torch.randn(256, 40, generator=g), torch.randn(256, 1, generator=g)
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.LeakyReLU(), torch.nn.Linear(64, 1))
            opt = torch.optim.Adam(net.parameters(), lr=1e-2)
            for _ in range(20):
                loss = ((net(x) - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            raw = b"".join(p.detach().numpy().tobytes() for p in net.parameters())
    finally:
        torch.set_num_threads(threads)
    return hashlib.sha1(raw).hexdigest()[:16]


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
    np.savez_compressed(FIXTURE, signature=np.asarray(float_signature()), **arrays)
    print(
        f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes): " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    )


if __name__ == "__main__":
    main()
