"""esp_https_ota end to end: real ESP32 apps served over loopback HTTPS into a real merged ESP32 flash.

The device is the Arduino-ESP32 (IDF 4.4.7) merged 4 MB flash: app0 at 0x10000 runs (otadata
sector 0: seq 1), so the OTA target is app1 (ota_1) at 0x150000, size 0x140000, followed by spiffs.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EXIT_OTA_FAILED, EspError, InputError
from esp_ota_emu.formats.app_desc import APP_DESC_OFFSET, SPI_FLASH_MODE_OFFSET
from esp_ota_emu.image import parse_image
from esp_ota_emu.https_ota import api
from esp_ota_emu.https_ota.config import HttpConfig, OtaConfig
from esp_ota_emu.https_ota.client import request_writes
from esp_ota_emu.https_ota.engine import EMULATOR_REDIRECT_LIMIT, EspHttpsOta
from esp_ota_emu.testserver import Faults, serve_files
from helpers_flash import real_app, rehash

SLOT, SLOT_SIZE = 0x150000, 0x140000
OTADATA = 0xE000
SECTOR = 0x1000


@pytest.fixture(scope="module")
def app(realdata) -> bytes:
    return (realdata / "arduino-esp32/v1.0.6_idf-v3.3.5/StartCounter.ino.bin").read_bytes()


@pytest.fixture
def flash(merged_flash):
    return merged_flash


def run(flash, url, ca=None, *, idf_release="v5", observed=False, rollback=None, **options):
    """One OTA through the Python API; returns (result or EspError, events).

    ``observed`` attaches a flash hook, which makes the engine hand every read to esp_ota_write singly.
    """
    events = []
    with Device.open(flash, idf_release=idf_release, rollback=rollback) as dev:
        if observed:
            dev.flash.hooks.append(lambda op: None)
        try:
            result = api.https_ota(dev, url, cert_pem=ca, on_event=lambda n, d: events.append((n, d)), **options)
        except EspError as err:
            result = err
    return result, events


def write_flash_steps(total: int, first: int = 1024, step: int = 1024) -> list[int]:
    """The WRITE_FLASH totals esp_https_ota posts: the 1024-byte header, then one per buffer read."""
    steps = [first]
    while steps[-1] < total:
        steps.append(min(steps[-1] + step, total))
    return steps


def outside(data: bytes, *ranges: tuple[int, int]) -> str:
    """SHA-256 of the flash with the given (start, length) ranges blanked: what must not change."""
    buf = bytearray(data)
    for start, length in ranges:
        buf[start : start + length] = bytes(length)
    return hashlib.sha256(buf).hexdigest()


def otadata_entry(seq: int, state: int = 0xFFFFFFFF, label: bytes = b"\xff" * 20) -> bytes:
    return struct.pack("<I20sII", seq, label, state, zlib.crc32(struct.pack("<I", seq), 0xFFFFFFFF))


@pytest.mark.parametrize("idf_release", ["v4.4.7", "v5.0", "v5.0.1", "v5", "v5.5", "newest"])
def test_ota_writes_image_events_and_otadata(flash, app, idf_release):
    """The same bytes on flash in every release; the events came in v5.0.1, VERIFY_CHIP_REVISION in v5.5.
    Before v5.0.6 the first perform counted the header twice: the byte count runs a header ahead
    (289 bytes before v5.0, 1024 after)."""
    ahead = {"v4.4.7": 289, "v5.0": 1024, "v5.0.1": 1024}.get(idf_release, 0)
    before = flash.read_bytes()
    with serve_files({"app.bin": app}) as srv:
        result, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release)
        assert [(r.method, r.path, r.range) for r in srv.requests] == [("GET", "/app.bin", None)]
        request = srv.requests[0]
        assert request.header("User-Agent") == "ESP32 HTTP Client/1.0"
        # before v5.4 esp_http_client sends "Content-Length: 0" with every GET
        sends_length = idf_release in ("v4.4.7", "v5.0", "v5.0.1")
        expected = {"host", "user-agent"} | ({"content-length"} if sends_length else set())
        assert {k.lower() for k, _ in request.headers} == expected
        assert request.header("Content-Length") == ("0" if sends_length else None)
    assert result.partition == "app1" and result.boot_partition_updated and result.bytes_written == len(app)
    assert result.image_len_read == len(app) + ahead
    assert result.power_on is not None and result.power_on.booted.label == "app0"
    verify = [("ESP_HTTPS_OTA_VERIFY_CHIP_ID", 0)]
    if idf_release in ("v5.5", "newest"):
        verify.append(("ESP_HTTPS_OTA_VERIFY_CHIP_REVISION", int.from_bytes(app[15:17], "little")))
    assert events == ([] if idf_release in ("v4.4.7", "v5.0") else [
        ("ESP_HTTPS_OTA_START", None),
        ("ESP_HTTPS_OTA_CONNECTED", None),
        *verify,
        *[("ESP_HTTPS_OTA_WRITE_FLASH", n + ahead) for n in write_flash_steps(len(app))],
        ("ESP_HTTPS_OTA_UPDATE_BOOT_PARTITION", 0x11),
        ("ESP_HTTPS_OTA_FINISH", None),
    ])
    after = flash.read_bytes()
    assert after[SLOT : SLOT + len(app)] == app
    # otadata: entry 0 (seq 1) stays; entry 1 becomes seq 2 selecting ota_1. The bytes are the ones the
    # QEMU-verified realdata note gives (seq=2, crc 0x55f63774), label kept as read (0xFF).
    assert after[OTADATA : OTADATA + 32] == before[OTADATA : OTADATA + 32]
    assert after[OTADATA + SECTOR : OTADATA + SECTOR + 32] == otadata_entry(2)
    assert otadata_entry(2)[-4:] == (0x55F63774).to_bytes(4, "little")
    assert outside(after, (SLOT, SLOT_SIZE), (OTADATA + SECTOR, SECTOR)) == outside(before, (SLOT, SLOT_SIZE), (OTADATA + SECTOR, SECTOR))
    with Device.open(flash) as dev:
        assert dev.running.label == "app0"  # the old app runs until a reset
        assert dev.boot().booted.label == "app1"


def _prefill_slot(flash, pattern: bytes = b"\x5a"):
    data = bytearray(flash.read_bytes())
    data[SLOT : SLOT + SLOT_SIZE] = pattern * SLOT_SIZE
    flash.write_bytes(bytes(data))


@pytest.mark.parametrize("chunked", [False, True])
def test_sequential_versus_bulk_erase(tmp_path, flash, app, chunked):
    """Sequential erase touches only the sectors written; bulk erases ALIGN_UP(length), or the whole slot
    when the server sends no length. Past that, the slot keeps its old bytes."""
    end = (len(app) + SECTOR - 1) // SECTOR * SECTOR
    slots = {}
    for bulk in (False, True):
        copy = tmp_path / f"flash-{bulk}.bin"
        shutil.copyfile(flash, copy)
        _prefill_slot(copy)
        with serve_files({"app.bin": app}, faults=Faults(chunked=chunked)) as srv:
            result, _ = run(copy, srv.url("app.bin"), srv.tls.ca_pem, bulk_flash_erase=bulk)
        assert result.boot_partition_updated and result.image_length == (-1 if chunked else len(app))
        slots[bulk] = copy.read_bytes()[SLOT : SLOT + SLOT_SIZE]
    seq = slots[False]
    assert seq[: len(app)] == app and seq[len(app) : end] == b"\xff" * (end - len(app))
    assert seq[end:] == b"\x5a" * (SLOT_SIZE - end)
    if chunked:  # image size unknown: esp_ota_begin(OTA_SIZE_UNKNOWN) erases the whole partition
        assert slots[True] == app + b"\xff" * (SLOT_SIZE - len(app))
    else:
        assert slots[True] == seq


@pytest.mark.parametrize("idf_release,whole_slot", [("v5.0", True), ("v5.2.6", True), ("v5.3", False), ("v5", False)])
def test_bulk_erase_size_per_release(flash, app, idf_release, whole_slot):
    """Until v5.3, bulk_flash_erase passed OTA_SIZE_UNKNOWN to esp_ota_begin even when the server
    announced the image length: the whole slot was erased."""
    _prefill_slot(flash)
    with serve_files({"app.bin": app}) as srv:
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release, bulk_flash_erase=True)
    assert result.boot_partition_updated
    end = (len(app) + SECTOR - 1) // SECTOR * SECTOR
    tail = flash.read_bytes()[SLOT + end : SLOT + SLOT_SIZE]
    assert tail == (b"\xff" if whole_slot else b"\x5a") * (SLOT_SIZE - end)


@pytest.mark.parametrize("idf_release", ["v5", "v6.0.2", "v6.1"])
def test_chip_mismatch_changes_nothing(flash, realdata, idf_release):
    """From v6.1 esp_https_ota posts VERIFY_CHIP_REVISION too before it checks the chip id."""
    s2_app = (realdata / "esptool/images/esp_idf_blink_esp32s2.bin").read_bytes()
    before = flash.read_bytes()
    with serve_files({"app.bin": s2_app}) as srv:
        err, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release)
    assert isinstance(err, EspError) and err.esp_err == "ESP_ERR_INVALID_VERSION"
    assert "chip id 2" in err.message
    verify = [("ESP_HTTPS_OTA_VERIFY_CHIP_ID", 2)]
    if idf_release == "v6.1":
        verify.append(("ESP_HTTPS_OTA_VERIFY_CHIP_REVISION", int.from_bytes(s2_app[15:17], "little")))
    assert events[-len(verify) - 1 :] == verify + [("ESP_HTTPS_OTA_ABORT", None)]
    assert flash.read_bytes() == before  # sequential erase: nothing was erased before the check


def with_spi_flash_mode(image: bytes, mode: int) -> bytes:
    """``image`` as if built for CONFIG_ESPTOOLPY_FLASHMODE_VAL ``mode`` by ESP-IDF v6.1: its app
    description's spi_flash_mode set, the checksum and any appended SHA-256 still valid. (Arduino
    1.0.6's app starts with a padding segment instead of a description; esp_https_ota reads the byte
    at the same place all the same.)"""
    at = APP_DESC_OFFSET + SPI_FLASH_MODE_OFFSET
    data = bytearray(image)
    data[parse_image(image).checksum_offset] ^= data[at] ^ mode  # segment data: the XOR checksum covers it
    data[at] = mode
    rehash(data)
    assert parse_image(bytes(data)).checksum_ok
    return bytes(data)


def build_running_app_for(flash, mode: int) -> bytes:
    """Make the running app0 one built for SPI flash mode ``mode``; returns that app."""
    data = bytearray(flash.read_bytes())
    length = parse_image(bytes(data[0x10000:SLOT])).image_len
    data[0x10000 : 0x10000 + length] = with_spi_flash_mode(bytes(data[0x10000 : 0x10000 + length]), mode)
    flash.write_bytes(bytes(data))
    return bytes(data[0x10000 : 0x10000 + length])


@pytest.mark.parametrize("running_mode,new_mode,idf_release,verify,refused", [
    (3, 1, "v6.1", True, True),  # DIO app, QIO update: refused
    (3, 1, "v6.1", False, False),  # a device built without CONFIG_ESP_HTTPS_OTA_VERIFY_SPI_MODE
    (3, 1, "v6.0.2", True, False),  # no check before v6.1
    (3, 3, "v6.1", True, False),
    (0, 1, "v6.1", True, False),  # the running app was built before v6.1: no mode recorded
    (3, 0, "v6.1", True, False),  # nor in the update
])
def test_spi_flash_mode_check(flash, app, running_mode, new_mode, idf_release, verify, refused):
    """v6.1's esp_ota_check_image_validity compares the spi_flash_mode of the new app's description
    with the running app's, after the chip checks and before anything is written."""
    build_running_app_for(flash, running_mode)
    before = flash.read_bytes()
    with serve_files({"app.bin": with_spi_flash_mode(app, new_mode)}) as srv:
        result, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release, verify_spi_mode=verify)
    after = flash.read_bytes()
    if refused:
        assert isinstance(result, EspError) and result.esp_err == "ESP_ERR_OTA_SPI_MODE_MISMATCH"
        assert "running app was built for DIO (3), the new app for QIO (1)" in result.message
        assert events[-3:] == [("ESP_HTTPS_OTA_VERIFY_CHIP_ID", 0),
                               ("ESP_HTTPS_OTA_VERIFY_CHIP_REVISION", int.from_bytes(app[15:17], "little")),
                               ("ESP_HTTPS_OTA_ABORT", None)]
        assert after == before
    else:
        assert not isinstance(result, EspError), result
        assert result.boot_partition_updated and after[SLOT : SLOT + len(app)] == with_spi_flash_mode(app, new_mode)


