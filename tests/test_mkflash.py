"""mkflash against esptool merge-bin (the oracle), the spec's otadata vectors and real merged flashes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device, sidecar_path
from esp_ota_emu.errors import EspError, InputError
from esp_ota_emu.mkflash import build_flash, patch_flash_params, plan_flash
from esp_ota_emu.chips import chip_by_name

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "firmware_samples"
TWO_OTA = REPO / "partitions" / "two_ota_4MB.csv"
FACTORY_TWO_OTA = REPO / "partitions" / "factory_two_ota_4MB.csv"
FOUR_OTA_16MB = REPO / "partitions" / "four_ota_16MB.csv"
ESPTOOL = [sys.executable, "-m", "esptool"]

# ESP_FORMATS.md 12.1: "seq 2, state UNDEFINED" and "seq 1, state UNDEFINED" entries.
OTADATA_SEQ2 = bytes.fromhex("02000000" + "ff" * 20 + "ffffffff" + "7437f655")
OTADATA_SEQ1 = bytes.fromhex("01000000" + "ff" * 20 + "ffffffff" + "9a984347")


@pytest.fixture(scope="module")
def bl52(realdata) -> Path:
    """The IDF v5.2 esptool test bootloader: its header says 2 MB, DOUT, 40 MHz."""
    return realdata / "esptool" / "images" / "bootloader_esp32_v5_2.bin"


def esptool_merge(tmp_path: Path, name: str, pairs: list[tuple[int, Path | bytes]], *opts: str) -> bytes:
    """esptool merge-bin of (address, file) pairs; bytes are written to files first."""
    args = []
    for i, (addr, src) in enumerate(pairs):
        if isinstance(src, bytes):
            path = tmp_path / f"{name}_part{i}.bin"
            path.write_bytes(src)
            src = path
        args += [hex(addr), str(src)]
    out = tmp_path / f"{name}_esptool.bin"
    subprocess.run(
        [*ESPTOOL, "--chip", "esp32", "merge-bin", "-o", str(out), *opts, *args],
        check=True, capture_output=True,
    )
    return out.read_bytes()


def table_bin(tmp_path: Path, csv: Path) -> bytes:
    out = tmp_path / (csv.stem + ".bin")
    result = CliRunner().invoke(cli, ["partitions", str(csv), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def test_flash_equals_esptool_merge_bin(tmp_path, bl52):
    ours = build_flash(
        tmp_path / "flash.bin",
        partitions=TWO_OTA,
        bootloader=bl52,
        apps={"ota_0": SAMPLES / "sample_v1.bin", "ota_1": SAMPLES / "sample_v2.bin"},
        otadata="ota_1",
    )
    theirs = esptool_merge(
        tmp_path, "two_ota",
        [(0x1000, bl52), (0x8000, table_bin(tmp_path, TWO_OTA)), (0xE000, OTADATA_SEQ2),
         (0x10000, SAMPLES / "sample_v1.bin"), (0x1F0000, SAMPLES / "sample_v2.bin")],
        "--flash-size", "4MB", "--pad-to-size", "4MB",
    )
    assert ours.read_bytes() == theirs
    assert not sidecar_path(ours).exists()  # no settings given: nothing to remember


@pytest.mark.parametrize(
    "size, mode, freq",
    [("8MB", None, None), ("16MB", "dio", "80m"), ("2MB", "qio", "20m")],
)
def test_bootloader_header_patch_matches_esptool(tmp_path, bl52, size, mode, freq):
    raw = bl52.read_bytes()
    chip = chip_by_name("esp32")
    ours, patch = patch_flash_params(raw, chip, flash_size=size, flash_mode=mode or "keep", flash_freq=freq or "keep")
    opts = ["--flash-size", size]
    if mode:
        opts += ["--flash-mode", mode]
    if freq:
        opts += ["--flash-freq", freq]
    theirs = esptool_merge(tmp_path, "bl", [(0x1000, bl52)], *opts)[0x1000:]
    assert ours == theirs
    assert patch.sha256_recomputed
    # esptool recomputes the digest even when the header stays the same (2MB, mode/freq kept or changed)
    assert hashlib.sha256(ours[: len(ours) - 32]).digest() == ours[-32:]


def test_keep_leaves_bootloader_untouched(tmp_path, bl52):
    out = build_flash(tmp_path / "f.bin", partitions=TWO_OTA, bootloader=bl52, flash_size="keep")
    raw = bl52.read_bytes()
    assert out.read_bytes()[0x1000 : 0x1000 + len(raw)] == raw


def test_unpatched_2mb_bootloader_would_refuse_the_table(tmp_path, bl52):
    """The reason for patching: the bootloader reads its header's flash size as the chip size."""
    from esp_ota_emu.partitions import PartitionTable, PartitionTableInvalid

    out = build_flash(tmp_path / "f.bin", partitions=TWO_OTA, bootloader=bl52, flash_size="keep")
    table = out.read_bytes()[0x8000:0x8C00]
    with pytest.raises(PartitionTableInvalid, match="exceeds flash chip size 0x200000"):
        PartitionTable.from_binary(table, reader="bootloader", chip_size=2 << 20)
    patched = build_flash(tmp_path / "g.bin", partitions=TWO_OTA, bootloader=bl52).read_bytes()
    assert patched[0x1000 + 3] >> 4 == 2  # 4MB in the header's size nibble


