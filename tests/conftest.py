"""Shared test fixtures: the real-world data set beside the repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata``: real binaries from public projects with golden outputs of Espressif's tools."""
    assert REALDATA.is_dir(), f"the real-data set is missing: {REALDATA}"
    return REALDATA


# A real 4 MB Arduino-ESP32 (IDF 4.4.7) flash: bootloader, table with app0/app1, boot_app0 otadata, app in app0.
MERGED_4MB = "derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"
# A real ESP32 app (Arduino 1.0.6, IDF 3.3.5, no app descriptor), 357 KB.
START_COUNTER_APP = "arduino-esp32/v1.0.6_idf-v3.3.5/StartCounter.ino.bin"


@pytest.fixture
def merged_flash(realdata, tmp_path) -> Path:
    """A private copy of the real merged 4 MB flash, to write on."""
    path = tmp_path / "flash.bin"
    shutil.copyfile(realdata / MERGED_4MB, path)
    return path
