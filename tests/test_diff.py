"""diff between flash dumps: emulated OTAs and boots, real merged flashes, layout changes, speed, CLI."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.flash import Flash
from esp_ota_emu.flashdiff import diff_flashes
from esp_ota_emu.local_ota import ota_from_file
from esp_ota_emu.mkflash import build_flash

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "firmware_samples"
TWO_OTA = REPO / "partitions" / "two_ota_4MB.csv"
FOUR_OTA_16MB = REPO / "partitions" / "four_ota_16MB.csv"


@pytest.fixture()
def bootloader(realdata) -> Path:
    return realdata / "esptool" / "images" / "bootloader_esp32_v5_2.bin"


@pytest.fixture()
def v1_flash(tmp_path, bootloader) -> Path:
    return build_flash(tmp_path / "v1.bin", partitions=TWO_OTA, bootloader=bootloader,
                       apps={"ota_0": SAMPLES / "sample_v1.bin"})


def copy(src: Path, name: str) -> Path:
    dst = src.with_name(name)
    shutil.copyfile(src, dst)
    return dst


def described(changes) -> list[str]:
    return [c.describe() for c in changes]


def test_identical(v1_flash):
    assert diff_flashes(v1_flash, copy(v1_flash, "same.bin")) == []


def test_ota_then_first_boot(v1_flash):
    """Power-on, an OTA with rollback on, then the first boot of the new app: each step's bytes, named."""
    powered = copy(v1_flash, "powered.bin")
    with Device.open(powered, rollback=True) as dev:
        assert dev.boot(power_on=True).booted.label == "ota_0"
    # blank otadata with rollback on: the bootloader records the slot it boots as VALID in entry 0
    assert described(diff_flashes(v1_flash, powered)) == [
        "otadata sector 0: seq blank -> 1, state UNDEFINED -> VALID, crc bad -> ok"
    ]

    after_ota = copy(powered, "ota.bin")
    shutil.copyfile(f"{powered}.emu.json", f"{after_ota}.emu.json")
    with Device.open(after_ota) as dev:
        assert ota_from_file(dev, SAMPLES / "sample_v2.bin").label == "ota_1"
    changes = diff_flashes(powered, after_ota)
    assert [c.structure for c in changes] == ["otadata sector 1", "app ota_1"]
    assert changes[0].describe() == "otadata sector 1: seq blank -> 2, state UNDEFINED -> NEW, crc bad -> ok"
    assert changes[0].offset == 0xF000 and changes[0].end == 0x10000
    app = changes[1]
    assert app.details[0] == "image erased -> version 2.0.0 (esp-ota-emu-sample)"
    assert app.offset == 0x1F0000 and app.bytes_changed == sum(b != 0xFF for b in (SAMPLES / "sample_v2.bin").read_bytes())

    booted = copy(after_ota, "booted.bin")
    shutil.copyfile(f"{after_ota}.emu.json", f"{booted}.emu.json")
    with Device.open(booted) as dev:
        assert dev.boot().booted.label == "ota_1"
    assert described(diff_flashes(after_ota, booted)) == [
        "otadata sector 1: seq 2 -> 2, state NEW -> PENDING_VERIFY"
    ]


def test_broken_update_and_bootloader_header(tmp_path, bootloader, v1_flash):
    other = build_flash(tmp_path / "other.bin", partitions=TWO_OTA, bootloader=bootloader, flash_size="keep",
                        apps={"ota_0": SAMPLES / "sample_v1.bin", "ota_1": SAMPLES / "sample_broken.bin"})
    changes = {c.structure: c for c in diff_flashes(v1_flash, other)}
    assert changes["bootloader"].details[0] == "header flash size 4MB -> 2MB"
    assert changes["app ota_1"].details[:2] == (
        "image erased -> version 2.0.0 (esp-ota-emu-sample)",
        "image invalid (SHA-256)",
    )
    assert set(changes) == {"bootloader", "app ota_1"}


def test_data_and_unpartitioned(v1_flash):
    b = copy(v1_flash, "b.bin")
    with Flash.open(b) as f:
        f.write_raw(0x9000, b"\x00" * 16)  # nvs
        f.write_raw(0x3D1234, b"abc")  # storage
        f.write_raw(0x200, b"\x01")  # before the bootloader: no partition
    changes = diff_flashes(v1_flash, b)
    assert [(c.offset, c.structure) for c in changes] == [
        (0x0, "unpartitioned"), (0x9000, "data nvs"), (0x3D1000, "data storage")
    ]
    assert changes[1].details == ("erased -> has data", "16 bytes changed in 1 sector (0x9000..0xa000)")
    assert changes[2].bytes_changed == 3 and changes[0].bytes_changed == 1


