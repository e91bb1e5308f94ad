"""GOLDEN FIXTURE: the default fit reproduces ``tests/golden/default_fit.npz`` within 1e-5.

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
    assert sorted(got) == sorted(expected.files), "rerun tests/golden/make_golden.py: the fixture's arrays changed"
    for name in expected.files:
        assert got[name].shape == expected[name].shape, name
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-5, err_msg=name)