def test_rebuilds_real_merged_flash_with_boot_app0(tmp_path, realdata):
    """fivef's merged Arduino flash + boot_app0.bin: the derived 4 MB image, byte for byte."""
    merged = (realdata / "projects" / "esp32_merged_fivef_ServoDriver" / "merged-firmware.bin").read_bytes()
    expected = (realdata / "derived" / "esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin").read_bytes()
    boot_app0 = realdata / "arduino-esp32" / "v1.0.6_idf-v3.3.5" / "boot_app0.bin"
    out = build_flash(
        tmp_path / "f.bin",
        partitions=merged[0x8000:0x8C00],
        bootloader=merged[0x1000:0x8000],
        apps={"app0": merged[0x10000:]},
        data={"otadata": boot_app0},
    )
    assert out.read_bytes() == expected


def test_otadata_selects_slot_like_set_boot_partition(tmp_path, bl52):
    out = build_flash(
        tmp_path / "f.bin", partitions=FACTORY_TWO_OTA, bootloader=bl52,
        apps={"factory": SAMPLES / "sample_v1.bin", "ota_0": SAMPLES / "sample_v2.bin"}, otadata="ota_0",
    )
    data = out.read_bytes()
    assert data[0xD000 : 0xD020] == OTADATA_SEQ1
    assert data[0xD020:0xF000] == b"\xff" * (0xF000 - 0xD020)
    with Device.open(out, readonly=True) as dev:
        decision = dev.boot_decision()
    assert decision.booted.label == "ota_0"
    # the factory app is selected by erasing otadata
    factory = build_flash(tmp_path / "g.bin", partitions=FACTORY_TWO_OTA, bootloader=bl52,
                          apps={"factory": SAMPLES / "sample_v1.bin"}, otadata="factory")
    assert factory.read_bytes()[0xD000:0xF000] == b"\xff" * 0x2000


def test_otadata_slot_beyond_consecutive_count(tmp_path, bl52):
    csv = tmp_path / "gap.csv"
    csv.write_text("otadata,data,ota,0xd000,0x2000\nota_0,app,ota_0,0x10000,0x100000\nota_2,app,ota_2,0x110000,0x100000\n")
    with pytest.raises(EspError) as err:
        build_flash(tmp_path / "f.bin", partitions=csv, bootloader=bl52, otadata="ota_2")
    assert err.value.esp_err == "ESP_ERR_INVALID_ARG"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"apps": {"ota_0": "PAGE"}}, "looks like an HTML page"),
        ({"apps": {"ota_9": SAMPLES / "sample_v1.bin"}}, "no partition 'ota_9'"),
        ({"apps": {"storage": SAMPLES / "sample_v1.bin"}}, "not an app partition"),
        ({"data": {"storage": b"\0" * 0x20001}}, "larger than the partition"),
        ({"size": "2MB"}, "does not fit in configured flash size 2MB"),
        ({"size": "5MB"}, "header cannot say 5MB"),
        ({"partition_table_offset": 0x5000}, "overlaps the partition table"),
        ({"otadata": "storage"}, "not an OTA app partition"),
        ({"otadata": "ota_0", "data": {"otadata": b"\x01"}}, "both as data and with --otadata"),
        ({"flash_freq": "33m"}, "ESP32 has no flash frequency '33m'"),
        ({"flash_mode": "octal"}, "unknown flash mode 'octal'"),
    ],
)
def test_refusals(tmp_path, bl52, kwargs, message):
    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    for key in ("apps", "data"):
        if key in kwargs:
            kwargs[key] = {k: page if v == "PAGE" else v for k, v in kwargs[key].items()}
    with pytest.raises(InputError, match=message) as err:
        build_flash(tmp_path / "f.bin", partitions=TWO_OTA, bootloader=bl52, **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "f.bin").exists()


def test_refuses_partition_in_table_sector(tmp_path, bl52):
    csv = tmp_path / "low.csv"
    csv.write_text("nvs,data,nvs,0x8800,0x4000\n")
    with pytest.raises(InputError, match="0x8800"):
        build_flash(tmp_path / "f.bin", partitions=csv, bootloader=bl52)


