"""``info`` on real and broken flash dumps: partitions, otadata, apps and the boot decision."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EXIT_BAD_INPUT
from esp_ota_emu.info import flash_report

def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def merged(merged_flash):
    return merged_flash


def test_real_merged_flash_boots_app0_with_reason(merged):
    result = run("info", merged, "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert r["chip"] == "esp32" and r["flash_size"] == 4 << 20 and r["partition_table_offset"] == 0x8000
    assert [p["label"] for p in r["partitions"]] == ["nvs", "otadata", "app0", "app1", "spiffs", "coredump"]
    app0 = r["partitions"][2]
    assert (app0["type"], app0["subtype"], app0["offset"], app0["size"]) == ("app", "ota_0", 0x10000, 0x140000)
    assert app0["encrypted"] is False and app0["readonly"] is False
    # boot_app0.bin: sector 0 seq 1 (crc ok), sector 1 seq 0 with crc 0xFFFFFFFF (also CRC-valid)
    assert [(e["sector"], e["seq"], e["state"], e["crc_ok"]) for e in r["otadata"]] == [
        (0, 1, "UNDEFINED", True),
        (1, 0, "UNDEFINED", True),
    ]
    apps = {a["partition"]: a for a in r["apps"]}
    assert apps["app0"]["valid"] and apps["app0"]["checksum_ok"] and apps["app0"]["sha256_ok"]
    assert apps["app0"]["idf_ver"] == "v4.4.7-dirty" and apps["app0"]["project_name"] == "arduino-lib-builder"
    assert apps["app0"]["chip"] == "esp32" and apps["app0"]["secure_version"] == 0
    assert apps["app1"]["valid"] is False and apps["app1"]["empty"]
    for app in r["apps"]:  # the documented keys are always there, None where the image has no such field
        assert {"partition", "valid", "checksum_ok", "sha256_ok", "version", "project_name", "secure_version",
                "idf_ver", "chip"} <= app.keys()
    assert apps["app1"]["version"] is None
    assert r["boot"]["partition"] == "app0"
    assert "active entry 0 (seq 1) -> slot 0" in r["boot"]["reason"]
    assert r["boot"]["reason"][-1] == "boots app0"
    # info changes nothing, not even a settings file
    assert not os.path.exists(f"{merged}.emu.json")


def test_text_output_names_the_boot_partition(merged):
    out = run("info", merged).output
    assert "boot: app0" in out and "otadata sector 1: seq 0, state UNDEFINED" in out


def test_corrupted_selected_image_falls_back_to_the_other_slot(merged):
    # Make app1 valid (a copy of app0) and select it; then corrupt it: the bootloader falls back to app0.
    data = bytearray(merged.read_bytes())
    data[0x150000 : 0x150000 + 0x140000] = data[0x10000 : 0x10000 + 0x140000]
    from esp_ota_emu.formats.otadata import build_entry

    data[0xF000 : 0xF000 + 32] = build_entry(2)
    merged.write_bytes(bytes(data))
    with Device.open(merged, readonly=True) as dev:
        assert flash_report(dev)["boot"]["partition"] == "app1"
    data[0x150000 + 0x1000] ^= 0xFF  # breaks the checksum / SHA-256
    merged.write_bytes(bytes(data))
    with Device.open(merged, readonly=True) as dev:
        r = flash_report(dev)
    assert r["boot"]["partition"] == "app0"
    assert any(step.startswith("app1: image invalid") for step in r["boot"]["reason"])


@pytest.mark.parametrize(
    "name,content,expect",
    [
        ("all_ff.bin", b"\xff" * (1 << 20), "partition table"),
        ("random.bin", os.urandom(256 * 1024), "partition table"),
        ("page.bin", b"<!DOCTYPE html><html><body>404</body></html>\n" * 1000, "partition table"),
    ],
)
def test_bad_dumps_give_a_partial_report_not_a_traceback(tmp_path, name, content, expect):
    path = tmp_path / name
    path.write_bytes(content)
    result = run("info", path)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "missing:" in result.output and expect in result.output
    assert "Traceback" not in result.output


def test_truncated_dump_is_a_one_line_error(merged, tmp_path):
    short = tmp_path / "short.bin"
    short.write_bytes(merged.read_bytes()[:0x8100])
    result = run("info", short)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "partition table" in result.output


def test_dump_without_bootloader_still_reports_partitions(merged):
    data = bytearray(merged.read_bytes())
    data[0x1000:0x8000] = b"\xff" * 0x7000
    merged.write_bytes(bytes(data))
    r = json.loads(run("info", merged, "--json").output)
    assert r["chip"] is None and r["bootloader"] is None
    assert any("bootloader" in m for m in r["missing"])
    assert r["boot"]["partition"] == "app0"


def test_table_at_another_offset_is_found_and_suggested(merged):
    data = bytearray(merged.read_bytes())
    data[0x9000:0xA000] = data[0x8000:0x9000]  # nvs is erased: move the table one sector up
    data[0x8000:0x9000] = b"\xff" * 0x1000
    merged.write_bytes(bytes(data))
    result = run("info", merged)
    assert result.exit_code == EXIT_BAD_INPUT and "0x9000" in result.output
    moved = run("info", merged, "--partition-table-offset", "0x9000", "--json")
    assert json.loads(moved.output)["boot"]["partition"] == "app0"


def test_32mb_dump_reports_and_warns_about_qemu(merged, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.write(merged.read_bytes())
        f.truncate(32 << 20)
    r = json.loads(run("info", big, "--json").output)
    assert r["flash_size"] == 32 << 20 and r["boot"]["partition"] == "app0"
    assert any("QEMU" in w for w in r["warnings"])