def test_partition_table_change(tmp_path, bootloader, v1_flash):
    csv = tmp_path / "t.csv"
    csv.write_text(TWO_OTA.read_text().replace("storage,   data, spiffs,   0x3d0000, 0x20000,",
                                               "storage,   data, fat,      0x3d0000, 0x10000,\n"
                                               "extra,     data, nvs,      0x3e0000, 0x10000,"))
    other = build_flash(tmp_path / "o.bin", partitions=csv, bootloader=bootloader,
                        apps={"ota_0": SAMPLES / "sample_v1.bin"})
    (table,) = diff_flashes(v1_flash, other)
    assert table.structure == "partition table"
    assert table.details == (
        "added extra (data/nvs at 0x3e0000, 0x10000 bytes)",
        "storage subtype spiffs -> fat",
        "storage size 0x20000 -> 0x10000",
    )


def test_real_merged_flash_against_boot_app0_version(tmp_path, realdata):
    """The derived Arduino flash is fivef's merged image plus boot_app0.bin at 0xe000 (MANIFEST facts)."""
    merged = (realdata / "projects" / "esp32_merged_fivef_ServoDriver" / "merged-firmware.bin").read_bytes()
    plain = tmp_path / "plain.bin"
    plain.write_bytes(merged + b"\xff" * ((4 << 20) - len(merged)))
    derived = realdata / "derived" / "esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"
    assert described(diff_flashes(plain, derived)) == [
        "otadata sector 0: seq blank -> 1, state UNDEFINED -> UNDEFINED, crc bad -> ok",
        "otadata sector 1: seq blank -> 0, state UNDEFINED -> UNDEFINED, crc bad -> ok",
    ]


def test_size_change(tmp_path, bootloader, v1_flash):
    bigger = build_flash(tmp_path / "8.bin", partitions=TWO_OTA, bootloader=bootloader, size="8MB",
                         flash_size="4MB", apps={"ota_0": SAMPLES / "sample_v1.bin"})
    (change,) = diff_flashes(v1_flash, bigger)
    assert change.structure == "flash size"
    assert change.details == ("4MB -> 8MB", "B has 0x400000 more bytes, all erased")


def test_fast_on_16mb(tmp_path, bootloader):
    a = build_flash(tmp_path / "a.bin", partitions=FOUR_OTA_16MB, bootloader=bootloader, size="16MB",
                    apps={"ota_0": SAMPLES / "sample_v1.bin"})
    b = copy(a, "b.bin")
    with Flash.open(b) as f:
        f.write_raw(0xC10000, os.urandom(0x3E0000))  # the whole 4 MB storage partition
        f.write_raw(0xFF0000, b"core")
    t0 = time.perf_counter()
    changes = diff_flashes(a, b)
    elapsed = time.perf_counter() - t0
    assert [c.structure for c in changes] == ["data storage", "data coredump"]
    assert changes[0].sectors_changed == 0x3E0 and changes[0].bytes_changed > 0x3E0000 * 0.99
    assert elapsed < 5, elapsed
    t0 = time.perf_counter()
    assert diff_flashes(a, copy(a, "c.bin")) == []
    assert time.perf_counter() - t0 < 2


def test_cli(v1_flash, tmp_path):
    runner = CliRunner()
    same = runner.invoke(cli, ["diff", str(v1_flash), str(copy(v1_flash, "s.bin"))])
    assert same.exit_code == 0 and "identical" in same.output
    b = copy(v1_flash, "b.bin")
    with Flash.open(b) as f:
        f.write_raw(0xF000, bytes.fromhex("03000000") + b"\xff" * 24 + bytes.fromhex("11504aed"))
    text = runner.invoke(cli, ["diff", str(v1_flash), str(b)])
    assert text.exit_code == 1
    assert text.output == "0x00f000..0x010000 otadata sector 1: seq blank -> 3, state UNDEFINED -> UNDEFINED, crc bad -> ok\n"
    js = runner.invoke(cli, ["diff", str(v1_flash), str(b), "--json"])
    assert js.exit_code == 1
    out = json.loads(js.output)
    assert out["identical"] is False and out["changes"][0]["offset"] == 0xF000
    missing = runner.invoke(cli, ["diff", str(v1_flash), str(tmp_path / "nope.bin")])
    assert missing.exit_code == 3 and missing.output.startswith("error: cannot open flash file")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert runner.invoke(cli, ["diff", str(empty), str(v1_flash)]).exit_code == 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(
    st.tuples(st.integers(0, (4 << 20) - 64), st.binary(min_size=1, max_size=64)), min_size=1, max_size=8,
))
def test_changes_cover_exactly_the_changed_bytes(v1_flash, writes):
    """Whatever is changed (outside the table sector, so both sides share one layout), the changes are
    disjoint, in order, cover every differing byte and count each exactly once."""
    b = copy(v1_flash, "h.bin")
    touched = set()
    with Flash.open(b) as f:
        for offset, data in writes:
            if offset + len(data) <= 0x8000 or offset >= 0x9000:
                f.write_raw(offset, data)
                touched.update(range(offset, offset + len(data)))
    a_bytes, b_bytes = v1_flash.read_bytes(), b.read_bytes()
    differing = sorted(i for i in touched if a_bytes[i] != b_bytes[i])
    changes = diff_flashes(v1_flash, b)
    assert sum(c.bytes_changed for c in changes) == len(differing)
    assert all(x.end <= y.offset for x, y in zip(changes, changes[1:]))
    assert all(any(c.offset <= i < c.end for c in changes) for i in differing)