def test_cli_spi_flash_mode_mismatch(flash, app, tmp_path):
    running_app = tmp_path / "app0.bin"  # this one has an app description (the update starts with padding)
    running_app.write_bytes(build_running_app_for(flash, 4))
    with serve_files({"app.bin": with_spi_flash_mode(app, 3)}) as srv:
        command = ["ota", str(flash), "--url", srv.url("app.bin"), "--cert-pem", str(srv.tls.ca_pem),
                   "--idf-release", "v6.1"]
        refused = CliRunner().invoke(cli, command)
        accepted = CliRunner().invoke(cli, [*command, "--no-verify-spi-mode", "--json"])
    assert refused.exit_code == EXIT_OTA_FAILED and refused.stderr.count("\n") == 1
    assert "ESP_ERR_OTA_SPI_MODE_MISMATCH" in refused.stderr and "--no-verify-spi-mode" in refused.stderr
    assert accepted.exit_code == 0, accepted.output
    info = json.loads(CliRunner().invoke(cli, ["image-info", str(running_app), "--json"]).output)
    assert info["app_desc"]["spi_flash_mode"] == "DOUT (4)"
    apps = {a["partition"]: a for a in json.loads(CliRunner().invoke(cli, ["info", str(flash), "--json"]).output)["apps"]}
    assert apps["app0"]["spi_flash_mode"] == "DOUT (4)" and apps["app1"]["spi_flash_mode"] is None
    assert "secure_version 0, spi_flash_mode DOUT (4)" in CliRunner().invoke(cli, ["info", str(flash)]).output


@pytest.mark.parametrize("idf_release", ["v5.4.4", "v5.5"])
def test_too_new_chip_revision_per_release(flash, app, idf_release):
    """An image for chip revision v3.1 and newer on a v3.0 ESP32. From v5.5 esp_https_ota refuses it on
    the first bytes, before any write; before, the whole image lands in the slot and esp_ota_end's
    esp_image_verify refuses it. The header is outside the checksum, and this image has no SHA-256."""
    v31 = app[:15] + (301).to_bytes(2, "little") + app[17:]
    before = flash.read_bytes()
    with serve_files({"app.bin": v31}) as srv:
        err, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release)
    after = flash.read_bytes()
    assert "Image requires chip rev >= v3.1, but chip is v3.0" in err.message
    assert after[OTADATA : OTADATA + 2 * SECTOR] == before[OTADATA : OTADATA + 2 * SECTOR]
    if idf_release == "v5.5":
        assert err.esp_err == "ESP_ERR_INVALID_VERSION" and after == before
        assert events[-2:] == [("ESP_HTTPS_OTA_VERIFY_CHIP_REVISION", 301), ("ESP_HTTPS_OTA_ABORT", None)]
    else:
        assert err.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED" and after[SLOT : SLOT + len(v31)] == v31
        assert events[-1] == ("ESP_HTTPS_OTA_FINISH", None)  # esp_https_ota_finish ran esp_ota_end


def test_bulk_erase_failure_touches_only_the_slot(flash, realdata):
    s2_app = (realdata / "esptool/images/esp_idf_blink_esp32s2.bin").read_bytes()
    before = flash.read_bytes()
    with serve_files({"app.bin": s2_app}) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, bulk_flash_erase=True)
    assert err.esp_err == "ESP_ERR_INVALID_VERSION"
    after = flash.read_bytes()
    erased = (len(s2_app) + SECTOR - 1) // SECTOR * SECTOR
    assert after[SLOT : SLOT + erased] == b"\xff" * erased
    assert outside(after, (SLOT, SLOT_SIZE)) == outside(before, (SLOT, SLOT_SIZE))


def test_html_page_instead_of_image(flash):
    page = b"<!DOCTYPE html>\n<html><head><title>Login</title></head><body>" + b"x" * 2000 + b"</body></html>"
    with serve_files({"app.bin": page}) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem)
    # ESP-IDF checks the chip id (bytes 12-13) before esp_ota_write's magic byte check
    assert err.esp_err == "ESP_ERR_INVALID_VERSION"
    assert "first byte 0x3c '<'" in err.message and "HTML page" in err.message


def test_image_shorter_than_header_is_refused(flash, app):
    with serve_files({"app.bin": app[:1000]}) as srv:
        err, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem)
    assert err.esp_err == "ESP_FAIL" and "at least 1024 bytes" in err.message and "sent 1000" in err.message
    assert "ESP image" not in err.message  # it starts like one: nothing more to say
    assert events[-1] == ("ESP_HTTPS_OTA_ABORT", None)


def test_short_html_page_says_what_arrived(flash):
    """A small error page served with 200 never reaches the chip id check: it is shorter than the
    1024 header bytes esp_https_ota reads first, and the message still says what it was."""
    page = b"<html><body><h1>404 Not Found</h1></body></html>\n"
    with serve_files({"app.bin": page}) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem)
    assert err.esp_err == "ESP_FAIL" and f"sent {len(page)};" in err.message
    assert "first byte 0x3c '<'" in err.message and "HTML page" in err.message


def test_image_larger_than_slot(flash, app):
    big = app + b"\x00" * (SLOT_SIZE - len(app) + 8192)
    before = flash.read_bytes()
    for bulk in (True, False):
        with serve_files({"app.bin": big}) as srv:
            err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, bulk_flash_erase=bulk)
        assert err.esp_err == "ESP_ERR_INVALID_SIZE", err
        after = flash.read_bytes()
        assert outside(after, (SLOT, SLOT_SIZE)) == outside(before, (SLOT, SLOT_SIZE))


@pytest.mark.parametrize("idf_release", ["v6.0.2", "v6.1"])
def test_retry_after_a_failed_bulk_erase(flash, app, idf_release):
    """An app that retries esp_https_ota without a reset: the first try announced an image longer than
    the slot, so esp_ota_begin's bulk erase failed and left its OTA registered. v6.1 then refuses the
    slot (ESP_ERR_OTA_ALREADY_IN_PROGRESS) until the device resets; v6.0.x retries fine."""
    big = app + b"\x00" * (SLOT_SIZE - len(app) + 8192)
    with serve_files({"big.bin": big, "app.bin": app}) as srv, Device.open(flash, idf_release=idf_release) as dev:
        def ota(name):
            try:
                return api.https_ota(dev, srv.url(name), cert_pem=srv.tls.ca_pem, bulk_flash_erase=True)
            except EspError as err:
                return err
        assert ota("big.bin").esp_err == "ESP_ERR_INVALID_SIZE"
        retry = ota("app.bin")
        if idf_release == "v6.1":
            assert isinstance(retry, EspError) and retry.esp_err == "ESP_ERR_OTA_ALREADY_IN_PROGRESS"
            dev.boot()
            retry = ota("app.bin")
        assert not isinstance(retry, EspError), retry
        assert retry.boot_partition_updated


