"""Shared by every test, the notebooks under nbval included."""

from __future__ import annotations

import os
import shutil
import tempfile

collect_ignore_glob = ["tests/data/*"]  # fixture notebooks for the CLI tests, not examples to validate

_home: list[str] = []


def pytest_configure(config):
    """Runs record into a store: keep it out of the working tree. Set here, before any kernel
    starts, so the notebooks' kernels inherit it too."""
    _home.append(tempfile.mkdtemp(prefix="nborch-home-"))
    _home.append(os.environ.get("NBORCH_HOME", ""))
    os.environ["NBORCH_HOME"] = _home[0]


def pytest_unconfigure(config):
    if _home:
        shutil.rmtree(_home[0], ignore_errors=True)
        if _home[1]:
            os.environ["NBORCH_HOME"] = _home[1]
        else:
            os.environ.pop("NBORCH_HOME", None)
        _home.clear()
