"""esp_ota_revoke_secure_boot_public_key on an ESP32-C3 with Secure Boot V2 and two trusted keys.

The bootloader and app are Espressif's C3 hello_world build, signed here with the samples' test keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EspError
from esp_ota_emu.local_ota import ota_from_file
from esp_ota_emu.mkflash import build_flash
from esp_ota_emu.partitions import PartitionTable
from esp_ota_emu.security import sbv2
from esp_ota_emu.security.keys import load_private_key

KEYS = Path(__file__).resolve().parents[1] / "firmware_samples" / "keys"
KEY_A, KEY_B = KEYS / "secure_boot_signing_key.pem", KEYS / "secure_boot_other_key.pem"
C3 = "esp-serial-flasher/hello-world_2025-08/ESP32_C3"
LAYOUT = """\
nvs, data, nvs, 0x9000, 0x4000,
otadata, data, ota, 0xd000, 0x2000,
ota_0, app, ota_0, 0x10000, 0x100000,
ota_1, app, ota_1, 0x110000, 0x100000,
"""


def signed(data: bytes, *key_files: Path) -> bytes:
    return sbv2.sign_image(data, [load_private_key(k.read_bytes()) for k in key_files])


@pytest.fixture
def c3_flash(realdata, tmp_path):
    """A C3 whose bootloader and app carry signature blocks with the keys given (both by default)."""

    def make(*app_keys: Path) -> Path:
        path = tmp_path / "c3.bin"
        build_flash(
            path,
            partitions=PartitionTable.from_csv(LAYOUT),
            bootloader=signed((realdata / C3 / "bootloader.bin").read_bytes(), KEY_A, KEY_B),
            apps={"ota_0": signed((realdata / C3 / "hello_world.bin").read_bytes(), *(app_keys or (KEY_A, KEY_B)))},
            chip="esp32c3",
            chip_rev=3,
            flash_size="keep",
        )
        with Device.open(path, secure_boot="v2", secure_boot_keys=[str(KEY_A), str(KEY_B)]) as dev:
            assert dev.boot(power_on=True).booted.label == "ota_0"
        return path

    return make


def test_revoked_key_no_longer_signs_updates(c3_flash, realdata, tmp_path):
    flash = c3_flash()
    app = (realdata / C3 / "hello_world.bin").read_bytes()
    only_a, only_b = tmp_path / "a.bin", tmp_path / "b.bin"
    only_a.write_bytes(signed(app, KEY_A))
    only_b.write_bytes(signed(app, KEY_B))
    with Device.open(flash) as dev:
        assert len(dev.efuses.trusted_key_digests()) == 2
        dev.ota.revoke_secure_boot_public_key(0)
        dev.ota.revoke_secure_boot_public_key(0)  # already revoked: ESP_OK, nothing changes
    with Device.open(flash) as dev:  # the revocation is burned: it persists with the device
        slots = dev.efuses.secure_boot_key_digests()
        assert [s["revoked"] for s in slots[:2]] == [True, False]
        with pytest.raises(EspError) as err:
            ota_from_file(dev, only_a)
        assert err.value.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED"
        assert ota_from_file(dev, only_b).label == "ota_1"


def test_revocation_needs_another_key_for_the_running_app(c3_flash):
    flash = c3_flash(KEY_A)  # the running app is signed with key A only
    with Device.open(flash) as dev:
        with pytest.raises(EspError) as err:
            dev.ota.revoke_secure_boot_public_key(0)
        assert err.value.esp_err == "ESP_FAIL" and "Application" in err.value.message
        assert not dev.efuses.secure_boot_key_digests()[0]["revoked"]
        dev.ota.revoke_secure_boot_public_key(1)  # key B is not needed by anything that runs


def test_revocation_needs_a_confirmed_app_with_rollback(c3_flash, realdata, tmp_path):
    flash = c3_flash()
    update = tmp_path / "update.bin"
    update.write_bytes(signed((realdata / C3 / "hello_world.bin").read_bytes(), KEY_A, KEY_B))
    with Device.open(flash, rollback=True) as dev:
        ota_from_file(dev, update)
        assert dev.boot().booted.label == "ota_1"  # NEW -> PENDING_VERIFY: not confirmed yet
        with pytest.raises(EspError) as err:
            dev.ota.revoke_secure_boot_public_key(0)
        assert err.value.esp_err == "ESP_FAIL" and "not marked as a valid image" in err.value.message
        assert not dev.efuses.secure_boot_key_digests()[0]["revoked"]
        dev.ota.mark_app_valid_cancel_rollback()
        dev.ota.revoke_secure_boot_public_key(0)
        assert dev.efuses.secure_boot_key_digests()[0]["revoked"]
        dev.ota.revoke_secure_boot_public_key(2)  # an empty digest slot: nothing to revoke, ESP_OK


def test_cli_revoke_key_and_esp32_refusal(c3_flash, tmp_path):
    flash = c3_flash()
    result = CliRunner().invoke(cli, ["revoke-key", str(flash), "0", "--json"])
    assert result.exit_code == 0, result.output
    assert '"trusted_keys": 1' in result.output
    bad = CliRunner().invoke(cli, ["revoke-key", str(flash), "3"])
    assert bad.exit_code == 2  # usage: indexes are 0..2
