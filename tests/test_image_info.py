"""image-info against the golden ``esptool image-info`` outputs beside every real image, and bad input.

Two independent checks per golden file: the parsed library result (header fields, every segment with
its memory types, checksum and SHA-256 validity, app/bootloader descriptors) against the values read
out of the golden text, and the command's text output against the golden text line for line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.errors import EXIT_BAD_INPUT, EXIT_INVALID, EXIT_OK
from esp_ota_emu.formats.app_desc import c_text
from esp_ota_emu.image import parse_image

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
GOLDENS = sorted(REALDATA.rglob("*.imageinfo.txt")) if REALDATA.is_dir() else []
SEGMENT_ROW = re.compile(r"^\s+(\d+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s\s(.*)$")


def image_of(golden: Path) -> Path:
    return golden.with_name(golden.name.replace(".imageinfo.txt", ".bin"))


def parse_golden(text: str) -> dict:
    """The facts of an esptool image-info report: "Key: value" lines, segment rows, descriptor sections."""
    facts: dict = {"segments": [], "section": {}}
    section = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and lines[i + 1] and set(lines[i + 1]) == {"="}:
            section = line
            continue
        row = SEGMENT_ROW.match(line)
        if row:
            idx, length, addr, offs, kinds = row.groups()
            facts["segments"].append((int(idx), int(length, 16), int(addr, 16), int(offs, 16), kinds.strip()))
        elif ": " in line and section:
            key, _, value = line.partition(": ")
            facts["section"].setdefault(section, {})[key] = value
    return facts


def run_cli(*args):
    return CliRunner().invoke(cli, list(args))


def test_there_are_125_goldens(realdata):
    assert len(GOLDENS) == 125


@pytest.mark.parametrize("golden", GOLDENS, ids=lambda p: str(p.relative_to(REALDATA)))
def test_library_agrees_with_golden(golden):
    facts = parse_golden(golden.read_text())
    data = image_of(golden).read_bytes()
    image = parse_image(data)
    chip = image.chip
    sections = facts["section"]
    top = sections.get(None, {})
    head = sections[f"{chip.display} Image Header"]
    footer = sections[f"{chip.display} Image Footer"]
    assert golden.read_text().splitlines()[2] == f"Detected image type: {chip.display}"
    assert int(head["Entry point"], 16) == image.header.entry_addr
    assert int(head["Segments"]) == image.header.segment_count == len(image.segments)
    assert head["Flash mode"] == ["QIO", "QOUT", "DIO", "DOUT"][image.header.spi_mode]
    assert head["Flash size"] == chip.flash_size_name(image.header.spi_size_speed.spi_size << 4)
    if "Flash freq" in head:
        assert head["Flash freq"] == chip.flash_freq_name(image.header.spi_size_speed.spi_speed)
    else:
        assert chip.flash_freq_name(image.header.spi_size_speed.spi_speed) is None
    if not image.esp8266:
        ext = sections[f"{chip.display} Extended Image Header"]
        assert ext["Chip ID"] == f"{image.header.chip_id} ({chip.display})"
        assert int(ext["WP pin"].split()[0], 16) == image.header.wp_pin
        rev = image.header.min_chip_rev_full
        assert ext["Minimal chip revision"].startswith(f"v{rev // 100}.{rev % 100},")
        assert ext["Minimal chip revision"].endswith(f"= {image.header.min_chip_rev})")
        rev = image.header.max_chip_rev_full
        assert ext["Maximal chip revision"] == f"v{rev // 100}.{rev % 100}"
    ours = [(s.index, s.length, s.load_addr, s.file_offset, ", ".join(s.kinds)) for s in image.segments]
    assert ours == facts["segments"]
    checksum, _, verdict = footer["Checksum"].partition(" ")
    assert int(checksum, 16) == image.checksum_stored
    assert (verdict == "(valid)") == image.checksum_ok
    if "Validation hash" in footer:
        digest, _, verdict = footer["Validation hash"].partition(" ")
        assert bytes.fromhex(digest) == image.hash_computed
        assert (verdict == "(valid)") == image.hash_ok
    else:
        assert image.hash_stored is None
    app = sections.get("Application Information")
    if app:
        desc = image.app_desc
        assert app["Project name"] == c_text(desc.project_name)
        assert app["App version"] == c_text(desc.version)
        assert app["ESP-IDF"] == c_text(desc.idf_ver)
        assert app["ELF file SHA256"] == desc.app_elf_sha256.hex()
        assert app["Compile time"] == f"{c_text(desc.date)} {c_text(desc.time)}"
        assert int(app["Secure version"]) == desc.secure_version
    else:
        assert image.app_desc is None
    boot = sections.get("Bootloader Information")
    if boot:
        desc = image.bootloader_desc
        assert int(boot["Bootloader version"]) == desc.version
        assert boot["ESP-IDF"] == c_text(desc.idf_ver)
        assert boot["Compile time"] == c_text(desc.date_time)
    # Where esptool shows no bootloader description ESP-IDF may still find one at offset 0x20
    # (esptool looks at the last DRAM segment only): see test_bootloader_desc_esptool_does_not_show.
    assert top == {}  # nothing outside a section except the banner lines
    assert f"Image size: {len(data)} bytes" in golden.read_text()


@pytest.mark.parametrize("golden", GOLDENS, ids=lambda p: str(p.relative_to(REALDATA)))
def test_cli_text_matches_golden_line_for_line(golden):
    result = run_cli("image-info", str(image_of(golden)))
    expected = golden.read_text().splitlines()[1:]  # after esptool's version banner
    ours = result.output.splitlines()
    assert ours[: len(expected)] == expected
    assert ours[len(expected) :][:2] == ["", "Validity"]
    hash_invalid = "(invalid)" in golden.read_text()
    assert result.exit_code == (EXIT_INVALID if hash_invalid else EXIT_OK)


def test_bootloader_desc_esptool_does_not_show(realdata):
    """ESP-IDF reads esp_bootloader_desc_t at offset 0x20; esptool 5.6.0 only looks at the last DRAM
    segment, so on this C5 bootloader it prints nothing while ESP-IDF finds the v5.4 descriptor."""
    path = realdata / "esp-serial-flasher/hello-world_2025-08/ESP32_C5/bootloader.bin"
    image = parse_image(path.read_bytes())
    assert image.bootloader_desc.magic_byte == 0x50
    assert c_text(image.bootloader_desc.idf_ver).startswith("v5.4")
    report = json.loads(run_cli("image-info", "--json", str(path)).output)
    assert report["bootloader_desc"]["idf_ver"] == c_text(image.bootloader_desc.idf_ver)
    assert "Bootloader Information" not in run_cli("image-info", str(path)).output


def test_json_keys_and_values(realdata):
    path = realdata / "esp-serial-flasher/hello-world_2025-08/ESP32_C2/hello_world.bin"
    result = run_cli("image-info", "--json", str(path))
    assert result.exit_code == 0
    report = json.loads(result.output)
    for key in ("chip", "entry", "segments", "checksum_ok", "sha256_ok", "app_desc", "bootloader_desc",
                "signature_blocks", "valid"):
        assert key in report
    assert report["chip"] == "esp32c2" and report["entry"] == 0x40380250
    assert report["segments"][3] == {
        "index": 3, "load_addr": 0, "length": 0x4C, "file_offset": 0x7FC4, "data_offset": 0x7FCC,
        "kind": "PADDING", "memory_types": ["PADDING"],
    }
    assert report["checksum_ok"] and report["sha256_ok"] and report["valid"]
    assert report["app_desc"]["project_name"] == "hello_world"
    assert report["bootloader_desc"] is None and report["signature_blocks"] == []
    assert report["esp_image_verify"] == {"as": "app", "esp_err": "ESP_OK", "reason": "image valid"}


def test_signature_sector_is_shown(realdata):
    path = realdata / "esptool/secure_images/bootloader_multi_signed_v2_ecdsa256.bin"
    report = json.loads(run_cli("image-info", "--json", str(path)).output)
    blocks = report["signature_blocks"]
    assert [b["offset"] for b in blocks] == [0x8000, 0x8000 + 1216, 0x8000 + 2432]
    assert all(b["valid"] and b["scheme"] == "ECDSA" and b["curve"] == "P-256" for b in blocks)
    text = run_cli("image-info", str(path)).output
    assert "Signature block 2 at 0x8980: ECDSA P-256, valid" in text
    v1 = json.loads(run_cli("image-info", "--json", str(realdata / "esptool/secure_images/bootloader_signed.bin")).output)
    assert v1["signature_blocks"][0]["scheme"] == "SBv1-ECDSA"
    assert v1["signature_blocks"][0]["offset"] == v1["image_len"]


def test_invalid_sha_exits_1_with_json(realdata):
    path = realdata / "esptool/images/ram_helloworld/helloworld-esp32_edit.bin"
    result = run_cli("image-info", "--json", str(path))
    assert result.exit_code == EXIT_INVALID
    report = json.loads(result.output)
    assert report["checksum_ok"] is True and report["sha256_ok"] is False and report["valid"] is False


def test_flipped_checksum_byte_is_invalid(realdata, tmp_path):
    data = bytearray((realdata / "esp-serial-flasher/hello-world_2025-08/ESP32_S3/hello_world.bin").read_bytes())
    image = parse_image(bytes(data))
    data[image.checksum_offset] ^= 0x01
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    result = run_cli("image-info", str(path))
    assert result.exit_code == EXIT_INVALID
    assert f"(invalid - calculated {image.checksum_computed:#04x})" in result.output


def _bad_inputs(realdata, tmp_path):
    app = (realdata / "esp-serial-flasher/hello-world_2025-08/ESP32/hello_world.bin").read_bytes()
    rng = bytes((i * 7919 + 13) % 251 for i in range(4096))
    return {
        "empty": (b"", "empty"),
        "html": (b"<!DOCTYPE html>\n<html><head><title>404</title></head></html>\n", "HTML page"),
        "random": (b"\x13" + rng, "not an ESP image: first byte 0x13"),
        "random_e9": (b"\xe9\x05" + rng, "truncated"),
        "truncated_app": (app[:5000], "truncated: segment 0 needs 0x"),
        "header_only": (app[:20], "truncated"),
        "elf": (b"\x7fELF\x01\x01\x01" + bytes(60), "ELF"),
        "partition_table": ((realdata / "esptool/images/partitions_singleapp.bin").read_bytes(), "partition table"),
        "erased": (b"\xff" * 4096, "erased flash"),
    }


@pytest.mark.parametrize(
    "case",
    ["empty", "html", "random", "random_e9", "truncated_app", "header_only", "elf", "partition_table", "erased"],
)
def test_bad_input_is_one_line_and_exit_3(case, realdata, tmp_path):
    data, expected = _bad_inputs(realdata, tmp_path)[case]
    path = tmp_path / f"{case}.bin"
    path.write_bytes(data)
    env = dict(os.environ)
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("esp-ota-emu")), "image-info", str(path)],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_file_is_bad_input(tmp_path):
    result = run_cli("image-info", str(tmp_path / "nope.bin"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "cannot read" in result.output
