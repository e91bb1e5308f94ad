"""GOLDEN FIXTURE: the default fit reproduces ``tests/golden/default_fit.npz`` within 1e-5.

The baseline's arrays are compared on every machine; TBR's only on a CPU whose float32 kernels round like the one
that recorded the fixture (its ``signature``, ``make_golden.float_signature``): elsewhere the basis refinement turns
differences of ~1e-6 into another basis, and the test says so and skips that part.

The fixture records the latents, deltas, environment weights and predictions that the default ``sctbr.tl.tbr`` and
``sctbr.tl.baseline`` calls write on a small simulation (CPU, fixed seed). A refactoring must reproduce it; a change
of the numerics on purpose regenerates it with ``tests/golden/make_golden.py`` (the only source of the file).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SCRIPT = Path(__file__).parent / "golden" / "make_golden.py"


def _script():
    spec = importlib.util.spec_from_file_location("sctbr_make_golden", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.golden
def test_default_fit_reproduces_the_golden_fixture():
    script = _script()
    expected = np.load(script.FIXTURE)
    got = script.golden_arrays()
    arrays = [name for name in expected.files if name != "signature"]
    assert sorted(got) == sorted(arrays), "rerun tests/golden/make_golden.py: the fixture's arrays changed"
    same_cpu = str(expected["signature"]) == script.float_signature()
    for name in arrays:
        assert got[name].shape == expected[name].shape, name
        if name.startswith("baseline") or same_cpu:
            np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-5, err_msg=name)
    if not same_cpu:
        pytest.skip(
            "TBR arrays not compared: the fixture was recorded on a CPU whose float32 kernels round differently "
            f"(signature {expected['signature']} vs {script.float_signature()} here); the baseline's matched"
        )


def test_float_signature_is_deterministic():
    script = _script()
    assert script.float_signature() == script.float_signature()
