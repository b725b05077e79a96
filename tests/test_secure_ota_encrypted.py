"""Pre-encrypted OTA (esp_encrypted_img) over loopback HTTPS: RSA-3072 and ECIES P-256 schemes.

The RSA image is the firmware sample encrypted for ``keys/pre_encryption_key.pem``; the ECC image is
made in the test with ``esp-ota-emu encrypt`` for the device key of idf-extra-components' ECC test
vector (the key its ``image_ecc.bin`` is encrypted for), which the device then decrypts with.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EXIT_OTA_FAILED, EspError
from esp_ota_emu.formats.encrypted_image import HEADER_SIZE
from esp_ota_emu.https_ota import api
from esp_ota_emu.testserver import serve_files
from helpers_flash import SAMPLES, SMALL_LAYOUT, SMALL_OTADATA, make_flash, sample, signed_bootloader

LAYOUT, OTADATA = SMALL_LAYOUT, SMALL_OTADATA
RSA_KEY = SAMPLES / "keys" / "pre_encryption_key.pem"
VECTORS = "idf-extra-components/esp_encrypted_img"
ECC_DEVICE_KEY = f"{VECTORS}/derived_ecc_device_key_from_test_mocks.pem"


@pytest.fixture
def flash(realdata, tmp_path):
    return make_flash(tmp_path / "f.bin", realdata, LAYOUT, {"factory": sample("v1")}, size=1 << 20)


@pytest.fixture(scope="module")
def ecc_image(realdata, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("ecc") / "v2_ecc.bin"
    result = CliRunner().invoke(cli, ["encrypt", str(SAMPLES / "sample_v2.bin"), "--key",
                                      str(realdata / ECC_DEVICE_KEY), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def ota(flash, files, name, key, **options):
    events = []
    with serve_files(files) as srv, Device.open(flash, idf_release=options.pop("idf_release", "v5")) as dev:
        try:
            result = api.https_ota(dev, srv.url(name), cert_pem=srv.tls.ca_pem, decrypt_key=key,
                                   on_event=lambda n, d: events.append((n, d)), **options)
        except EspError as err:
            result = err
    return result, events


def slot_bytes(flash, n: int) -> bytes:
    return flash.read_bytes()[0x40000 : 0x40000 + n]


def test_rsa_scheme_ota_writes_the_plaintext(flash):
    result, events = ota(flash, {"v2.enc": SAMPLES / "sample_v2_encrypted.bin"}, "v2.enc", RSA_KEY)
    plain = sample("v2")
    assert result.boot_partition_updated and result.partition == "ota_0"
    assert result.bytes_written == len(plain)
    assert result.image_length == len(sample("v2_encrypted")) - HEADER_SIZE
    assert slot_bytes(flash, len(plain)) == plain
    names = [n for n, _ in events]
    assert "ESP_HTTPS_OTA_DECRYPT_CB" in names
    assert names.index("ESP_HTTPS_OTA_DECRYPT_CB") < names.index("ESP_HTTPS_OTA_WRITE_FLASH")
    assert names[-2:] == ["ESP_HTTPS_OTA_UPDATE_BOOT_PARTITION", "ESP_HTTPS_OTA_FINISH"]
    with Device.open(flash) as dev:
        assert dev.boot().booted.label == "ota_0"


def test_ecies_scheme_with_the_vector_device_key(flash, realdata, ecc_image):
    result, events = ota(flash, {"v2.ecc": ecc_image}, "v2.ecc", realdata / ECC_DEVICE_KEY)
    assert result.boot_partition_updated
    assert slot_bytes(flash, len(sample("v2"))) == sample("v2")
    assert ("ESP_HTTPS_OTA_DECRYPT_CB", None) in events


def test_wrong_key_fails_and_keeps_the_boot_partition(flash, realdata):
    before = flash.read_bytes()[OTADATA : OTADATA + 0x2000]
    wrong = realdata / VECTORS / "certs_test_rsa_private_key.pem"
    result, events = ota(flash, {"v2.enc": SAMPLES / "sample_v2_encrypted.bin"}, "v2.enc", wrong)
    assert isinstance(result, EspError) and result.esp_err == "ESP_FAIL"
    assert "unable to decipher the GCM key" in result.message
    assert flash.read_bytes()[OTADATA : OTADATA + 0x2000] == before
    assert events[-1][0] == "ESP_HTTPS_OTA_ABORT"


def test_ecc_image_with_the_rsa_key_is_refused(flash, ecc_image):
    result, _ = ota(flash, {"v2.ecc": ecc_image}, "v2.ecc", RSA_KEY)
    assert isinstance(result, EspError) and result.esp_err == "ESP_FAIL"


@pytest.mark.parametrize("damage, reason", [
    ("truncated", "but the header says"),
    ("tag", "GCM authentication tag mismatch"),
])
def test_truncated_or_tampered_image_is_not_selected(flash, damage, reason):
    data = bytearray(sample("v2_encrypted"))
    if damage == "truncated":
        data = data[:-100]
    else:
        data[HEADER_SIZE - 80 - 16] ^= 0x01  # pre_enc_bin_header: ... auth[16], reserved[80]
    before = flash.read_bytes()[OTADATA : OTADATA + 0x2000]
    result, events = ota(flash, {"bad.enc": bytes(data)}, "bad.enc", RSA_KEY)
    assert isinstance(result, EspError) and result.esp_err == "ESP_FAIL" and reason in result.message
    assert flash.read_bytes()[OTADATA : OTADATA + 0x2000] == before
    assert ("ESP_HTTPS_OTA_ABORT", None) in events
    with Device.open(flash) as dev:
        assert dev.boot().booted.label == "factory"


def test_resume_is_refused_with_pre_encrypted_images(flash):
    result, _ = ota(flash, {"v2.enc": SAMPLES / "sample_v2_encrypted.bin"}, "v2.enc", RSA_KEY,
                    idf_release="newest", resume=True)
    assert isinstance(result, EspError) and result.esp_err == "ESP_ERR_NOT_SUPPORTED"
    assert "pre-encrypted" in result.message


def test_signed_then_encrypted_on_a_secure_boot_device(flash, realdata, tmp_path):
    """sample_v3_signed_encrypted on a Secure Boot V2 device: decrypted, then the signature verifies."""
    signing_key = SAMPLES / "keys" / "secure_boot_signing_key.pem"
    signed = make_flash(tmp_path / "s.bin", realdata, LAYOUT, {"factory": sample("v1_signed")}, size=1 << 20,
                        bootloader=signed_bootloader(realdata, signing_key))
    with Device.open(signed, secure_boot="v2", secure_boot_keys=[signing_key]):
        pass
    result, _ = ota(signed, {"v3.enc": SAMPLES / "sample_v3_signed_encrypted.bin"}, "v3.enc", RSA_KEY)
    assert result.boot_partition_updated
    with Device.open(signed) as dev:
        boot = dev.boot()
        assert boot.booted.label == "ota_0" and boot.version == "3.0.0"


def test_cli_decrypt_key(flash, realdata):
    with serve_files({"v2.enc": SAMPLES / "sample_v2_encrypted.bin"}) as srv:
        ok = CliRunner().invoke(cli, ["ota", str(flash), "--url", srv.url("v2.enc"), "--cert-pem", str(srv.tls.ca_pem),
                                      "--decrypt-key", str(RSA_KEY), "--json"])
        lines = [json.loads(line) for line in ok.output.splitlines()]
        assert ok.exit_code == 0 and lines[-1]["result"] == "ok"
        assert {"event": "ESP_HTTPS_OTA_DECRYPT_CB", "data": None} in lines
        wrong = CliRunner().invoke(cli, ["ota", str(flash), "--url", srv.url("v2.enc"), "--cert-pem",
                                         str(srv.tls.ca_pem), "--decrypt-key",
                                         str(realdata / VECTORS / "certs_test_rsa_private_key.pem")])
    assert wrong.exit_code == EXIT_OTA_FAILED and "unable to decipher the GCM key" in wrong.output
    assert "Traceback" not in wrong.output