def test_dropped_connection_aborts(flash, app):
    before = flash.read_bytes()
    with serve_files({"app.bin": app}, faults=Faults(drop_after=100_000)) as srv:
        err, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem)
    assert err.esp_err == "ESP_FAIL" and "connection closed before complete data" in err.message
    assert events[-2:] == [("ESP_HTTPS_OTA_WRITE_FLASH", 100_000), ("ESP_HTTPS_OTA_ABORT", None)]
    after = flash.read_bytes()
    assert after[SLOT : SLOT + 100_000] == app[:100_000]
    assert outside(after, (SLOT, SLOT_SIZE)) == outside(before, (SLOT, SLOT_SIZE))


def test_corrupt_image_fails_validation(flash, app):
    bad = bytearray(app)
    bad[200_000] ^= 0xFF
    before = flash.read_bytes()
    with serve_files({"app.bin": bytes(bad)}) as srv:
        err, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem)
    assert err.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED"
    assert events[-1] == ("ESP_HTTPS_OTA_FINISH", None)
    assert outside(flash.read_bytes(), (SLOT, SLOT_SIZE)) == outside(before, (SLOT, SLOT_SIZE))


def _expected_ranges(length: int, size: int, release: str) -> list[str | None]:
    """The Range headers esp_https_ota sends after the HEAD request (esp_https_ota.c: the first one
    changed in v5.5)."""
    if release == "v5":
        first = f"bytes=0-{size - 1}" if length > size else None
    else:
        end = size - 1 if length > size else length
        first = f"bytes=0-{end}" if end < length else None
    ranges, done = [first], min(size, length)
    while done < length:
        ranges.append(f"bytes={done}-{done + size - 1}" if length - done > size else f"bytes={done}-")
        done += size
    return ranges


@pytest.mark.parametrize("idf_release", ["v5", "v5.5", "newest"])
@pytest.mark.parametrize("size", [65536, 100_000, 400_000])
def test_partial_download_request_sequence(flash, app, idf_release, size):
    with serve_files({"app.bin": app}) as srv:
        result, events = run(
            flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release,
            partial_http_download=True, max_http_request_size=size,
        )
        seen = [(r.method, r.range) for r in srv.requests]
    assert result.boot_partition_updated
    assert seen == [("HEAD", None)] + [("GET", r) for r in _expected_ranges(len(app), size, idf_release)]
    assert flash.read_bytes()[SLOT : SLOT + len(app)] == app
    assert events[-1] == ("ESP_HTTPS_OTA_FINISH", None)


@pytest.mark.parametrize("idf_release,keep_alive", [("v5.4.3", False), ("v5.4.4", True), ("v5.5.1", False),
                                                   ("v5.5.2", True), ("v6.0", True)])
def test_partial_download_connections_per_release(flash, app, idf_release, keep_alive):
    """esp_https_ota closes the connection after the HEAD request; between ranges it closed it too
    (a new TCP connection and TLS handshake per range) until v5.4.4 and v5.5.2, which keep a
    persistent connection."""
    with serve_files({"app.bin": app}) as srv:
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release,
                        partial_http_download=True, max_http_request_size=100_000)
        ports = [r.client_port for r in srv.requests]
    assert result.boot_partition_updated and len(ports) == 1 + 4  # HEAD, then 4 ranges of a 357 KB image
    assert len(set(ports)) == (2 if keep_alive else 5) and ports[0] not in ports[1:]


@pytest.mark.parametrize("idf_release,esp_err", [("v5", "ESP_FAIL"), ("v5.5", "ESP_ERR_NOT_SUPPORTED")])
def test_head_answered_401_without_a_challenge(flash, app, idf_release, esp_err):
    """From v5.5 esp_http_client_perform returns esp_http_client_add_auth's error; before, the HEAD
    request simply did not get its 200."""
    with serve_files({"app.bin": app}, faults=Faults(status=401)) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release, partial_http_download=True)
        assert [r.method for r in srv.requests] == ["HEAD"]
    assert err.esp_err == esp_err


def test_v4_one_shot_takes_only_the_http_config(flash, app):
    """Before v5.0, esp_https_ota() took an esp_http_client_config_t: no partial download or bulk erase."""
    before = flash.read_bytes()
    with serve_files({"app.bin": app}) as srv:
        with pytest.raises(InputError, match="partial_http_download, bulk_flash_erase need v5.0"):
            run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v4", partial_http_download=True,
                bulk_flash_erase=True)
        assert srv.requests == []
    assert flash.read_bytes() == before


def test_partial_download_before_the_header_count_fix(flash, app):
    """Until v5.0.6 and v5.1.3 the first perform counted the 1024 header bytes twice. A partial download
    then asks for its second range 1024 bytes too late, and esp_ota_end refuses the image with the hole;
    an image that fits in one range never reaches the end state: ESP_OK, but no boot switch."""
    otadata_before = flash.read_bytes()[OTADATA : OTADATA + 2 * SECTOR]
    with serve_files({"app.bin": app}) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v5.1.2",
                     partial_http_download=True, max_http_request_size=100_000)
        ranges = [r.range for r in srv.requests]
        srv.requests.clear()
        whole, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v5.1.2",
                       partial_http_download=True, max_http_request_size=len(app))
        assert [r.range for r in srv.requests] == [None, None]
        srv.requests.clear()
        fixed, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v5.1.3",
                       partial_http_download=True, max_http_request_size=100_000)
        assert [r.range for r in srv.requests] == [None] + _expected_ranges(len(app), 100_000, "v5")
    assert ranges[:3] == [None, "bytes=0-99999", "bytes=101024-201023"]
    assert err.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED"
    assert not whole.boot_partition_updated and whole.image_len_read == len(app) + 1024
    assert whole.bytes_written == len(app)
    assert flash.read_bytes()[OTADATA : OTADATA + 2 * SECTOR] != otadata_before  # only the fixed run switched
    assert fixed.boot_partition_updated


def test_v4_reads_a_289_byte_header_and_writes_in_289_byte_reads(flash, app):
    """Before v5.0 the header esp_https_ota reads first, and its smallest read buffer, is 289 bytes
    (image, segment and app description headers, and one more byte): each esp_ota_write is 289 bytes."""
    writes = {}
    for release in ("v4", "v5"):
        with serve_files({"app.bin": app}) as srv, Device.open(flash, idf_release=release) as dev:
            programs = []
            dev.flash.hooks.append(
                lambda op: programs.append(op.length) if op.kind == "program" and op.addr >= SLOT else None)
            result = api.https_ota(dev, srv.url("app.bin"), cert_pem=srv.tls.ca_pem)
        assert result.boot_partition_updated and sum(programs) == len(app)
        writes[release] = programs
    assert writes["v4"][:3] == [289, 289, 289] and writes["v5"][:3] == [1024, 1024, 1024]


def test_partial_download_without_head_support(flash, app):
    with serve_files({"app.bin": app}, faults=Faults(no_head=True)) as srv:
        for release in ("v5", "v5.5.5"):  # HEAD must answer 200 until v6.0
            err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=release, partial_http_download=True)
            assert err.esp_err == "ESP_FAIL" and "HEAD" in err.message
        srv.requests.clear()
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v6.0", partial_http_download=True)
        seen = [(r.method, r.range, r.status) for r in srv.requests]
    assert result.boot_partition_updated
    assert seen[:2] == [("HEAD", None, 405), ("GET", "bytes=0-0", 206)]
    assert seen[2][:2] == ("GET", "bytes=0-65535")


def test_request_writes_pack_the_transmit_buffer():
    """http_header_generate_string keeps 3 bytes of every buffer for the blank line and a NUL."""
    ua, host = ("User-Agent", "ESP32 HTTP Client/1.0"), ("Host", "h")
    line_ua_host = len("User-Agent: ESP32 HTTP Client/1.0\r\n") + len("Host: h\r\n")  # 35 + 9
    fits = request_writes("GET / HTTP/1.1\r\n", [ua, host], 512)
    assert fits.complete and fits.writes == (b"GET / HTTP/1.1\r\nUser-Agent: ESP32 HTTP Client/1.0\r\nHost: h\r\n\r\n",)
    line = "GET /" + "a" * (512 - line_ua_host - 3 - 16) + " HTTP/1.1\r\n"  # leaves exactly room for both
    assert request_writes(line, [ua, host], 512).writes == (line.encode() + fits.writes[0][16:],)
    line = "GET /" + "a" * (512 - line_ua_host - 3 - 15) + " HTTP/1.1\r\n"  # one byte more: Host goes next
    split = request_writes(line, [ua, host], 512)
    assert split.complete and split.writes == (line.encode() + b"User-Agent: ESP32 HTTP Client/1.0\r\n", b"Host: h\r\n\r\n")
    line = "GET /" + "a" * (512 - 16 - 35 - 2) + " HTTP/1.1\r\n"  # User-Agent no longer fits after it
    nothing = request_writes(line, [ua, host], 512)
    assert nothing.line_fits and nothing.writes == () and nothing.headers_sent == 0
    assert not request_writes("GET /" + "a" * 496 + " HTTP/1.1\r\n", [ua], 512).line_fits  # 512 bytes: no NUL
    long = request_writes("GET / HTTP/1.1\r\n", [ua, ("Authorization", "x" * 600), host], 512)
    assert long.headers_sent == 1 and long.writes == (b"GET / HTTP/1.1\r\nUser-Agent: ESP32 HTTP Client/1.0\r\n",)


