"""CONFIG_SECURE_SIGNED_DATA_PARTITION (ESP-IDF v6.0.1 and newer): esp_ota_end checks the Secure Boot V2
signature sector that ends an image for a data partition of subtype undefined.

The device is a real ESP32 bootloader with factory + two OTA slots and two data partitions: ``assets``
(subtype undefined, the one the check covers) and ``storage`` (spiffs, not covered). The running app
is the signed firmware sample; the data images are signed by ``espsecure sign-data --version 2`` (the
oracle) or by the emulator's own ``sign`` command, and served over loopback HTTPS.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EXIT_OTA_FAILED, EspError, InputError
from esp_ota_emu.https_ota import api
from esp_ota_emu.partitions import PartitionTable
from esp_ota_emu.testserver import serve_files
from helpers_flash import SAMPLES, SMALL_LAYOUT, make_flash, sample, signed_bootloader

ESPSECURE = str(Path(sys.executable).with_name("espsecure"))
KEY = SAMPLES / "keys" / "secure_boot_signing_key.pem"
OTHER_KEY = SAMPLES / "keys" / "secure_boot_other_key.pem"
LAYOUT = SMALL_LAYOUT + "assets, data, undefined, 0xa0000, 0x20000,\nstorage, data, spiffs, 0xc0000, 0x20000,\n"
TABLE = PartitionTable.from_csv(LAYOUT)
ASSETS, STORAGE = TABLE.find("assets"), TABLE.find("storage")
DATA = random.Random(7).randbytes(0x5432)  # not a whole number of sectors: the signer pads it
V6 = "v6.0.2"
SECURE = dict(secure_boot="v2", secure_boot_keys=[KEY], signed_data_partition=True, idf_release=V6)


def espsecure_signed(tmp_path: Path, data: bytes, key: Path) -> bytes:
    source, out = tmp_path / "data.bin", tmp_path / "data-signed.bin"
    source.write_bytes(data)
    subprocess.run([ESPSECURE, "sign-data", "--version", "2", "--keyfile", str(key), "--output", str(out),
                    str(source)], check=True, capture_output=True)
    return out.read_bytes()


@pytest.fixture
def flash(realdata, tmp_path):
    path = make_flash(tmp_path / "f.bin", realdata, LAYOUT, {"factory": sample("v1_signed")}, size=1 << 20,
                      bootloader=signed_bootloader(realdata, KEY))
    with Device.open(path) as dev:  # the data partitions hold something the copy must replace (or keep)
        dev.flash.write_raw(ASSETS.offset, random.Random(1).randbytes(ASSETS.size))
        dev.flash.write_raw(STORAGE.offset, random.Random(2).randbytes(STORAGE.size))
    return path


def region(flash: Path, part) -> bytes:
    return flash.read_bytes()[part.offset : part.end]


def update(flash: Path, image: bytes, **options):
    """Serve ``image`` and run esp_https_ota on the device with ``options``: the result or the EspError."""
    settings = {k: options.pop(k) for k in list(options) if k in (*SECURE, "signed_on_update_no_secure_boot")}
    with serve_files({"data.bin": image}) as srv, Device.open(flash, **settings) as dev:
        try:
            return api.https_ota(dev, srv.url("data.bin"), cert_pem=srv.tls.ca_pem, **options)
        except EspError as err:
            return err


def test_espsecure_signed_image_is_verified_and_copied(flash, tmp_path):
    """Through the next OTA slot (the default staging partition) with finalize_with_copy: esp_ota_end
    checks the signature, then copies the staging partition over ``assets``; no boot switch."""
    signed = espsecure_signed(tmp_path, DATA, KEY)
    assert len(signed) == 0x6000 + 0x1000  # data padded to 4 KiB, then the signature sector
    otadata_before = region(flash, TABLE.find("otadata"))
    result = update(flash, signed, final="assets", finalize_with_copy=True, **SECURE)
    assert not isinstance(result, EspError), result
    assert result.partition == "ota_0" and result.final == "assets" and not result.boot_partition_updated
    assets = region(flash, ASSETS)
    assert assets[: len(signed)] == signed and assets == region(flash, TABLE.find("ota_0"))[: ASSETS.size]
    assert region(flash, TABLE.find("otadata")) == otadata_before


def test_image_signed_by_the_own_sign_command_written_in_place(flash, tmp_path):
    """The data partition as its own staging partition (no copy), signed by ``esp-ota-emu sign``."""
    source, signed_path = tmp_path / "data.bin", tmp_path / "signed.bin"
    source.write_bytes(DATA)
    signing = CliRunner().invoke(cli, ["sign", "--version", "2", "--keyfile", str(KEY), "-o", str(signed_path),
                                       str(source)])
    assert signing.exit_code == 0, signing.output
    signed = signed_path.read_bytes()
    result = update(flash, signed, staging="assets", **SECURE)
    assert not isinstance(result, EspError), result
    assert result.partition == "assets" and region(flash, ASSETS)[: len(signed)] == signed


@pytest.mark.parametrize("case, reason", [
    ("unsigned", "no signature sector"),
    ("other key", "not trusted"),
    ("tampered", "digest mismatch"),
    ("too short", "only 4000 bytes were written"),
])
def test_refused_images_leave_the_data_partition_as_it_was(flash, tmp_path, case, reason):
    signed = espsecure_signed(tmp_path, DATA, OTHER_KEY if case == "other key" else KEY)
    image = {
        "unsigned": DATA.ljust(0x7000, b"\xff"),
        "other key": signed,
        "tampered": signed[:0x100] + bytes([signed[0x100] ^ 1]) + signed[0x101:],
        "too short": signed[:4000],
    }[case]
    before = region(flash, ASSETS)
    err = update(flash, image, final="assets", finalize_with_copy=True, **SECURE)
    assert isinstance(err, EspError) and err.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED", err
    assert "signature check" in err.message and reason in err.message
    assert region(flash, ASSETS) == before


@pytest.mark.parametrize("final, settings", [
    ("assets", dict(SECURE, signed_data_partition=False)),  # the option is off
    ("storage", SECURE),  # a spiffs partition is not covered
])
def test_unsigned_data_where_the_check_does_not_apply(flash, final, settings):
    result = update(flash, DATA, final=final, finalize_with_copy=True, **settings)
    assert not isinstance(result, EspError), result
    assert region(flash, TABLE.find(final))[: len(DATA)] == DATA


def test_without_secure_boot_the_running_apps_key_is_trusted(flash, tmp_path):
    """CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT: block 0 must be made with the running app's key."""
    settings = dict(signed_on_update_no_secure_boot=True, signed_data_partition=True, idf_release=V6)
    good = update(flash, espsecure_signed(tmp_path, DATA, KEY), final="assets", finalize_with_copy=True, **settings)
    assert not isinstance(good, EspError), good
    bad = update(flash, espsecure_signed(tmp_path, DATA, OTHER_KEY), final="assets", finalize_with_copy=True,
                 **settings)
    assert isinstance(bad, EspError) and "not trusted" in bad.message