def test_refuses_wrong_chip(tmp_path, bl52, realdata):
    c3_app = realdata / "esptool" / "images" / "bootloader_esp32c3.bin"
    with pytest.raises(InputError, match="built for ESP32-C3"):
        build_flash(tmp_path / "f.bin", partitions=TWO_OTA, bootloader=bl52, apps={"ota_0": c3_app})
    with pytest.raises(InputError, match="built for ESP32, not ESP32-S3"):
        build_flash(tmp_path / "f.bin", partitions=TWO_OTA, bootloader=bl52, chip="esp32s3")


def test_signed_bootloader_is_not_patched(tmp_path, realdata):
    signed = realdata / "esptool" / "secure_images" / "bootloader_signed_v2_rsa.bin"
    csv = tmp_path / "t.csv"
    csv.write_text("otadata,data,ota,,0x2000\nota_0,app,ota_0,,0x100000\n")
    kwargs = dict(partitions=csv, bootloader=signed, partition_table_offset=0x10000)
    with pytest.raises(InputError, match="Secure Boot signature"):
        build_flash(tmp_path / "f.bin", **kwargs)
    out = build_flash(tmp_path / "f.bin", flash_size="keep", **kwargs)
    raw = signed.read_bytes()
    assert out.read_bytes()[0x1000 : 0x1000 + len(raw)] == raw
    assert json.loads(sidecar_path(out).read_text())["settings"]["partition_table_offset"] == 0x10000


def test_sidecar_is_new_device(tmp_path, bl52):
    out = tmp_path / "f.bin"
    sidecar_path(out).write_text(json.dumps({"settings": {"rollback": True}, "state": {"running": "ota_1"}}))
    build_flash(out, partitions=TWO_OTA, bootloader=bl52, chip="esp32", chip_rev=301)
    side = json.loads(sidecar_path(out).read_text())
    assert side["settings"]["chip"] == "esp32" and side["settings"]["chip_rev"] == 301
    assert side["settings"]["rollback"] is False and side["state"]["running"] is None


def test_16mb_flash_is_streamed(tmp_path, bl52):
    """A 16 MB flash never sits in memory: peak allocation stays far below the flash size."""
    storage = tmp_path / "storage.bin"
    storage.write_bytes(bytes(range(256)) * (0x3E0000 // 256))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = build_flash(
            tmp_path / "f.bin", partitions=FOUR_OTA_16MB, bootloader=bl52, size="16MB",
            apps={f"ota_{i}": SAMPLES / "sample_v1.bin" for i in range(4)}, data={"storage": storage},
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5
    assert out.stat().st_size == 16 << 20
    assert peak < 0x3E0000 + (3 << 20)  # the storage input once, plus a 1 MB fill chunk and change
    assert out.read_bytes()[0xC10000:0xFF0000] == storage.read_bytes()


def test_cli(tmp_path, bl52):
    out = tmp_path / "cli.bin"
    args = ["mkflash", "-o", str(out), "--partitions", str(TWO_OTA), "--bootloader", str(bl52),
            "--app", f"ota_0={SAMPLES / 'sample_v1.bin'}", "--otadata", "ota_0", "--chip-rev", "3.1", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["chip"] == "esp32" and report["size"] == 4 << 20
    assert [r["what"] for r in report["regions"]] == ["bootloader", "partition table", "otadata", "app ota_0"]
    assert "flash size 2MB -> 4MB" in report["regions"][0]["detail"]
    assert json.loads(sidecar_path(out).read_text())["settings"]["chip_rev"] == 301

    bad = CliRunner().invoke(cli, ["mkflash", "-o", str(tmp_path / "x.bin"), "--partitions", str(TWO_OTA),
                                   "--bootloader", str(SAMPLES / "README.md")])
    assert bad.exit_code == 3
    assert bad.output.count("\n") == 1 and "not an ESP image" in bad.output
    usage = CliRunner().invoke(cli, ["mkflash", "-o", "x", "--partitions", "p", "--bootloader", "b", "--app", "nolabel"])
    assert usage.exit_code == 2


def test_dry_run_writes_nothing(tmp_path, bl52):
    layout = plan_flash(partitions=TWO_OTA, bootloader=bl52, apps={"ota_1": SAMPLES / "sample_v3.bin"}, size="8MB")
    assert [(r.offset, r.what) for r in sorted(layout.regions, key=lambda r: r.offset)] == [
        (0x1000, "bootloader"), (0x8000, "partition table"), (0x1F0000, "app ota_1")
    ]
    assert "esp-ota-emu-sample 3.0.0" in layout.describe()[-1]
    out = tmp_path / "dry.bin"
    result = CliRunner().invoke(cli, ["mkflash", "-o", str(out), "--partitions", str(TWO_OTA),
                                      "--bootloader", str(bl52), "--dry-run"])
    assert result.exit_code == 0 and "flash size 2MB -> 4MB" in result.output
    assert not out.exists() and not sidecar_path(out).exists()