def test_long_urls_and_headers_need_buffer_size_tx(flash, app):
    """esp_http_client writes the request through a 512-byte buffer by default. A URL like a presigned
    S3 link does not fit it: the device connects, logs "Out of buffer" and fails without sending. A
    header line longer than the buffer (a bearer token) cuts the request before its blank line: the
    device waits for an answer until it times out. buffer_size_tx fixes both."""
    before = flash.read_bytes()
    token = ("Authorization", "Bearer " + "t" * 700)
    with serve_files({"app.bin": app}) as srv:
        presigned = srv.url("app.bin") + "?X-Amz-Signature=" + "a" * 600
        out, _ = run(flash, presigned, srv.tls.ca_pem)
        cut, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, headers=(token,), timeout_ms=300,
                     idf_release="v5.5")
        failed_requests = list(srv.requests)
        long_url, _ = run(flash, presigned, srv.tls.ca_pem, buffer_size_tx=1024)
        with_token, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, headers=(token,), buffer_size_tx=1024)
        served = [(r.status, r.header("Authorization") == token[1]) for r in srv.requests]
        cli_args = ["ota", str(flash), "--url", presigned, "--cert-pem", str(srv.tls.ca_pem)]
        refused = CliRunner().invoke(cli, cli_args)
        accepted = CliRunner().invoke(cli, cli_args + ["--buffer-size-tx", "1024"])
    assert refused.exit_code == EXIT_OTA_FAILED and "Out of buffer" in refused.output
    assert accepted.exit_code == 0, accepted.output
    line = f"GET /app.bin?{presigned.split('?', 1)[1]} HTTP/1.1\r\n"
    assert out.esp_err == "ESP_FAIL" and f"Out of buffer: the request line ({len(line)} bytes" in out.message
    assert cut.esp_err == "ESP_ERR_HTTP_EAGAIN" and "'Authorization' (724 bytes)" in cut.message
    first = "GET /app.bin HTTP/1.1\r\nUser-Agent: ESP32 HTTP Client/1.0\r\n" + f"Host: {presigned.split('/')[2]}\r\n"
    assert f"sent only {len(first)} bytes" in cut.message
    assert failed_requests == []  # neither failure reached the server as a request
    assert long_url.boot_partition_updated and with_token.boot_partition_updated
    assert served == [(200, False), (200, True)]
    assert before != flash.read_bytes()


def test_content_length_zero_on_gets_before_v5_4(flash, app):
    """Until v5.4 every request esp_http_client sends, GET and HEAD included, says "Content-Length: 0";
    some servers (AWS load balancers) answer that with 400, and the OTA fails in begin. From v5.4 GET
    and HEAD carry no Content-Length."""
    before = flash.read_bytes()
    with serve_files({"app.bin": app}, faults=Faults(reject_content_length=True)) as srv:
        err, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v5.3.5", partial_http_download=True)
        refused = [(r.method, r.status, r.header("Content-Length")) for r in srv.requests]
        untouched = flash.read_bytes() == before
        srv.requests.clear()
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v5.4", partial_http_download=True)
        sent = {(r.method, r.header("Content-Length")) for r in srv.requests}
    assert refused == [("HEAD", 400, "0")]
    assert err.esp_err == "ESP_FAIL" and "status 400" in err.message and untouched
    assert events == [("ESP_HTTPS_OTA_START", None)]
    assert result.boot_partition_updated and sent == {("HEAD", None), ("GET", None)}


def test_length_probe_206_without_a_usable_content_range(flash, app):
    """v6.0's fallback takes the length from the 206's Content-Range. esp_http_client's content_range
    starts at 0 and only a Content-Range header sets it, so a 206 without one gives length 0: no Range
    on the download, one GET of the whole body, esp_ota_end, no boot switch, and ESP_OK. A total of
    ``*`` gives -1, which begin refuses."""
    otadata_before = flash.read_bytes()[OTADATA : OTADATA + 2 * SECTOR]
    with serve_files({"app.bin": app}, faults=Faults(no_head=True, content_range="")) as srv:
        result, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v6.0.2",
                             partial_http_download=True, max_http_request_size=100_000)
        seen = [(r.method, r.range, r.status) for r in srv.requests]
        srv.requests.clear()
        srv.faults.content_range = "bytes 0-0/*"
        unknown, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v6.0.2",
                         partial_http_download=True, max_http_request_size=100_000)
        unknown_seen = [(r.method, r.range, r.status) for r in srv.requests]
    after = flash.read_bytes()
    assert seen == [("HEAD", None, 405), ("GET", "bytes=0-0", 206), ("GET", None, 200)]
    assert not result.boot_partition_updated and result.image_length == 0 and result.bytes_written == len(app)
    assert after[SLOT : SLOT + len(app)] == app and after[OTADATA : OTADATA + 2 * SECTOR] == otadata_before
    assert events[-1] == ("ESP_HTTPS_OTA_FINISH", None)
    assert unknown.esp_err == "ESP_FAIL" and "no total in its Content-Range" in unknown.message
    assert unknown_seen == [("HEAD", None, 405), ("GET", "bytes=0-0", 206)]


@pytest.mark.parametrize("value,total", [("bytes 0-0/4096", 4096), ("bytes 0-0/*", -1), ("bytes 0-0", -1),
                                         ("bytes 0-0/0", -1), ("bytes 0-0/12x", -1), ("bytes 0-0/+7", 7),
                                         ("bytes 0-0/99999999999", 0x7FFFFFFF)])
def test_content_range_total_reads_as_esp_http_client_does(value, total):
    from esp_ota_emu.https_ota.client import _content_range_total

    assert _content_range_total(value) == total


@pytest.mark.parametrize("idf_release", ["v5", "v5.5.5", "v6.0"])
def test_partial_download_when_head_gives_no_length(flash, app, idf_release):
    """A HEAD answer without Content-Length (here: chunked). Until v6.0 esp_https_ota sends no Range,
    takes the whole body in one GET and, the length never matching, runs esp_ota_end but not
    esp_ota_set_boot_partition: esp_https_ota() returns ESP_OK. v6.0 refuses it in begin."""
    otadata_before = flash.read_bytes()[OTADATA : OTADATA + 2 * SECTOR]
    with serve_files({"app.bin": app}, faults=Faults(chunked=True)) as srv:
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release,
                        partial_http_download=True)
        seen = [(r.method, r.range) for r in srv.requests]
    after = flash.read_bytes()
    assert after[OTADATA : OTADATA + 2 * SECTOR] == otadata_before
    if idf_release == "v6.0":
        assert isinstance(result, EspError) and result.esp_err == "ESP_FAIL" and "how long" in result.message
        assert seen == [("HEAD", None)]
        return
    assert seen == [("HEAD", None), ("GET", None)]
    assert not result.boot_partition_updated and result.bytes_written == len(app)
    assert after[SLOT : SLOT + len(app)] == app


def test_resume_after_interruption(flash, app):
    faults = Faults(drop_after=200_000)
    with serve_files({"app.bin": app}, faults=faults) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="newest", resume=True)
        assert err.esp_err == "ESP_FAIL"
        with Device.open(flash) as dev:
            progress = dev.state.resume[srv.url("app.bin")]
        assert progress == {"partition": "app1", "bytes_written": 200_000}
        faults.drop_after = None
        srv.requests.clear()
        result, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="newest", resume=True)
        assert [(r.range, r.status) for r in srv.requests] == [(f"bytes={progress['bytes_written']}-", 206)]
    assert result.resumed_from == progress["bytes_written"] and result.boot_partition_updated
    assert flash.read_bytes()[SLOT : SLOT + len(app)] == app
    assert not any(name.startswith("ESP_HTTPS_OTA_VERIFY") for name, _ in events)
    with Device.open(flash) as dev:
        assert dev.state.resume == {}


def test_resumed_advanced_ota_reads_the_app_description_from_the_slot(flash, realdata):
    """ESP-IDF's advanced example calls esp_https_ota_get_img_desc before perform. On a resumed OTA the
    description is already in the slot: it is read from there, and the body is written on from the
    saved offset, not from 1024 bytes later."""
    app = real_app(realdata)
    with serve_files({"app.bin": app}, faults=Faults(drop_after=100_000)) as srv:
        url = srv.url("app.bin")
        err, _ = run(flash, url, srv.tls.ca_pem, idf_release="newest", resume=True)
        assert err.esp_err == "ESP_FAIL"
        srv.faults.drop_after = None
        srv.requests.clear()
        with Device.open(flash) as dev:
            config = OtaConfig(HttpConfig(url, cert_pem=srv.tls.ca_pem.read_text()), ota_resumption=True,
                               ota_image_bytes_written=100_000)
            ota = EspHttpsOta(dev, config)
            ota.begin()
            desc = ota.get_img_desc()
            while ota.perform():
                pass
            assert ota.finish()
        assert [r.range for r in srv.requests] == ["bytes=100000-"]
    assert desc == app[32 : 32 + 256]
    assert flash.read_bytes()[SLOT : SLOT + len(app)] == app


@pytest.mark.parametrize("idf_release,gets", [("v5.5.4", 2), ("v6.0", 1)])
def test_resumable_partial_download_in_one_range(flash, app, idf_release, gets):
    """v5.5.x compiled out the partial-download exemption of ota_resumption's 206 check: a whole image
    in one range comes back 200, counts as a refused Range, and is fetched again from byte 0."""
    with serve_files({"app.bin": app}) as srv:
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release, resume=True,
                        partial_http_download=True, max_http_request_size=len(app))
        seen = [(r.method, r.range, r.status) for r in srv.requests]
    assert result.boot_partition_updated
    assert seen == [("HEAD", None, 200)] + [("GET", None, 200)] * gets


