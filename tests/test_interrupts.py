"""Ctrl-C: an interrupted OTA is aborted with its own exit code, and the writes that decide what boots
(an otadata sector, a partition copy, a first boot's flash encryption) are never left half done by it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest

from esp_ota_emu import device as device_module
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EXIT_INTERRUPTED
from esp_ota_emu.flash import SECTOR_SIZE
from esp_ota_emu.interrupts import interrupts_deferred
from esp_ota_emu.testserver import Faults, serve_files
from helpers_flash import SMALL_LAYOUT, make_flash, sample

OTADATA = 0xE000  # in the real Arduino-ESP32 flash


def test_ctrl_c_in_a_deferred_block_arrives_when_the_block_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            done.append("the rest of the block")
    assert done == ["the rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_deferred_block_runs_as_it_is_outside_the_main_thread():
    """Only the main thread may set signal handlers (and receives signals): the fleet's device threads
    run the block unchanged."""
    outcome = []

    def body():
        try:
            with interrupts_deferred():
                outcome.append("ran")
        except Exception as err:  # noqa: BLE001 - the test reports whatever went wrong
            outcome.append(repr(err))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert outcome == ["ran"]


def _ctrl_c_at_first_program(dev: Device, start: int, end: int) -> None:
    """Press Ctrl-C (raise SIGINT) just before the first program into ``[start, end)``, after its erase."""

    def hook(op):
        if op.kind == "program" and start <= op.addr < end and not pressed:
            pressed.append(op.index)
            signal.raise_signal(signal.SIGINT)

    pressed: list[int] = []
    dev.flash.hooks.append(hook)


def test_ctrl_c_between_an_otadata_erase_and_its_program_waits_for_the_program(merged_flash):
    """esp_ota_set_boot_partition erases the otadata sector, then programs the new entry. Ctrl-C pressed
    in between would leave the sector blank; it waits, so the new selection is whole and boots."""
    with Device.open(merged_flash) as dev:
        dev.power_on_if_needed()
        app0, app1 = dev.partitions.find("app0"), dev.partitions.find("app1")
        dev.io.copy(app1, 0, app0, 0, app0.size)  # a valid app to select
        _ctrl_c_at_first_program(dev, OTADATA, OTADATA + 2 * SECTOR_SIZE)
        with pytest.raises(KeyboardInterrupt):
            dev.ota.set_boot_partition(app1)
        dev.flash.hooks.clear()
        assert dev.boot().booted.label == "app1"


def test_ctrl_c_during_a_partition_copy_waits_for_the_whole_copy(merged_flash):
    """esp_partition_copy (a v5.5 update's final copy over the bootloader, say) erases the destination,
    then writes it piece by piece: Ctrl-C after the erase would leave it blank; it waits until the
    copy is whole."""
    with Device.open(merged_flash) as dev:
        app0, app1 = dev.partitions.find("app0"), dev.partitions.find("app1")
        size = 3 * 64 * 1024 + 100  # several of the copy's pieces
        _ctrl_c_at_first_program(dev, app1.offset, app1.offset + app1.size)
        with pytest.raises(KeyboardInterrupt):
            dev.io.copy(app1, 0, app0, 0, size)
        assert dev.flash.read(app1.offset, size) == dev.flash.read(app0.offset, size)


def test_cli_ctrl_c_aborts_the_ota_with_exit_code_130(merged_flash, realdata):
    """Ctrl-C while the server stalls mid-image: ABORT, a final "interrupted" result line, one error
    line, exit code 130; nothing outside the target slot changed, and with --resume the bytes written
    are recorded for the next run."""
    app = (realdata / "arduino-esp32/v1.0.6_idf-v3.3.5/StartCounter.ino.bin").read_bytes()
    with Device.open(merged_flash) as dev:
        dev.power_on_if_needed()
        target = dev.ota.get_next_update_partition(None)
    before = bytearray(merged_flash.read_bytes())
    with serve_files({"app.bin": app}, faults=Faults(stall_after=50_000, stall_seconds=30)) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "esp_ota_emu", str(merged_flash), "--url", srv.url("app.bin"),
             "--cert-pem", str(srv.tls.ca_pem), "--json", "--resume", "--idf-release", "v5.5.4"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            lines = []
            for line in proc.stdout:  # the OTA is under way once it has written to flash
                lines.append(json.loads(line))
                if lines[-1].get("event") == "ESP_HTTPS_OTA_WRITE_FLASH":
                    break
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    lines += [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == EXIT_INTERRUPTED == 130
    assert err.splitlines() == ["error: interrupted (Ctrl-C)"]
    assert lines[-2:] == [{"event": "ESP_HTTPS_OTA_ABORT", "data": None}, {"result": "interrupted"}]
    after = bytearray(merged_flash.read_bytes())
    before[target.offset : target.end] = after[target.offset : target.end] = b""
    assert after == before
    sidecar = json.loads(merged_flash.with_name(merged_flash.name + ".emu.json").read_text())
    assert sidecar["state"]["resume"][srv.url("app.bin")]["bytes_written"] >= 1024


def test_ctrl_c_during_the_first_boots_flash_encryption_waits_for_it_and_its_sidecar(realdata, tmp_path, monkeypatch):
    """The first boot with flash encryption encrypts the flash in place and burns eFuses that the
    sidecar records. Ctrl-C pressed as it starts waits for both: the next open finds an encrypted
    device that boots, not ciphertext that it takes for plaintext."""
    path = make_flash(tmp_path / "f.bin", realdata, SMALL_LAYOUT, {"factory": sample("v1")}, size=1 << 20)
    encrypt = device_module.encrypt_flash_in_place

    def pressed_then_encrypt(dev):
        signal.raise_signal(signal.SIGINT)
        encrypt(dev)

    monkeypatch.setattr(device_module, "encrypt_flash_in_place", pressed_then_encrypt)
    key = realdata / "esptool/secure_images/256bit_key.bin"
    with pytest.raises(KeyboardInterrupt):
        Device.open(path, flash_encryption_key=key, flash_encryption=True)
    monkeypatch.undo()
    with Device.open(path) as dev:
        assert dev.flash_encryption_enabled
        assert dev.boot().booted.label == "factory"
