"""QEMU command line, eFuse files, the QEMU finder and bounded runs; a real boot when Espressif's QEMU is here."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device, sidecar_path
from esp_ota_emu.errors import InputError
from esp_ota_emu.mkflash import build_flash
from esp_ota_emu.qemu import (
    QemuNotFound,
    device_efuses,
    find_qemu,
    not_found_reason,
    qemu_command,
    run_qemu,
    write_efuse_file,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "firmware_samples"
TWO_OTA = REPO / "partitions" / "two_ota_4MB.csv"

# ESP_FORMATS.md 10.2 / 12.5: QEMU's default ESP32 (ECO3, v3.0) eFuses: 124 zero bytes but these two.
ESP32_DEFAULT_EFUSE = bytes(13) + b"\x80" + bytes(8) + b"\x10" + bytes(101)


@pytest.fixture()
def flash(tmp_path, realdata) -> Path:
    return build_flash(
        tmp_path / "flash.bin",
        partitions=TWO_OTA,
        bootloader=realdata / "esptool" / "images" / "bootloader_esp32_v5_2.bin",
        apps={"ota_0": SAMPLES / "sample_v1.bin"},
    )


def stand_in_qemu(tmp_path: Path, machines: str, uart: str = "", efuse_secure_version: int = 0) -> Path:
    """An executable that answers ``-machine help`` like a QEMU build offering ``machines``, and otherwise
    prints ``uart`` and (like a bootloader burning anti-rollback bits) sets SECURE_VERSION bits in the
    eFuse drive, then idles."""
    script = tmp_path / "qemu-system-xtensa"
    script.write_text(
        f"#!{sys.executable}\n"
        "import re, sys, time\n"
        "if sys.argv[1:] == ['-machine', 'help']:\n"
        "    print('Supported machines are:')\n"
        f"    for m in {machines.split()!r}: print(f'{{m:<20}} a machine')\n"
        "    sys.exit(0)\n"
        "efuse = next(re.match(r'file=(.*),if=none', a).group(1) for a in sys.argv if a.endswith('id=efuse'))\n"
        "data = bytearray(open(efuse, 'rb').read())\n"
        f"data[108:112] = ({(1 << efuse_secure_version) - 1}).to_bytes(4, 'little')\n"
        "open(efuse, 'wb').write(data)\n"
        f"print({uart!r}, flush=True)\n"
        "time.sleep(60)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_command_line(flash, tmp_path):
    efuse = tmp_path / "efuse.bin"
    assert qemu_command(flash, efuse, chip="esp32") == [
        "qemu-system-xtensa", "-nographic", "-M", "esp32", "-m", "4M",
        "-drive", f"file={flash},if=mtd,format=raw",
        "-drive", f"file={efuse},if=none,format=raw,id=efuse",
        "-global", "driver=nvram.esp32.efuse,property=drive,value=efuse",
        "-global", "driver=timer.esp32.timg,property=wdt_disable,value=true",
        "-serial", "mon:stdio",
    ]
    c3 = qemu_command(flash, None, chip="esp32c3", serial="file:uart.log")
    assert c3[:4] == ["qemu-system-riscv32", "-nographic", "-M", "esp32c3"]
    assert "driver=timer.esp32c3.timg,property=wdt_disable,value=true" in c3 and c3[-2:] == ["-serial", "file:uart.log"]
    odd = tmp_path / "a,b.bin"
    odd.write_bytes(flash.read_bytes())
    assert f"file={tmp_path}/a,,b.bin,if=mtd,format=raw" in qemu_command(odd, chip="esp32")


@pytest.mark.parametrize("size", [1 << 20, 3 << 20, (4 << 20) + 0x1000])
def test_refuses_sizes_qemu_does_not_take(tmp_path, size):
    path = tmp_path / "odd.bin"
    path.write_bytes(b"\xff" * size)
    with pytest.raises(InputError, match="not 2, 4, 8 or 16 MB"):
        qemu_command(path, chip="esp32")


def test_no_qemu_for_other_chips(flash):
    with pytest.raises(InputError, match="no ESP32-C6 machine"):
        qemu_command(flash, chip="esp32c6")


def test_efuse_files(tmp_path):
    assert write_efuse_file(tmp_path / "e.bin", "esp32").read_bytes() == ESP32_DEFAULT_EFUSE
    burned = write_efuse_file(tmp_path / "s.bin", "esp32", secure_version=3).read_bytes()
    # SECURE_VERSION is BLK3 word 4: file bytes 108..111 (ESP_FORMATS.md 10.1), 3 bits burned
    assert burned[108:112] == b"\x07\x00\x00\x00"
    assert burned[:108] == ESP32_DEFAULT_EFUSE[:108] and burned[112:] == ESP32_DEFAULT_EFUSE[112:]
    rev1 = device_efuses("esp32", chip_rev=100).to_qemu_file()
    assert rev1[13] == 0x80 and rev1[22] == 0x00
    c3 = write_efuse_file(tmp_path / "c3.bin", "esp32c3").read_bytes()
    assert len(c3) == 1024 and c3[0x26] == 0x0C and c3.count(0) == 1023  # idf.py's ESP32-C3 v0.3 default


def test_finder_rejects_qemu_without_the_machine(tmp_path, monkeypatch):
    debian_like = stand_in_qemu(tmp_path, "none sim lx60 lx200 kc705")
    monkeypatch.setenv("ESP_QEMU", str(debian_like))
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(QemuNotFound) as err:
        find_qemu("esp32")
    assert str(err.value).startswith(not_found_reason("esp32"))
    assert "has no esp32 machine" in str(err.value)
    monkeypatch.delenv("ESP_QEMU")
    with pytest.raises(QemuNotFound) as err:
        find_qemu("esp32")
    assert str(err.value) == "qemu-system-xtensa with the esp32 machine not found (PATH or $ESP_QEMU)"


def test_finder_accepts_directory_and_path(tmp_path, monkeypatch):
    espressif = stand_in_qemu(tmp_path, "none esp32 esp32s3")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.setenv("ESP_QEMU", str(tmp_path))
    assert find_qemu("esp32") == str(espressif)
    monkeypatch.delenv("ESP_QEMU")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_qemu("esp32s3") == str(espressif)


def test_debian_qemu_has_no_esp32_machine():
    debian = shutil.which("qemu-system-xtensa")
    if debian is None:
        pytest.skip("no qemu-system-xtensa on PATH")
    try:
        find_qemu("esp32")
    except QemuNotFound as err:
        assert debian in str(err)


def test_run_stops_at_expected_text_or_timeout():
    cmd = [sys.executable, "-c", "import time; print('rst:0x1', flush=True); time.sleep(0.3); "
           "print('esp-ota-emu-sample 2.0.0 secure_version=0 running', flush=True); time.sleep(60)"]
    t0 = time.monotonic()
    run = run_qemu(cmd, timeout=20, expect="sample 2.0.0")
    assert run.expected_seen and not run.timed_out and run.returncode is None
    assert "rst:0x1" in run.output and time.monotonic() - t0 < 10
    run = run_qemu(cmd, timeout=1, expect="sample 3.0.0")
    assert run.expected_seen is False and run.timed_out
    done = run_qemu([sys.executable, "-c", "print('bye')"], timeout=20)
    assert done.output.strip() == "bye" and done.returncode == 0 and done.expected_seen is None


def test_cli_print_writes_efuse_file_for_device(flash):
    with Device.open(flash, efuse_secure_version=2):
        pass
    result = CliRunner().invoke(cli, ["qemu", str(flash), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    efuse = Path(out["efuse_file"])
    assert efuse == Path(f"{flash}.efuse.bin")
    assert efuse.read_bytes()[108:112] == b"\x03\x00\x00\x00"
    assert out["command"][1:] == qemu_command(flash, efuse, chip="esp32")[1:]
    text = CliRunner().invoke(cli, ["qemu", str(flash), "--print"])
    assert shlex.split(text.output)[1:] == out["command"][1:]


def test_cli_uses_given_efuse_file_as_is(flash, tmp_path):
    mine = tmp_path / "mine.bin"
    mine.write_bytes(ESP32_DEFAULT_EFUSE[:60] + b"\x01" * 32 + ESP32_DEFAULT_EFUSE[92:])
    result = CliRunner().invoke(cli, ["qemu", str(flash), "--efuse", str(mine)])
    assert result.exit_code == 0
    assert mine.read_bytes()[60:92] == b"\x01" * 32


def test_cli_refuses_odd_size(tmp_path, realdata):
    odd = build_flash(tmp_path / "odd.bin", partitions=TWO_OTA, size="5MB", flash_size="4MB",
                      bootloader=realdata / "esptool" / "images" / "bootloader_esp32_v5_2.bin")
    result = CliRunner().invoke(cli, ["qemu", str(odd)])
    assert result.exit_code == 3 and "QEMU-esp32 will refuse" in result.output


def test_cli_run_without_qemu(flash, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.delenv("ESP_QEMU", raising=False)
    result = CliRunner().invoke(cli, ["qemu", str(flash), "--run", "--timeout", "5"])
    assert result.exit_code == 3
    assert "qemu-system-xtensa with the esp32 machine not found" in result.output


def test_cli_run_with_stand_in(flash, tmp_path, monkeypatch):
    """The --run plumbing: UART0 output, --expect, and the device afterwards (eFuses QEMU burned kept,
    the running app forgotten)."""
    monkeypatch.setenv("ESP_QEMU", str(stand_in_qemu(tmp_path, "esp32", "esp-ota-emu-sample 1.0.0 running", 4)))
    with Device.open(flash) as dev:
        dev.power_on_if_needed()
        assert dev.state.running == "ota_0"
    result = CliRunner().invoke(cli, ["qemu", str(flash), "--run", "--timeout", "20", "--expect", "sample 1.0.0", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["expected_seen"] is True and "esp-ota-emu-sample 1.0.0 running" in out["uart0"]
    side = json.loads(sidecar_path(flash).read_text())
    assert side["settings"]["efuse_secure_version"] == 4 and side["state"]["running"] is None
    miss = CliRunner().invoke(cli, ["qemu", str(flash), "--run", "--timeout", "1", "--expect", "sample 2.0.0"])
    assert miss.exit_code == 1 and "never printed 'sample 2.0.0'" in miss.output


def _real_qemu() -> str:
    try:
        return find_qemu("esp32")
    except QemuNotFound as err:
        pytest.skip(str(err))


def test_boots_in_qemu_and_after_ota_runs_v2(flash):
    """Integration: the flash boots sample v1 in QEMU; after an emulated OTA of v2, QEMU runs v2, and
    the flash QEMU ran still reads back with info."""
    _real_qemu()
    from esp_ota_emu.info import flash_report
    from esp_ota_emu.local_ota import ota_from_file

    runner = CliRunner()
    first = runner.invoke(cli, ["qemu", str(flash), "--run", "--timeout", "60", "--expect",
                                "esp-ota-emu-sample 1.0.0 secure_version=0 running"])
    assert first.exit_code == 0, first.output
    with Device.open(flash) as dev:
        assert ota_from_file(dev, SAMPLES / "sample_v2.bin").label == "ota_1"
    second = runner.invoke(cli, ["qemu", str(flash), "--run", "--timeout", "60", "--expect",
                                 "esp-ota-emu-sample 2.0.0 secure_version=0 running"])
    assert second.exit_code == 0, second.output
    with Device.open(flash, readonly=True) as dev:
        report = flash_report(dev)
    assert report["boot"]["partition"] == "ota_1"
    assert [a["version"] for a in report["apps"]] == ["1.0.0", "2.0.0"]


def test_rollback_bootloader_rewrites_otadata_in_qemu(tmp_path, realdata):
    """Integration: IDF 4.4.2's rollback bootloader turns NEW into PENDING_VERIFY in place; diff says so."""
    _real_qemu()
    from esp_ota_emu.flashdiff import diff_flashes
    from esp_ota_emu.local_ota import ota_from_file

    bootloader = realdata / "arduino-esp32" / "v2.0.5_custom-logging-rollback_via_chegewara" / "bootloader_dio_40m.bin"
    flash = build_flash(tmp_path / "rb.bin", partitions=TWO_OTA, bootloader=bootloader,
                        apps={"ota_0": SAMPLES / "sample_v1.bin"})
    with Device.open(flash, rollback=True) as dev:
        ota_from_file(dev, SAMPLES / "sample_v2.bin")
    before = tmp_path / "before.bin"
    shutil.copyfile(flash, before)
    run = CliRunner().invoke(cli, ["qemu", str(flash), "--run", "--timeout", "60", "--expect", "sample 2.0.0"])
    assert run.exit_code == 0, run.output
    changes = diff_flashes(before, flash)
    assert any("state NEW -> PENDING_VERIFY" in c.describe() for c in changes), [c.describe() for c in changes]
    assert os.path.getsize(flash) == 4 << 20
