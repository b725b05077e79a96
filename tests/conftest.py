"""Shared test fixtures: the real-world data set beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata``: real binaries from public projects with golden outputs of Espressif's tools."""
    assert REALDATA.is_dir(), f"the real-data set is missing: {REALDATA}"
    return REALDATA