@pytest.mark.parametrize("settings, refusal", [
    (dict(SECURE, idf_release="v6.0"), "v6.0.1 and newer"),
    (dict(signed_data_partition=True, idf_release=V6), "--secure-boot v2"),
])
def test_the_setting_needs_its_release_and_signed_apps(flash, settings, refusal):
    with pytest.raises(InputError, match=refusal):
        Device.open(flash, **settings)


def test_cli(flash, tmp_path):
    signed = espsecure_signed(tmp_path, DATA, KEY)
    with serve_files({"good.bin": signed, "bad.bin": DATA.ljust(0x7000, b"\xff")}) as srv:
        command = ["ota", str(flash), "--cert-pem", str(srv.tls.ca_pem), "--final", "assets", "--finalize-with-copy",
                   "--idf-release", V6, "--secure-boot", "v2", "--secure-boot-key", str(KEY),
                   "--signed-data-partition", "--json"]
        refused = CliRunner().invoke(cli, [*command, "--url", srv.url("bad.bin")])
        accepted = CliRunner().invoke(cli, [*command, "--url", srv.url("good.bin")])
    assert refused.exit_code == EXIT_OTA_FAILED and "ESP_ERR_OTA_VALIDATE_FAILED" in refused.output
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.output.splitlines()[-1])["final"] == "assets"
    assert region(flash, ASSETS)[: len(signed)] == signed
    info = CliRunner().invoke(cli, ["info", str(flash)])  # kept with the device, and shown
    assert "secure boot v2" in info.output and "signed data partitions" in info.output
    assert json.loads(CliRunner().invoke(cli, ["info", str(flash), "--json"]).output)["security"]["signed_data_partition"]
