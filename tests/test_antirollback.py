"""Anti-rollback through the whole OTA path: the eFuse SECURE_VERSION model (popcount, field width per
chip), ESP_ERR_OTA_SMALL_SEC_VER from esp_ota_set_boot_partition inside esp_https_ota_finish (and the
releases whose finish swallowed it), the burn when a newer app becomes VALID, and ``info``.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EspError
from esp_ota_emu.https_ota import api
from esp_ota_emu.testserver import serve_files
from helpers_flash import SAMPLES, make_flash, sample

LAYOUT = """\
nvs, data, nvs, 0x9000, 0x4000,
otadata, data, ota, 0xd000, 0x2000,
ota_0, app, ota_0, 0x10000, 0x30000,
ota_1, app, ota_1, 0x40000, 0x30000,
"""
OTADATA = 0xD000
OTA_1 = 0x40000


@pytest.fixture
def v3_device(realdata, tmp_path):
    """ota_0 holds sample v3 (secure_version 2); the first power-on boots it and burns the eFuse."""
    path = make_flash(tmp_path / "f.bin", realdata, LAYOUT, {"ota_0": sample("v3")}, size=1 << 20)
    with Device.open(path, anti_rollback=True) as dev:
        boot = dev.boot(power_on=True)
        assert boot.booted.label == "ota_0" and boot.burned_secure_version == 2
    return path


def https(path, name, **settings):
    events = []
    with serve_files({name: SAMPLES / name}) as srv, Device.open(path, **settings) as dev:
        try:
            result = api.https_ota(dev, srv.url(name), cert_pem=srv.tls.ca_pem, on_event=lambda n, d: events.append(n))
        except EspError as err:
            result = err
    return result, events


def test_first_boot_burns_popcount_bits(v3_device):
    with Device.open(v3_device) as dev:
        assert dev.efuse_secure_version == 2
        assert dev.efuses.read("SECURE_VERSION") == 0b11 and dev.efuses.secure_version == 2
        # the same state goes to QEMU: SECURE_VERSION is BLOCK3 word 4 (file offset 92 + 16)
        assert dev.efuses.to_qemu_file()[108:112] == (3).to_bytes(4, "little")
    side = json.loads(open(f"{v3_device}.emu.json").read())
    assert side["settings"]["efuse_secure_version"] == 2 and side["settings"]["efuse"]["chip"] == "esp32"


def test_lower_secure_version_ota_fails_and_erases_the_slot(v3_device):
    before = open(v3_device, "rb").read()
    result, events = https(v3_device, "sample_v2.bin")
    assert isinstance(result, EspError) and result.esp_err == "ESP_ERR_OTA_SMALL_SEC_VER"
    assert "secure_version 0" in result.message
    after = open(v3_device, "rb").read()
    assert after[OTA_1 : OTA_1 + 0x30000] == b"\xff" * 0x30000  # esp_ota_set_boot_partition erased it
    assert after[OTADATA : OTADATA + 0x2000] == before[OTADATA : OTADATA + 0x2000]
    # the image was accepted by esp_ota_end; set_boot_partition refused it: no UPDATE_BOOT_PARTITION, no abort
    assert events[-1] == "ESP_HTTPS_OTA_FINISH" and "ESP_HTTPS_OTA_UPDATE_BOOT_PARTITION" not in events
    assert "ESP_HTTPS_OTA_ABORT" not in events


@pytest.mark.parametrize("release,swallowed", [("v4", True), ("v4.4.7", False), ("v5.0.4", True), ("v5.0.5", False),
                                               ("v5.1.2", True), ("v5.1.3", False)])
def test_finish_swallows_the_error_before_the_fix(v3_device, release, swallowed):
    """Until v4.4.7, v5.0.5 and v5.1.3 a shadowed ``err`` in esp_https_ota_finish made the update report
    ESP_OK: the slot is erased and the boot partition stays."""
    result, _ = https(v3_device, "sample_v2.bin", idf_release=release)
    if not swallowed:
        assert isinstance(result, EspError) and result.esp_err == "ESP_ERR_OTA_SMALL_SEC_VER"
        return
    assert not isinstance(result, EspError)
    assert result.boot_partition_updated is False
    assert result.set_boot_error.esp_err == "ESP_ERR_OTA_SMALL_SEC_VER"
    with Device.open(v3_device) as dev:
        assert dev.boot().booted.label == "ota_0"


def test_equal_secure_version_is_accepted(v3_device):
    result, _ = https(v3_device, "sample_v3.bin")
    assert result.boot_partition_updated


def test_newer_app_burns_when_it_becomes_valid(realdata, tmp_path):
    path = make_flash(tmp_path / "n.bin", realdata, LAYOUT, {"ota_0": sample("v1")}, size=1 << 20)
    result, _ = https(path, "sample_v3.bin", anti_rollback=True, rollback=True)
    assert result.boot_partition_updated
    with Device.open(path) as dev:
        assert dev.boot().booted.label == "ota_1"  # NEW -> PENDING_VERIFY: not valid yet, nothing burned
        assert dev.efuse_secure_version == 0
        dev.ota.mark_app_valid_cancel_rollback()
        assert dev.efuse_secure_version == 2 and dev.efuses.read("SECURE_VERSION") == 0b11
        # the old app (secure_version 0) is no rollback target any more
        assert not dev.ota.check_rollback_is_possible()


def test_info_shows_efuse_and_unbootable_slots(v3_device):
    with Device.open(v3_device) as dev:
        dev.flash.program(OTA_1, sample("v2"))  # an older app put there by other means
    report = json.loads(CliRunner().invoke(cli, ["info", str(v3_device), "--json"]).output)
    assert report["security"]["efuse_secure_version"] == 2
    assert report["security"]["efuse_secure_version_bits"] == 32
    apps = {a["partition"]: a for a in report["apps"]}
    assert apps["ota_1"]["unbootable"] == "secure_version 0 < eFuse 2"
    assert "unbootable" not in apps["ota_0"]
    text = CliRunner().invoke(cli, ["info", str(v3_device)]).output
    assert "UNBOOTABLE: secure_version 0 < eFuse 2" in text and "eFuse secure_version 2 of 32" in text


def test_secure_version_wider_than_the_field_is_not_burned(realdata, tmp_path):
    """esp_efuse_update_secure_version refuses versions past the field: ESP32 32 bits, C3 16."""
    path = make_flash(tmp_path / "w.bin", realdata, LAYOUT, {"ota_0": sample("v1")}, size=1 << 20)
    with Device.open(path) as dev:
        with pytest.raises(EspError) as err:
            dev.burn_secure_version(33)
        assert err.value.esp_err == "ESP_ERR_INVALID_ARG"
        dev.burn_secure_version(32)
        assert dev.efuses.read("SECURE_VERSION") == 0xFFFFFFFF
    with Device.open(path, chip="esp32c3") as c3:
        assert c3.secure_version_bits == 16


def test_efuse_secure_version_option_sets_the_field(realdata, tmp_path):
    path = make_flash(tmp_path / "o.bin", realdata, LAYOUT, {"ota_0": sample("v1")}, size=1 << 20)
    out = CliRunner().invoke(cli, ["info", str(path), "--efuse-secure-version", "5", "--json"]).output
    assert json.loads(out)["security"]["efuse"]["secure_version"] == 5
    with Device.open(path) as dev:
        assert dev.efuses.read("SECURE_VERSION") == 0b11111