def test_features_a_release_does_not_have_are_refused(flash, app):
    """The advanced API on releases without partial download (before v4.4) or decrypt_cb (before v5.0),
    and the CA bundle, which counts as server verification only from v4.3.4."""
    with serve_files({"app.bin": app}) as srv:
        for release, options in (("v4.3.7", {"partial_http_download": True}), ("v4.4.6", {"decrypt": lambda d: d})):
            with Device.open(flash, idf_release=release) as dev:
                ota = EspHttpsOta(dev, OtaConfig(HttpConfig(srv.url("app.bin"), cert_pem=srv.tls.ca_pem.read_text()),
                                                 **options))
                with pytest.raises(EspError) as err:
                    ota.begin()
            assert err.value.esp_err == "ESP_ERR_NOT_SUPPORTED"
        assert srv.requests == []
        bundle_only, _ = run(flash, srv.url("app.bin"), idf_release="v4.3.3", crt_bundle=True)
        assert srv.requests == []
        bundle_later, _ = run(flash, srv.url("app.bin"), idf_release="v4.3.4", crt_bundle=True)
    assert "ESP_ERR_INVALID_ARG" in bundle_only.message and "CA bundle" not in bundle_only.message
    assert bundle_later.esp_err == "ESP_FAIL" and "certificate" in bundle_later.message  # the test CA is not in it


@pytest.mark.parametrize("fault", ["ignore_range", "range_not_satisfiable"])
def test_resume_restarts_from_zero_when_range_refused(flash, app, fault):
    """A server that answers 200 (or 416) to ``Range: bytes=N-`` must not produce a shifted image."""
    with serve_files({"app.bin": app}) as srv:
        url = srv.url("app.bin")
        with Device.open(flash) as dev:
            dev.state.resume = {url: {"partition": "app1", "bytes_written": 50_000}}
            dev.save()
        setattr(srv.faults, fault, True)
        result, events = run(flash, url, srv.tls.ca_pem, idf_release="newest", resume=True)
        seen = [(r.range, r.status) for r in srv.requests]
    status = 200 if fault == "ignore_range" else 416
    assert seen == [("bytes=50000-", status), (None, 200)]
    assert result.resumed_from == 0 and result.boot_partition_updated
    assert flash.read_bytes()[SLOT : SLOT + len(app)] == app
    assert ("ESP_HTTPS_OTA_VERIFY_CHIP_ID", 0) in events


def test_resume_is_refused_before_v5_5_and_with_decryption(flash, app):
    with serve_files({"app.bin": app}) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v5.4.4", resume=True)
        assert err.esp_err == "ESP_ERR_NOT_SUPPORTED" and srv.requests == []
        for release in ("v5.5", "v5.5.4"):
            result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=release, resume=True)
            assert result.boot_partition_updated
        # from v5.5.4 a fresh start asks with a Range too, to learn at once whether the server has them
        assert [r.range for r in srv.requests] == [None, "bytes=0-"]
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="newest", resume=True,
                     decrypt=lambda data: data)
        assert err.esp_err == "ESP_ERR_NOT_SUPPORTED"


def test_resume_before_v5_5_4_writes_a_200_answer_shifted(flash, app):
    """v5.5 to v5.5.3 take a server's 200 answer to ``Range: bytes=N-`` as the rest of the image: the
    whole image goes into the slot at offset N (progress passes 100%), and esp_ota_end refuses what
    the slot then holds. otadata is untouched; with a server that honours Range the resume works."""
    offset = 50_000
    before = flash.read_bytes()
    with serve_files({"app.bin": app}) as srv:
        url = srv.url("app.bin")
        with Device.open(flash) as dev:
            dev.state.resume = {url: {"partition": "app1", "bytes_written": offset}}
            dev.save()
        srv.faults.ignore_range = True
        err, events = run(flash, url, srv.tls.ca_pem, idf_release="v5.5.3", resume=True)
        seen = [(r.range, r.status) for r in srv.requests]
    after = flash.read_bytes()
    written = [d for n, d in events if n == "ESP_HTTPS_OTA_WRITE_FLASH"]
    assert seen == [(f"bytes={offset}-", 200)]
    assert err.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED"
    assert written[-1] == offset + len(app) and written[-1] / len(app) > 1.1  # the "115%" users saw
    assert after[SLOT + offset : SLOT + offset + len(app)] == app  # the whole image, shifted by the offset
    assert after[OTADATA : OTADATA + 2 * SECTOR] == before[OTADATA : OTADATA + 2 * SECTOR]


def test_resume_before_v5_5_4_leaves_a_416_unmodelled(flash, app):
    with serve_files({"app.bin": app}, faults=Faults(range_not_satisfiable=True)) as srv:
        url = srv.url("app.bin")
        with Device.open(flash) as dev:
            dev.state.resume = {url: {"partition": "app1", "bytes_written": 50_000}}
            dev.save()
        with pytest.raises(InputError, match="after a 416 over the same connection"):
            run(flash, url, srv.tls.ca_pem, idf_release="v5.5.2", resume=True)


def test_redirects_are_followed(flash, app):
    with serve_files({"app.bin": app}, faults=Faults(redirects=3, redirect_status=307)) as srv:
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem)
        assert [(r.path, r.status) for r in srv.requests] == [
            ("/app.bin", 307), ("/_redirect/2/app.bin", 307), ("/_redirect/1/app.bin", 307),
            ("/_redirect/0/app.bin", 200),
        ]
    assert result.boot_partition_updated


def test_redirect_to_another_host_sets_the_bare_host_name(flash, app):
    """esp_http_client_set_url replaces Host by the new host name without its port."""
    with serve_files({"app.bin": app}, faults=Faults(redirects=1, redirect_host="localhost")) as srv:
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem)
        hosts = [r.header("Host") for r in srv.requests]
    assert result.boot_partition_updated
    assert hosts == [f"127.0.0.1:{srv.port}", "localhost"]


@pytest.mark.parametrize("idf_release,refused", [("v5.5.4", False), ("v5.5.5", True), ("v6.0.2", False),
                                                 ("v6.1", True)])
def test_redirect_of_an_https_origin_per_release(flash, app, idf_release, refused):
    """v5.5.5's and v6.1's esp_http_client follow an https:// origin's redirect only to a Location starting with
    https:// (ESP_ERR_HTTP_REDIRECT_DOWNGRADE), so a relative Location is refused too; v6.0.x lacks
    that check."""
    with serve_files({"app.bin": app}, faults=Faults(redirects=1)) as srv:
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release)
        statuses = [r.status for r in srv.requests]
        srv.faults.redirect_host = "localhost"  # an absolute https:// Location is always followed
        absolute, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release)
    assert absolute.boot_partition_updated
    if refused:
        assert isinstance(result, EspError) and result.esp_err == "ESP_ERR_HTTP_REDIRECT_DOWNGRADE"
        assert statuses == [302]
    else:
        assert result.boot_partition_updated and statuses == [302, 200]


@pytest.mark.parametrize("idf_release,esp_err,requests", [
    ("v4.4.7", "ESP_ERR_HTTP_MAX_REDIRECT", 11),  # asks the same URL again, counting each as a redirect
    ("v5.0", "ESP_ERR_HTTP_MAX_REDIRECT", 11),
    ("v5.0.1", "ESP_ERR_INVALID_ARG", 1),  # ESP_ERROR_CHECK: the device aborts
    ("v5.0.2", "ESP_FAIL", 1),
    ("v6.0.2", "ESP_FAIL", 1),
    ("v6.1", "ESP_ERR_INVALID_ARG", 1),  # set_redirection's own error
])
def test_redirect_without_location_in_the_head_request(flash, app, idf_release, esp_err, requests):
    """A 302 without Location answers the partial download's HEAD, which esp_http_client_perform sends:
    what esp_http_check_response makes of set_redirection's ESP_ERR_INVALID_ARG changed four times.
    (esp_https_ota_begin through the advanced API: v4.4's one-shot esp_https_ota() has no partial download.)"""
    before = flash.read_bytes()
    with serve_files({"app.bin": app}, faults=Faults(redirects=1, redirect_location="")) as srv, \
            Device.open(flash, idf_release=idf_release) as dev:
        ota = EspHttpsOta(dev, OtaConfig(HttpConfig(srv.url("app.bin"), cert_pem=srv.tls.ca_pem.read_text()),
                                         partial_http_download=True))
        with pytest.raises(EspError) as err:
            ota.begin()
        heads = [(r.method, r.path, r.status) for r in srv.requests]
    assert err.value.esp_err == esp_err
    assert heads == [("HEAD", "/app.bin", 302)] * requests
    assert ("aborts here and resets" in err.value.message) == (idf_release == "v5.0.1")
    assert flash.read_bytes() == before


def test_unparsable_location_per_path(flash, app):
    """A relative Location without its leading / fails http_parser_parse_url in set_redirection: the
    GET of esp_https_ota's own loop passes that error on in every release, the HEAD's perform (v6.0.x)
    turns it into ESP_FAIL."""
    with serve_files({"app.bin": app}, faults=Faults(redirects=1, redirect_location="app.bin")) as srv:
        get, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v6.0.2")
        head, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v6.0.2", partial_http_download=True)
    assert get.esp_err == "ESP_ERR_INVALID_ARG" and "'app.bin'" in get.message
    assert head.esp_err == "ESP_FAIL" and "'app.bin'" in head.message


# v4.4.7's esp_http_client does not count these redirects, and its esp_https_ota() says ESP_FAIL for any failed begin
@pytest.mark.parametrize("idf_release,esp_err", [("newest", "ESP_ERR_HTTP_MAX_REDIRECT"), ("v4.4.7", "ESP_FAIL")])
def test_endless_redirects_stop(flash, app, idf_release, esp_err):
    with serve_files({"app.bin": app}, faults=Faults(redirects=10_000, redirect_host="localhost")) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release)
        assert len(srv.requests) == EMULATOR_REDIRECT_LIMIT + 1
    assert err.esp_err == esp_err and f"{EMULATOR_REDIRECT_LIMIT} redirects in a row" in err.message


