"""Network faults during a real HTTPS OTA: a clear error, the old app still boots, a later OTA or resume is exact.

Device: the real Arduino-ESP32 merged 4 MB flash (app0 runs, the update goes to app1). Update: the
real StartCounter app. Faults come from the loopback test server's switches (or its certificates).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
from pathlib import Path

import pytest

from esp_ota_emu.device import Device
from esp_ota_emu.errors import EspError
from esp_ota_emu.https_ota import api
from esp_ota_emu.testserver import Faults, TlsFiles, ensure_tls_files, make_ca, make_cert, serve_files

MERGED = "derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"
APP = "arduino-esp32/v1.0.6_idf-v3.3.5/StartCounter.ino.bin"
APP1, SLOT_SIZE, OTADATA = 0x150000, 0x140000, 0xE000


@pytest.fixture(scope="module")
def image(realdata) -> bytes:
    return (realdata / APP).read_bytes()


@pytest.fixture
def flash(merged_flash):
    return merged_flash


def make_pki(folder: Path) -> dict:
    """Server TLS files by case: good, untrusted (the device is given another CA), expired, wrong host name."""
    good = ensure_tls_files(folder / "good")
    ca = make_ca()
    ca.write(folder, "ca")
    make_cert(ca, expired=True).write(folder, "expired")
    make_cert(ca, ("ota.example.com",)).write(folder, "wrong-name")
    return {
        "good": good,
        "untrusted": good,  # served by a CA the device is not given: see device_ca() below
        "expired": TlsFiles(folder / "ca.pem", folder / "expired.pem", folder / "expired.key"),
        "wrong-name": TlsFiles(folder / "ca.pem", folder / "wrong-name.pem", folder / "wrong-name.key"),
        "other-ca": folder / "ca.pem",
    }


def device_ca(pki: dict, case: str) -> Path:
    """The root the device trusts in a TLS case."""
    return pki["other-ca"] if case == "untrusted" else pki[case].ca_pem


# The TLS cases, with the options a device needs to refuse them: ESP-IDF's default mbedTLS build
# ignores validity dates, so only a device built with CONFIG_MBEDTLS_HAVE_TIME_DATE refuses an
# expired certificate.
TLS_CASES = {"untrusted": {}, "expired": {"cert_expiry_check": True}, "wrong-name": {}}


@pytest.fixture(scope="module")
def pki():
    with tempfile.TemporaryDirectory() as tmp:
        yield make_pki(Path(tmp))


def bad_bodies(image: bytes) -> dict[str, bytes]:
    """What a server may send instead of the image: a captive portal's HTML, an API's JSON error, a gzip."""
    return {
        "html": b"<!DOCTYPE html><html><head><title>Login</title></head><body>" + b"x" * 2000 + b"</body></html>",
        "json": json.dumps({"error": "not found", "detail": "x" * 2000}).encode(),
        "gzip": gzip.compress(image, mtime=0),
    }


# A download dropped at 200 000 bytes, then resumed while the server answers with...
RESUME_FAULTS = {"206 (Range honoured)": None, "200 instead of 206": "ignore_range", "416": "range_not_satisfiable"}


def outside_slot(flash: Path) -> str:
    """SHA-256 of everything but app1 and otadata: an OTA must never touch it."""
    data = bytearray(flash.read_bytes())
    data[APP1 : APP1 + SLOT_SIZE] = bytes(SLOT_SIZE)
    data[OTADATA : OTADATA + 0x2000] = bytes(0x2000)
    return hashlib.sha256(data).hexdigest()


def ota(flash, url, ca, **options):
    with Device.open(flash, idf_release=options.pop("idf_release", "v5")) as dev:
        return api.https_ota(dev, url, cert_pem=ca, **options)


def assert_boots(flash, label: str) -> None:
    """A reset would boot ``label``, and its image verifies."""
    with Device.open(flash, readonly=True) as dev:
        decision = dev.boot_decision()
        assert decision.booted is not None and decision.booted.label == label, decision.trace
        assert dev.verify_partition(decision.booted).ok


def assert_slot_is(flash, image: bytes) -> None:
    data = flash.read_bytes()
    assert data[APP1 : APP1 + len(image)] == image


def failed_ota_then_recovery(flash, image, srv, ca, faults: Faults, expected: str, match: str, **options):
    """The faulty OTA fails with ``expected``, changes nothing outside the slot, the old app still boots;
    with the fault cleared the next OTA writes the image exactly and the device boots it."""
    with Device.open(flash) as dev:
        dev.power_on_if_needed()
    before = outside_slot(flash)
    srv.faults = faults
    with pytest.raises(EspError) as err:
        ota(flash, srv.url("app.bin"), ca, **options)
    assert err.value.esp_err == expected, str(err.value)
    assert match in str(err.value)
    assert outside_slot(flash) == before
    assert_boots(flash, "app0")
    srv.faults = Faults()
    result = ota(flash, srv.url("app.bin"), srv.tls.ca_pem, **options)
    assert result.boot_partition_updated and result.bytes_written == len(image)
    assert_slot_is(flash, image)
    assert_boots(flash, "app1")


FAULTS = {
    "dropped at byte 100000": (Faults(drop_after=100_000), "ESP_FAIL", "connection closed before complete data", {}),
    "stall beyond --stall-limit (a device waits on)": (
        Faults(stall_after=8192, stall_seconds=1.5), "ESP_ERR_HTTP_EAGAIN", "no data from the server for 0.5 s",
        {"timeout_ms": 300, "stall_limit_s": 0.5},
    ),
    "Content-Length too long": (Faults(content_length_delta=4096), "ESP_FAIL", "connection closed", {}),
    "Content-Length too short": (
        Faults(content_length_delta=-4096), "ESP_ERR_OTA_VALIDATE_FAILED", "new image failed verification", {},
    ),
    "500 Internal Server Error": (Faults(status=500), "ESP_FAIL", "server error", {}),
    "503 on the v5 one-shot begin": (Faults(status=503), "ESP_FAIL", "503", {}),
    "redirect loop": (Faults(redirects=100_000, redirect_host="localhost"), "ESP_ERR_HTTP_MAX_REDIRECT", "redirects",
                      {"idf_release": "newest"}),
}


@pytest.mark.parametrize("name", FAULTS)
def test_server_faults(flash, image, name):
    faults, expected, match, options = FAULTS[name]
    with serve_files({"app.bin": image}) as srv:
        failed_ota_then_recovery(flash, image, srv, srv.tls.ca_pem, faults, expected, match, **options)


def test_chunked_body_is_a_normal_ota(flash, image):
    with serve_files({"app.bin": image}, faults=Faults(chunked=True)) as srv:
        result = ota(flash, srv.url("app.bin"), srv.tls.ca_pem)
    assert result.image_length == -1 and result.bytes_written == len(image)
    assert_slot_is(flash, image)
    assert_boots(flash, "app1")


@pytest.mark.parametrize("body", ["html", "json", "gzip"])
def test_error_bodies_and_compressed_images_are_refused(flash, image, body):
    """A captive portal's HTML, an API's JSON error, a gzip of the image (sent with Content-Encoding: gzip,
    which esp_http_client does not decode): never an esp_image, never written."""
    content = bad_bodies(image)[body]
    faults = Faults(content_encoding="gzip" if body == "gzip" else None)
    with serve_files({"app.bin": image, "bad.bin": content}, faults=faults) as srv:
        with Device.open(flash) as dev:
            dev.power_on_if_needed()
        before_slot = flash.read_bytes()[APP1 : APP1 + SLOT_SIZE]
        with pytest.raises(EspError) as err:
            ota(flash, srv.url("bad.bin"), srv.tls.ca_pem)
        assert err.value.esp_err in ("ESP_ERR_INVALID_VERSION", "ESP_ERR_OTA_VALIDATE_FAILED"), str(err.value)
        if body != "gzip":
            assert {"html": "HTML", "json": "JSON"}[body] in str(err.value)
        assert flash.read_bytes()[APP1 : APP1 + SLOT_SIZE] == before_slot  # refused before any flash write
        assert_boots(flash, "app0")
        srv.faults = Faults()
        ota(flash, srv.url("app.bin"), srv.tls.ca_pem)
    assert_slot_is(flash, image)
    assert_boots(flash, "app1")


@pytest.mark.parametrize("case", TLS_CASES)
def test_tls_failures(flash, image, pki, case):
    with serve_files({"app.bin": image}, tls=pki[case]) as srv:
        with Device.open(flash) as dev:
            dev.power_on_if_needed()
        before = outside_slot(flash)
        with pytest.raises(EspError) as err:
            ota(flash, srv.url("app.bin"), device_ca(pki, case), **TLS_CASES[case])
        assert err.value.esp_err in ("ESP_ERR_HTTP_CONNECT", "ESP_FAIL"), str(err.value)
        assert "certificate" in str(err.value)
        assert outside_slot(flash) == before
        assert_boots(flash, "app0")
    with serve_files({"app.bin": image}, tls=pki["good"]) as srv:
        ota(flash, srv.url("app.bin"), pki["good"].ca_pem)
    assert_slot_is(flash, image)
    assert_boots(flash, "app1")


def test_an_expired_certificate_passes_without_the_expiry_check(flash, image, pki):
    """A device built with ESP-IDF's defaults keeps updating from a server whose certificate expired."""
    with serve_files({"app.bin": image}, tls=pki["expired"]) as srv:
        result = ota(flash, srv.url("app.bin"), pki["expired"].ca_pem)
    assert result.boot_partition_updated
    assert_slot_is(flash, image)


@pytest.mark.parametrize("range_fault", RESUME_FAULTS.values())
def test_dropped_download_resumes_to_an_identical_slot(flash, image, range_fault):
    """Dropped at 200 000 bytes; the resumed OTA continues with Range (or, when the server answers 200
    instead of 206 or 416, starts again from byte 0) and the slot ends byte-identical."""
    with serve_files({"app.bin": image}, faults=Faults(drop_after=200_000)) as srv:
        url, ca = srv.url("app.bin"), srv.tls.ca_pem
        with pytest.raises(EspError):
            ota(flash, url, ca, idf_release="newest", resume=True)
        assert_boots(flash, "app0")
        with Device.open(flash, readonly=True) as dev:
            saved = dev.state.resume[url]["bytes_written"]
        assert 0 < saved <= 200_000
        srv.faults = Faults(**({range_fault: True} if range_fault else {}))
        result = ota(flash, url, ca, idf_release="newest", resume=True)
        assert result.boot_partition_updated
        if range_fault is None:
            assert result.resumed_from == saved and srv.requests[-1].range == f"bytes={saved}-"
        else:
            assert result.resumed_from == 0
    assert_slot_is(flash, image)
    assert_boots(flash, "app1")
