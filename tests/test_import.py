"""``import sctbr`` is light: torch, scvi-tools and Lightning load only with ``sctbr.tl``/``model``/``experiments``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scvi", "lightning", "pytorch_lightning")


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (importing this checkout's sctbr) and return the JSON it prints last."""
    env_path = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
    out = subprocess.run(
        [sys.executable, "-c", env_path + code], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _loaded(extra: str = "") -> str:
    return (
        "import json, sys\n"
        f"{extra}\n"
        f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules],"
        " 'file': sys.modules['sctbr'].__file__}))"
    )


def test_import_sctbr_is_light():
    res = _run(_loaded("import sctbr"))
    assert Path(res["file"]).resolve() == (ROOT / "sctbr" / "__init__.py").resolve()
    assert res["heavy"] == []


def test_light_subpackages_do_not_import_torch():
    code = _loaded(
        "import sctbr, sctbr.pp, sctbr.pl, sctbr.datasets, sctbr.metrics\n"
        "sctbr.EnvironmentTree, sctbr.pp.environment_tree, sctbr.pl.tree, sctbr.pl.causal_effects\n"
        "from sctbr import datasets, metrics, pl, pp"
    )
    assert _run(code)["heavy"] == []


@pytest.mark.parametrize("name", ["tl", "model", "experiments"])
def test_heavy_subpackages_load_on_access(name):
    code = (
        "import json, sys\nimport sctbr\n"
        f"before = 'sctbr.{name}' in sys.modules\n"
        f"mod = sctbr.{name}\n"
        "print(json.dumps({'before': before, 'after': mod.__name__, 'torch': 'torch' in sys.modules}))"
    )
    res = _run(code)
    assert res == {"before": False, "after": f"sctbr.{name}", "torch": True}


def test_lazy_attributes_are_reachable():
    code = (
        "import json, sctbr\n"
        "from sctbr import tl\n"
        "import sctbr.model as m\n"
        "print(json.dumps({'tbr': callable(sctbr.tl.tbr) and tl.tbr is sctbr.tl.tbr,"
        " 'TBR': m.TBR.__name__, 'dir': sorted(set(sctbr.__all__) - set(dir(sctbr))),"
        " 'all': all(hasattr(sctbr, n) for n in sctbr.__all__)}))"
    )
    assert _run(code) == {"tbr": True, "TBR": "TBR", "dir": [], "all": True}


def test_unknown_attribute_raises():
    import sctbr

    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        sctbr.not_a_module  # noqa: B018