@pytest.mark.parametrize("idf_release,esp_err,ends", [
    ("v4.4.7", None, "authorized"),  # the redirect is not counted: one authorization retry is left
    ("v5.0.1", None, "authorized"),
    ("v5.0.2", "ESP_FAIL", "forever"),  # counted: add_auth gives up, esp_https_ota asks again without it
    ("v5.1", "ESP_FAIL", "max_authorization_retries"),  # ... until its own count of 401s runs out
    ("v5.5", "ESP_FAIL", "max_authorization_retries"),  # add_auth's refusal ends the OTA at once
])
def test_a_redirect_uses_up_an_authorization_retry_from_v5_0_2(flash, app, idf_release, esp_err, ends):
    """esp_http_client keeps one redirect_counter for redirects and 401 retries. From v5.0.2 its
    set_redirection counts the redirects esp_https_ota follows, so with max_authorization_retries 1 a
    redirect to a server that asks for a password leaves no retry to answer it."""
    with serve_files({"app.bin": app}, auth=("ota", "s3cret")) as protected:
        tls = protected.tls
        with serve_files({"app.bin": app}, tls=tls,
                         faults=Faults(redirects=1, redirect_location=protected.url("app.bin"))) as front:
            result, _ = run(flash, front.url("app.bin"), tls.ca_pem, idf_release=idf_release,
                            username="ota", password="s3cret", max_authorization_retries=1)
            assert [r.status for r in front.requests] == [302]
            seen = [(r.status, r.header("Authorization") is not None) for r in protected.requests]
    if esp_err is None:
        assert seen == [(401, False), (200, True)] and result.boot_partition_updated
    else:
        assert isinstance(result, EspError) and result.esp_err == esp_err and ends in result.message
        assert all(seen_one == (401, False) for seen_one in seen)


def test_cli_max_authorization_retries(flash, app):
    """--max-authorization-retries reaches esp_http_client: 1 is used up by the redirect (v5.5), 2 is not."""
    with serve_files({"app.bin": app}, auth=("ota", "s3cret")) as protected:
        with serve_files({"app.bin": app}, tls=protected.tls,
                         faults=Faults(redirects=1, redirect_location=protected.url("app.bin"))) as front:
            command = ["ota", str(flash), "--url", front.url("app.bin"), "--cert-pem", str(protected.tls.ca_pem),
                       "--username", "ota", "--password", "s3cret", "--idf-release", "v5.5"]
            refused = CliRunner().invoke(cli, [*command, "--max-authorization-retries", "1"])
            accepted = CliRunner().invoke(cli, [*command, "--max-authorization-retries", "2"])
    assert refused.exit_code == EXIT_OTA_FAILED and "max_authorization_retries" in refused.stderr
    assert accepted.exit_code == 0, accepted.output


@pytest.mark.parametrize("scheme", ["Basic", "Digest"])
def test_auth_answers_the_401(flash, app, scheme):
    with serve_files({"app.bin": app}, auth=("ota", "s3cret"), auth_scheme=scheme) as srv:
        url = srv.url("app.bin").replace("https://", "https://ota:s3cret@")
        result, _ = run(flash, url, srv.tls.ca_pem)
        seen = [(r.status, (r.header("Authorization") or "").split(" ")[0]) for r in srv.requests]
    assert seen == [(401, ""), (200, scheme)]
    assert result.boot_partition_updated


@pytest.mark.parametrize("scheme,built_out", [("Basic", {"basic_auth": False}), ("Digest", {"digest_auth": False})])
def test_auth_scheme_left_out_of_the_build(flash, app, scheme, built_out):
    """With CONFIG_ESP_HTTP_CLIENT_ENABLE_<scheme>_AUTH off (ESP-IDF's default) esp_http_client_add_auth
    does not know the challenge: up to v5.4 esp_https_ota asks again until max_authorization_retries,
    from v5.5 the OTA ends at once with ESP_ERR_NOT_SUPPORTED. The other scheme is still answered."""
    other = {"basic_auth": False} if scheme == "Digest" else {"digest_auth": False}
    before = flash.read_bytes()
    with serve_files({"app.bin": app}, auth=("ota", "s3cret"), auth_scheme=scheme) as srv:
        for release, requests, esp_err in (("v5.4.4", 11, "ESP_FAIL"), ("v5.5", 1, "ESP_ERR_NOT_SUPPORTED")):
            srv.requests.clear()
            err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=release,
                         username="ota", password="s3cret", **built_out)
            assert err.esp_err == esp_err and [r.status for r in srv.requests] == [401] * requests
            assert flash.read_bytes() == before
        assert f"CONFIG_ESP_HTTP_CLIENT_ENABLE_{scheme.upper()}_AUTH is off" in err.message
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, username="ota", password="s3cret", **other)
    assert result.boot_partition_updated


def test_auth_type_basic_sends_the_credentials_at_once(flash, app):
    """esp_http_client_config_t.auth_type = HTTP_AUTH_TYPE_BASIC: esp_http_client_prepare adds the Basic
    header to the first request, with or without CONFIG_ESP_HTTP_CLIENT_ENABLE_BASIC_AUTH. With a wrong
    password the 401's challenge is one such a build cannot answer: auth_type falls back to none, but
    nothing removes the header, so every retry sends the same credentials again."""
    with serve_files({"app.bin": app}, auth=("ota", "s3cret")) as srv:
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, username="ota", password="s3cret",
                        auth_type="basic", basic_auth=False)
        assert [(r.status, (r.header("Authorization") or "")[:6]) for r in srv.requests] == [(200, "Basic ")]
        srv.requests.clear()
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, username="ota", password="wrong",
                     auth_type="basic", basic_auth=False, idf_release="v5.4.4")
        sent = [r.header("Authorization") for r in srv.requests]
    assert result.boot_partition_updated
    assert err.esp_err == "ESP_FAIL" and len(sent) == 11 and sent[0].startswith("Basic ") and set(sent) == {sent[0]}
    with pytest.raises(InputError, match="auth_type is 'none' or 'basic'"):
        HttpConfig(url="https://x/app.bin", auth_type="digest")


def test_tls_1_3_needs_its_kconfig(flash, app):
    """ESP-IDF's mbedTLS speaks TLS 1.2 only unless CONFIG_MBEDTLS_SSL_PROTO_TLS1_3 is set (v5.0 and newer)."""
    with serve_files({"app.bin": app}) as srv:
        run(flash, srv.url("app.bin"), srv.tls.ca_pem)
        run(flash, srv.url("app.bin"), srv.tls.ca_pem, tls13=True)
        assert [r.tls_version for r in srv.requests] == ["TLSv1.2", "TLSv1.3"]
        assert [r.alpn for r in srv.requests] == [None, None]  # esp_http_client offers no ALPN
        with pytest.raises(InputError, match="no TLS 1.3"):
            run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v4.4.7", tls13=True)
    with serve_files({"app.bin": app}, tls13_only=True) as srv:
        refused, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v5.5")
        accepted, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v5.5", tls13=True)
    assert refused.esp_err == "ESP_ERR_HTTP_CONNECT" and "TLS handshake failed" in refused.message
    assert "--tls13" in refused.message
    assert accepted.boot_partition_updated


def test_sni_is_the_name_esp_tls_checks(flash, app):
    """esp-tls hands mbedTLS the host name it verifies, which is also the SNI; with
    skip_cert_common_name_check it hands none, and the ClientHello carries no server name."""
    with serve_files({"app.bin": app}) as srv:
        url = srv.url("app.bin").replace("127.0.0.1", "localhost")
        run(flash, url, srv.tls.ca_pem)
        run(flash, url, srv.tls.ca_pem, skip_cert_common_name_check=True)
        assert [r.sni for r in srv.requests] == ["localhost", None]


def test_ipv6_host_header(flash, app):
    """_get_host_header brackets an IPv6 address from v5.5 on; before, the Host header reads ::1:port."""
    with serve_files({"app.bin": app}, host="::1") as srv:
        for release in ("v5.4.4", "v5.5"):
            result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=release)
            assert result.boot_partition_updated
        hosts = [r.header("Host") for r in srv.requests]
    assert srv.url("app.bin").startswith("https://[::1]:")
    assert hosts == [f"::1:{srv.port}", f"[::1]:{srv.port}"]


def test_cli_no_basic_auth(flash, app):
    with serve_files({"app.bin": app}, auth=("ota", "s3cret")) as srv:
        url = srv.url("app.bin").replace("https://", "https://ota:s3cret@")
        res = CliRunner().invoke(cli, ["ota", str(flash), "--url", url, "--cert-pem", str(srv.tls.ca_pem),
                                       "--idf-release", "v5.5", "--no-basic-auth"])
        first = srv.requests[0].header("Authorization")
        srv.requests.clear()
        ok = CliRunner().invoke(cli, ["ota", str(flash), "--url", url, "--cert-pem", str(srv.tls.ca_pem),
                                      "--idf-release", "v5.5", "--no-basic-auth", "--auth-type", "basic"])
        assert ok.exit_code == 0, ok.output
        assert len(srv.requests) == 1 and srv.requests[0].header("Authorization").startswith("Basic ")
    assert first is None and res.exit_code == EXIT_OTA_FAILED
    assert "ESP_ERR_NOT_SUPPORTED" in res.output and "CONFIG_ESP_HTTP_CLIENT_ENABLE_BASIC_AUTH is off" in res.output


def test_digest_auth_is_always_built_into_v4_3(flash, app):
    with serve_files({"app.bin": app}, auth=("ota", "s3cret"), auth_scheme="Digest") as srv:
        with pytest.raises(InputError, match="no CONFIG_ESP_HTTP_CLIENT_ENABLE_DIGEST_AUTH"):
            run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v4.3.3", digest_auth=False)
        assert srv.requests == []
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="v4.3.3", username="ota",
                        password="s3cret")
    assert result.boot_partition_updated


