"""Fixtures of the display tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_dot(tmp_path, monkeypatch):
    """A PATH with no Graphviz on it, and no layout kept from earlier tests."""
    from nborch.display.svg import forget_layouts

    monkeypatch.setenv("PATH", str(tmp_path))
    forget_layouts()
    yield
    forget_layouts()
