"""sctbr's messages go through scanpy's logging: ``sc.settings.verbosity`` shows or hides them."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import scanpy as sc

import sctbr


@pytest.fixture
def scanpy_log():
    """scanpy's log written into a buffer, verbosity restored afterwards."""
    verbosity, logfile = sc.settings.verbosity, sc.settings.logfile
    buffer = io.StringIO()
    sc.settings.logfile = buffer
    yield buffer
    sc.settings.verbosity = verbosity
    sc.settings.logfile = logfile


@pytest.mark.parametrize(("verbosity", "shown"), [("warning", False), ("info", True), ("debug", True)])
def test_verbosity_controls_messages(small_adata, scanpy_log, verbosity, shown):
    sc.settings.verbosity = verbosity
    sctbr.pp.subsample(small_adata, "environment", max_cells=10)
    assert ("subsample: kept" in scanpy_log.getvalue()) is shown


def test_no_bare_stdlib_loggers():
    """No module of sctbr logs through its own stdlib logger (only third-party loggers are silenced by name)."""
    root = Path(sctbr.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "getLogger(__name__)" in path.read_text() or "logger.info(" in path.read_text()
    ]
    assert offenders == []
    assert not logging.getLogger("sctbr").handlers