def test_wrong_password_gives_up_after_the_retries(flash, app):
    with serve_files({"app.bin": app}, auth=("ota", "s3cret")) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, username="ota", password="wrong",
                     idf_release="newest")
        assert len(srv.requests) == 11 and all(r.status == 401 for r in srv.requests)
        assert err.esp_err == "ESP_FAIL" and "max_authorization_retries" in err.message
        srv.requests.clear()
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, username="ota", password="wrong",
                     idf_release="v5.0.9")  # no max_authorization_retries before v5.1: a device asks forever
        assert len(srv.requests) == 51 and all(r.status == 401 for r in srv.requests)
    assert err.esp_err == "ESP_FAIL" and "forever" in err.message


@pytest.mark.parametrize("idf_release,requests,esp_err", [("v5", 11, "ESP_FAIL"), ("v5.5", 1, "ESP_ERR_NOT_SUPPORTED")])
def test_401_without_a_challenge(flash, app, idf_release, requests, esp_err):
    """Until v5.5 esp_https_ota ignored what esp_http_client_add_auth returned and asked again until
    max_authorization_retries ran out; from v5.5 the unusable challenge ends the OTA at once."""
    with serve_files({"app.bin": app}, faults=Faults(status=401)) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release=idf_release)
        assert len(srv.requests) == requests
    assert err.esp_err == esp_err


def test_error_statuses(flash, app):
    with serve_files({"app.bin": app}, faults=Faults(status=503)) as srv:
        err, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="newest")
    assert err.esp_err == "ESP_FAIL" and "503" in err.message
    assert events == [("ESP_HTTPS_OTA_START", None)]  # begin failed: esp_https_ota() returns, no ABORT
    with serve_files({"app.bin": app}, faults=Faults(status=304)) as srv:
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, idf_release="newest")
    assert err.esp_err == "ESP_ERR_HTTP_NOT_MODIFIED"


def test_plain_http_needs_allow_http(flash, app):
    with serve_files({"app.bin": app}, tls=False) as srv:
        err, _ = run(flash, srv.url("app.bin"))
        assert err.esp_err == "ESP_FAIL" and "ESP_ERR_INVALID_ARG" in err.message
        result, _ = run(flash, srv.url("app.bin"), allow_http=True)
    assert result.boot_partition_updated


def test_plain_http_url_with_a_root_certificate_is_fetched_in_the_clear(flash, app):
    """esp_https_ota_begin checks that a verification option is set, not the URL's scheme: given
    cert_pem, an http:// URL is downloaded over plain TCP without CONFIG_ESP_HTTPS_OTA_ALLOW_HTTP."""
    with serve_files({"app.bin": app}) as tls_server:
        ca = tls_server.tls.ca_pem.read_text()
    with serve_files({"app.bin": app}, tls=False) as srv:
        result, _ = run(flash, srv.url("app.bin"), ca)
    assert srv.url("app.bin").startswith("http://") and result.boot_partition_updated


def test_no_response_headers_within_the_timeout(flash, app):
    """esp_http_client_fetch_headers gives up after timeout_ms: ESP_FAIL before v5.0, then
    -ESP_ERR_HTTP_EAGAIN, which esp_https_ota_begin returns as it is."""
    with serve_files({"app.bin": app}, faults=Faults(delay_headers=0.6)) as srv, Device.open(flash) as dev:
        errors = {}
        for release in ("v4.4.7", "v5.0"):
            dev.settings.idf_release = release
            ota = EspHttpsOta(dev, OtaConfig(HttpConfig(srv.url("app.bin"), cert_pem=srv.tls.ca_pem.read_text(),
                                                        timeout_ms=200)))
            with pytest.raises(EspError) as err:
                ota.begin()
            errors[release] = (err.value.esp_err, "no response headers within 200 ms" in err.value.message)
    assert errors == {"v4.4.7": ("ESP_FAIL", True), "v5.0": ("ESP_ERR_HTTP_EAGAIN", True)}


def test_a_stalled_download_is_waited_out(flash, app):
    """Every read that times out is retried (esp_http_client_read returns -ESP_ERR_HTTP_EAGAIN, or 0
    before v5.0, and esp_https_ota_perform asks again): a device rides out a stall of any length. The
    emulator gives up after stall_limit_s and says so."""
    with serve_files({"app.bin": app}, faults=Faults(stall_after=4096, stall_seconds=1.0)) as srv:
        for release in ("v4.4.7", "v5", "newest"):
            result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, timeout_ms=200, idf_release=release)
            assert result.boot_partition_updated, result
        err, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, timeout_ms=200, stall_limit_s=0.3)
    assert err.esp_err == "ESP_ERR_HTTP_EAGAIN" and "no data from the server for 0.3 s after 4096 bytes" in err.message
    assert "a device would go on waiting" in err.message


def test_buffer_size_sets_the_read_size(flash, app):
    with serve_files({"app.bin": app}) as srv:
        result, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, buffer_size=16384)
    writes = [d for n, d in events if n == "ESP_HTTPS_OTA_WRITE_FLASH"]
    assert writes == write_flash_steps(len(app), step=16384)
    assert result.boot_partition_updated


class _StripHeader:
    """A stand-in decrypt stage: drops a 512-byte "encryption header", passes the rest through."""

    def __init__(self):
        self.skip = 512

    def __call__(self, data: bytes) -> bytes:
        cut = min(self.skip, len(data))
        self.skip -= cut
        return data[cut:]


def test_decrypt_stage_and_encrypted_header_offsets(flash, app):
    wrapped = b"\xcf\xb6\x88\x07" + b"\x00" * 508 + app
    with serve_files({"app.bin": wrapped}) as srv:
        result, events = run(
            flash, srv.url("app.bin"), srv.tls.ca_pem, decrypt=_StripHeader(), enc_img_header_size=512,
            partial_http_download=True, max_http_request_size=200_000, idf_release="newest",
        )
        ranges = [r.range for r in srv.requests]
    assert result.boot_partition_updated and result.image_length == len(app)
    # after the first range, 200000 - 512 plaintext bytes were written; the next range starts at
    # binary_file_len + enc_img_header_size
    assert ranges == [None, "bytes=0-199999", f"bytes={(200_000 - 512) + 512}-"]
    assert events[2:5] == [("ESP_HTTPS_OTA_DECRYPT_CB", None), ("ESP_HTTPS_OTA_VERIFY_CHIP_ID", 0),
                           ("ESP_HTTPS_OTA_VERIFY_CHIP_REVISION", 0)]
    assert events[5] == ("ESP_HTTPS_OTA_WRITE_FLASH", 512)
    assert flash.read_bytes()[SLOT : SLOT + len(app)] == app


def test_decrypt_stage_that_returns_nothing_mid_stream_ends_the_ota(flash, app):
    """esp_https_ota_decrypt_cb answers an empty output with ESP_HTTPS_OTA_IN_PROGRESS, a state value (2),
    not ESP_ERR_HTTPS_OTA_IN_PROGRESS: esp_https_ota_perform returns it and esp_https_ota() aborts."""
    calls = []

    def decrypt(data: bytes) -> bytes:
        calls.append(len(data))
        return b"" if len(calls) == 3 else data

    otadata_before = flash.read_bytes()[OTADATA : OTADATA + 2 * SECTOR]
    with serve_files({"app.bin": app}) as srv:
        err, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, decrypt=decrypt)
    assert err.esp_err == "ESP_HTTPS_OTA_IN_PROGRESS" and err.code == 2
    assert len(calls) == 3 and events[-1] == ("ESP_HTTPS_OTA_ABORT", None)
    assert flash.read_bytes()[OTADATA : OTADATA + 2 * SECTOR] == otadata_before


def test_encrypted_header_size_came_in_v5_1_3(flash, app):
    """Before enc_img_header_size (v5.0.6, v5.1.3, v5.2) the image size esp_https_ota reports is the
    whole download, the pre-encrypted header included; the decrypt stage still strips it."""
    wrapped = b"\xcf\xb6\x88\x07" + b"\x00" * 508 + app
    sizes = {}
    with serve_files({"app.bin": wrapped}) as srv:
        for release in ("v5.1.2", "v5.1.3"):
            result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, decrypt=_StripHeader(), enc_img_header_size=512,
                            idf_release=release)
            assert result.boot_partition_updated and flash.read_bytes()[SLOT : SLOT + len(app)] == app
            sizes[release] = result.image_length
    assert sizes == {"v5.1.2": len(wrapped), "v5.1.3": len(app)}


def test_cli_json_events_and_exit_code(flash, app):
    runner = CliRunner()
    with serve_files({"app.bin": app}) as srv:
        ok = runner.invoke(cli, ["ota", str(flash), "--url", srv.url("app.bin"), "--cert-pem", str(srv.tls.ca_pem),
                                 "--json", "--reboot"])
        assert ok.exit_code == 0, ok.output
        lines = [json.loads(line) for line in ok.stdout.splitlines()]
        assert lines[0] == {"event": "ESP_HTTPS_OTA_START", "data": None}
        assert {"event": "ESP_HTTPS_OTA_WRITE_FLASH", "data": len(app)} in lines
        assert lines[-1]["result"] == "ok" and lines[-1]["rebooted_into"] == "app1"
        # now app1 runs: the next update goes to app0, and this one fails the chip check
        srv.files["app.bin"] = b"<html>" + b" " * 2000
        bad = runner.invoke(cli, ["ota", str(flash), "--url", srv.url("app.bin"), "--cert-pem", str(srv.tls.ca_pem)])
    assert bad.exit_code == EXIT_OTA_FAILED
    assert bad.stderr.count("\n") == 1 and "ESP_ERR_INVALID_VERSION" in bad.stderr and "HTML" in bad.stderr
    assert "Traceback" not in bad.output


@pytest.mark.parametrize(
    "case",
    ["whole", "larger_than_slot", "partial_download", "big_buffer", "dropped", "chunked"],
)
def test_block_fast_path_matches_single_reads(tmp_path, app, flash, case):
    """Writing several reads at once must leave the same flash, events and outcome as ESP-IDF's
    one-read-per-esp_ota_write (which the engine uses whenever a flash hook watches)."""
    image, options, faults = app, {}, Faults()
    if case == "larger_than_slot":
        image = app + bytes(SLOT_SIZE)
    elif case == "partial_download":
        options = {"partial_http_download": True, "max_http_request_size": 100_000}
    elif case == "big_buffer":
        options = {"buffer_size": 3000}
    elif case == "dropped":
        faults.drop_after = 150_001
    elif case == "chunked":
        faults.chunked = True
    outcomes = []
    for observed in (False, True):
        copy = tmp_path / f"flash-{observed}.bin"
        shutil.copyfile(flash, copy)
        with serve_files({"app.bin": image}, faults=faults) as srv:
            result, events = run(copy, srv.url("app.bin"), srv.tls.ca_pem, observed=observed, **options)
        summary = (result.esp_err, result.message) if isinstance(result, EspError) else (
            result.bytes_written, result.boot_partition_updated)
        outcomes.append((hashlib.sha256(copy.read_bytes()).hexdigest(), events, summary))
    assert outcomes[0] == outcomes[1]


def test_cli_text_output_and_default_command(flash, app):
    with serve_files({"app.bin": app}) as srv:
        # the default command: no subcommand name
        proc = subprocess.run(
            [sys.executable, "-m", "esp_ota_emu", str(flash), "--url", srv.url("app.bin"),
             "--cert-pem", str(srv.tls.ca_pem), "--header", "X-Fw: 1"],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert srv.requests[0].header("X-Fw") == "1"
    assert proc.stdout.splitlines() == [
        "power on (first boot of this flash): the bootloader booted app0",
        f"OTA ok: {len(app)} bytes written to app1; otadata now selects it",
    ]
    bad = CliRunner().invoke(cli, ["ota", str(flash), "--url", "https://127.0.0.1:1/x", "--header", "no-colon"])
    assert bad.exit_code == 2


def test_progress_between_perform_calls(flash, app):
    """on_progress gets esp_https_ota_get_image_len_read / get_image_size after every perform that
    returned IN_PROGRESS: growing, the announced size throughout, and the whole image last."""
    calls = []
    with serve_files({"app.bin": app}) as srv:
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, on_progress=lambda n, size: calls.append((n, size)))
    assert result.boot_partition_updated
    written = [n for n, _ in calls]
    assert written == sorted(written) and written[0] == 1024 and calls[-1] == (len(app), len(app))
    assert {size for _, size in calls} == {len(app)}


def _ota_command(flash, url, ca, stderr) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "esp_ota_emu", str(flash), "--url", url, "--cert-pem", str(ca)],
        stdout=subprocess.PIPE, stderr=stderr, timeout=60,
    )


@pytest.mark.parametrize("chunked", [False, True])
def test_cli_progress_bar_on_a_terminal(flash, app, chunked):
    """With standard error on a terminal (a pseudo-terminal here), the command draws a bar that ends
    at 100% of the announced size, or, when the server sends no length (chunked), the bytes written;
    with standard error piped it draws nothing."""
    master, slave = pty.openpty()
    with serve_files({"app.bin": app}, faults=Faults(chunked=chunked)) as srv:
        proc = _ota_command(flash, srv.url("app.bin"), srv.tls.ca_pem, slave)
        piped = _ota_command(flash, srv.url("app.bin"), srv.tls.ca_pem, subprocess.PIPE)
    os.close(slave)
    screen = b""
    while True:
        try:
            piece = os.read(master, 65536)
        except OSError:  # the terminal is closed and drained
            break
        if not piece:
            break
        screen += piece
    os.close(master)
    assert proc.returncode == 0 and piped.returncode == 0
    last = screen.decode().replace("\r\n", "\n").split("\r")[-1].strip()
    size = f"{len(app) / 1e6:.2f}"
    if chunked:
        assert last.startswith(f"writing: {size} MB") and last.endswith("MB/s"), last
    else:
        assert last.startswith("[" + "#" * 30 + "] 100%  " + f"{size} of {size} MB"), last
    assert b"MB/s" not in piped.stderr and piped.stderr == b""


def test_https_without_any_trust_anchor_is_refused(flash, app):
    with serve_files({"app.bin": app}) as srv:
        err, _ = run(flash, srv.url("app.bin"), idf_release="newest")
        assert err.esp_err == "ESP_ERR_INVALID_ARG" and "server verification" in err.message
        err, _ = run(flash, srv.url("app.bin"), idf_release="newest", allow_http=True)
        assert err.esp_err == "ESP_ERR_HTTP_CONNECT" and "no server verification" in err.message
        assert srv.requests == []


def test_cli_resume(flash, app):
    runner = CliRunner()
    faults = Faults(drop_after=300_000)
    with serve_files({"app.bin": app}, faults=faults) as srv:
        args = ["ota", str(flash), "--url", srv.url("app.bin"), "--cert-pem", str(srv.tls.ca_pem),
                "--idf-release", "newest", "--resume", "--json"]
        first = runner.invoke(cli, args)
        assert first.exit_code == EXIT_OTA_FAILED
        assert json.loads(first.stdout.splitlines()[-1])["result"] == "failed"
        faults.drop_after = None
        second = runner.invoke(cli, args)
        assert second.exit_code == 0, second.output
        assert [r.range for r in srv.requests] == ["bytes=0-", "bytes=300000-"]
    lines = [json.loads(line) for line in second.stdout.splitlines()]
    assert lines[-1]["resumed_from"] == 300_000 and lines[-1]["boot_partition_updated"]
    writes = [line["data"] for line in lines if line.get("event") == "ESP_HTTPS_OTA_WRITE_FLASH"]
    assert writes == write_flash_steps(len(app), first=301_024)
    assert flash.read_bytes()[SLOT : SLOT + len(app)] == app


def test_ota_refused_while_the_running_app_is_pending_verify(flash, app):
    """Rollback on: the first boot of a NEW app makes it PENDING_VERIFY; esp_ota_begin then refuses."""
    data = bytearray(flash.read_bytes())
    data[OTADATA : OTADATA + 32] = otadata_entry(1, state=0)  # ESP_OTA_IMG_NEW
    flash.write_bytes(bytes(data))
    with serve_files({"app.bin": app}) as srv:
        err, events = run(flash, srv.url("app.bin"), srv.tls.ca_pem, rollback=True)
    assert err.esp_err == "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"
    assert events == [("ESP_HTTPS_OTA_START", None), ("ESP_HTTPS_OTA_CONNECTED", None), ("ESP_HTTPS_OTA_ABORT", None)]


# The Digest answer's tail per release: before v5.0.7/v5.1.4/v5.2.1 qop, nc and an unquoted cnonce
# always; then qop, nc and a quoted cnonce only when the challenge named a qop; from v5.3 the
# challenge's algorithm token is echoed (this server sends an unquoted MD5).
DIGEST_FORMS = {
    "v5.2": r'algorithm="MD5", response="[0-9a-f]{32}", qop=auth, nc=0000000(\d), cnonce=[0-9a-f]{16}, opaque="',
    "v5.2.1": r'algorithm="MD5", response="[0-9a-f]{32}", qop=auth, nc=0000000(\d), cnonce="[0-9a-f]{16}", opaque="',
    "newest": r'algorithm=MD5, response="[0-9a-f]{32}", qop=auth, nc=0000000(\d), cnonce="[0-9a-f]{16}", opaque="',
}


@pytest.mark.parametrize("idf_release", list(DIGEST_FORMS))
def test_digest_answer_keeps_the_method_of_the_challenge(flash, app, idf_release):
    """esp_http_client_add_auth stores the request method with the Digest challenge: after a 401 to the
    HEAD request, the first GET carries a HEAD digest, is refused, and is answered again. The nonce
    count goes up with every answer to the same challenge."""
    with serve_files({"app.bin": app}, auth=("ota", "pw"), auth_scheme="Digest") as srv:
        result, _ = run(flash, srv.url("app.bin"), srv.tls.ca_pem, username="ota", password="pw",
                        partial_http_download=True, max_http_request_size=200_000, idf_release=idf_release)
        seen = [(r.method, r.status) for r in srv.requests]
        digests = [r.header("Authorization") for r in srv.requests if r.header("Authorization")]
    assert result.boot_partition_updated
    assert seen == [("HEAD", 401), ("HEAD", 200), ("GET", 401), ("GET", 206), ("GET", 206)]
    assert all(d.startswith('Digest username="ota", realm="esp-ota-emu", nonce="') for d in digests)
    counts = [re.search(DIGEST_FORMS[idf_release], d) for d in digests]
    assert all(counts), digests
    assert [int(m.group(1)) for m in counts] == [1, 2, 1, 2]


@pytest.mark.parametrize("idf_release,accepted", [("v5.2.6", False), ("v5.3", True)])
def test_digest_sha256_and_the_query_in_the_uri(flash, app, idf_release, accepted):
    """From v5.3 a Digest challenge with algorithm=SHA-256 is answered with SHA-256 and the uri keeps
    the URL's query; before, the MD5 answer is refused until the retries run out."""
    with serve_files({"app.bin": app}, auth=("ota", "pw"), auth_scheme="Digest-SHA-256") as srv:
        result, _ = run(flash, srv.url("app.bin") + "?v=2", srv.tls.ca_pem, username="ota", password="pw",
                        idf_release=idf_release)
        digests = [r.header("Authorization") for r in srv.requests if r.header("Authorization")]
    if accepted:
        assert result.boot_partition_updated and len(digests) == 1
        assert 'uri="/app.bin?v=2", algorithm=SHA-256, response="' in digests[0]
    else:
        assert isinstance(result, EspError) and "max_authorization_retries" in result.message
        assert all('uri="/app.bin", algorithm="MD5"' in d for d in digests)
