"""The boot outcomes observed with real bootloaders in QEMU-esp32 (realdata MANIFEST), reproduced byte for byte.

* the rollback-enabled ESP-IDF 4.4.2 bootloader, two OTA slots, no factory app: a NEW entry is booted and
  rewritten as PENDING_VERIFY; at the next reset it is rewritten as ABORTED and the previous app boots;
* a corrupted selected image (checksum, SHA-256 or magic) is logged and the other slot boots;
* the IDF v5.2 bootloader (rollback off) ignores the state and falls back the same way.
Expected otadata bytes are the spec's test vectors (§12.1), not our own encoder.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EXIT_NO_BOOTABLE, EspError
from esp_ota_emu.local_ota import ota_from_file
from helpers_flash import (
    ROLLBACK_BOOTLOADER, SAMPLES, V52_BOOTLOADER, entry, make_flash, real_app, sample,
)

TWO_OTA = """nvs, data, nvs, 0x9000, 0x5000,
otadata, data, ota, 0xe000, 0x2000,
app0, app, ota_0, 0x10000, 0x140000,
app1, app, ota_1, 0x150000, 0x140000,
"""
OTADATA = 0xE000
FF20 = "ff" * 20
# spec §12.1: seq 1 crc 9a984347, seq 2 crc 7437f655; states NEW 0, PENDING_VERIFY 1, VALID 2, ABORTED 4
SEQ1_VALID = bytes.fromhex("01000000" + FF20 + "02000000" + "9a984347")
SEQ2_NEW = bytes.fromhex("02000000" + FF20 + "00000000" + "7437f655")
SEQ2_PENDING = bytes.fromhex("02000000" + FF20 + "01000000" + "7437f655")
SEQ2_ABORTED = bytes.fromhex("02000000" + FF20 + "04000000" + "7437f655")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def sector(data: bytes) -> bytes:
    return data.ljust(0x1000, b"\xff")


def test_new_app_is_tried_once_then_rolled_back(realdata, tmp_path):
    flash = make_flash(tmp_path / "f.bin", realdata, TWO_OTA, {"app0": sample("v1")})
    with Device.open(flash, rollback=True) as dev:
        first = dev.boot(power_on=True)  # blank otadata, no factory: ota_0 and entry 0 = seq 1 VALID
        assert first.booted.label == "app0" and first.writes == [(OTADATA, 0x1000)]
        assert dev.flash.read(OTADATA, 0x2000) == sector(SEQ1_VALID) + b"\xff" * 0x1000
        assert ota_from_file(dev, SAMPLES / "sample_v2.bin").label == "app1"
        assert dev.flash.read(OTADATA + 0x1000, 0x1000) == sector(SEQ2_NEW)
        before = dev.flash.read(0, dev.flash.size)

        second = dev.boot()
        assert (second.booted.label, second.version) == ("app1", "2.0.0")
        assert second.writes == [(OTADATA + 0x1000, 0x1000)]
        after = dev.flash.read(0, dev.flash.size)
        assert after[OTADATA + 0x1000 : OTADATA + 0x2000] == sector(SEQ2_PENDING)
        assert after[: OTADATA + 0x1000] == before[: OTADATA + 0x1000]
        assert after[OTADATA + 0x2000 :] == before[OTADATA + 0x2000 :]

        third = dev.boot()  # the app never confirmed
        assert (third.booted.label, third.version) == ("app0", "1.0.0")
        assert third.writes == [(OTADATA + 0x1000, 0x1000)]
        assert dev.flash.read(OTADATA, 0x2000) == sector(SEQ1_VALID) + sector(SEQ2_ABORTED)
        assert any("PENDING_VERIFY was never confirmed" in step for step in third.trace)

        fourth = dev.boot()  # nothing left to change
        assert fourth.booted.label == "app0" and fourth.writes == []


def _corrupt(image: bytes, how: str) -> bytes:
    data = bytearray(image)
    if how == "magic":
        data[0] = 0xE8
    elif how == "sha256":
        data[-1] ^= 0xFF  # the appended digest
    elif how == "checksum":
        data[-33] ^= 0x01  # the checksum byte, just before the digest
    return bytes(data)


@pytest.mark.parametrize("how", ["checksum", "sha256", "magic"])
@pytest.mark.parametrize("bootloader,rollback", [(ROLLBACK_BOOTLOADER, True), (V52_BOOTLOADER, False)],
                         ids=["idf4.4.2-rollback", "idf5.2"])
def test_corrupted_selected_image_falls_back_to_the_other_slot(realdata, tmp_path, bootloader, rollback, how):
    app = real_app(realdata)
    flash = make_flash(tmp_path / "f.bin", realdata, TWO_OTA, {"app0": app, "app1": _corrupt(app, how)},
                       bootloader=bootloader, otadata=(entry(1), entry(2)))
    with Device.open(flash, rollback=rollback) as dev:
        assert dev.verify_partition(dev.partitions.find("app0")).ok
        result = dev.boot()
    assert result.booted.label == "app0"
    assert any(step.startswith("app1: image invalid") for step in result.trace)
    assert result.writes == []  # UNDEFINED entries are never rewritten


def test_the_v52_bootloader_ignores_the_ota_state(realdata, tmp_path):
    flash = make_flash(tmp_path / "f.bin", realdata, TWO_OTA, {"app0": sample("v1"), "app1": sample("v2")},
                       bootloader=V52_BOOTLOADER, otadata=(SEQ1_VALID, SEQ2_NEW))
    for _ in range(3):
        result = json.loads(run("boot", flash, "--no-rollback", "--json").output)
        assert (result["booted"], result["version"], result["writes"]) == ("app1", "2.0.0", [])
    assert flash.read_bytes()[OTADATA : OTADATA + 0x2000] == sector(SEQ1_VALID) + sector(SEQ2_NEW)


def test_cli_boot_reports_the_rollback_and_its_bytes(realdata, tmp_path):
    flash = make_flash(tmp_path / "f.bin", realdata, TWO_OTA, {"app0": sample("v1"), "app1": sample("v2")},
                       otadata=(SEQ1_VALID, SEQ2_PENDING))
    result = run("boot", flash, "--rollback", "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert (r["booted"], r["version"]) == ("app0", "1.0.0")
    assert r["writes"] == [{"offset": OTADATA + 0x1000, "length": 0x1000}]
    assert flash.read_bytes()[OTADATA + 0x1000 : OTADATA + 0x2000] == sector(SEQ2_ABORTED)
    # the setting persisted: the next command is the same device
    assert json.loads((tmp_path / "f.bin.emu.json").read_text())["settings"]["rollback"] is True
    assert "rollback on" in run("info", flash).output


def test_arduino_stock_bootloader_boots_a_corrupted_image_on_power_on_only(realdata, tmp_path):
    flash = make_flash(tmp_path / "f.bin", realdata, TWO_OTA, {"app0": sample("v1"), "app1": sample("broken")},
                       otadata=(entry(1), entry(2)))
    on = json.loads(run("boot", flash, "--skip-validation-on-power-on", "--power-on", "--json").output)
    assert on["booted"] == "app1" and "app1: loaded without validation (version 2.0.0)" in on["trace"]
    reset = json.loads(run("boot", flash, "--json").output)  # a reset validates
    assert reset["booted"] == "app0"
    assert json.loads(run("boot", flash, "--validate-on-power-on", "--power-on", "--json").output)["booted"] == "app0"


def test_no_bootable_app_exits_5(realdata, tmp_path):
    flash = make_flash(tmp_path / "f.bin", realdata, TWO_OTA, {"app0": sample("broken")}, otadata=(entry(1), None))
    result = run("boot", flash)
    assert result.exit_code == EXIT_NO_BOOTABLE
    assert "No bootable app partitions" in result.output and "Traceback" not in result.output
    assert json.loads(run("boot", flash, "--json").output)["booted"] is None


FACTORY_TEST = """nvs, data, nvs, 0x9000, 0x4000,
otadata, data, ota, 0xd000, 0x2000,
phy_init, data, phy, 0xf000, 0x1000,
factory, app, factory, 0x10000, 0x20000,
ota_0, app, ota_0, 0x30000, 0x20000,
ota_1, app, ota_1, 0x50000, 0x20000,
test, app, test, 0x70000, 0x20000,
"""


def test_factory_reset_pin_erases_listed_data_and_otadata(realdata, tmp_path):
    flash = make_flash(tmp_path / "f.bin", realdata, FACTORY_TEST,
                       {"factory": sample("v1"), "ota_0": sample("v2"), "test": sample("v3")},
                       otadata=(entry(1), None), size=1 << 20)
    data = bytearray(flash.read_bytes())
    data[0x9000:0x9010] = b"nvs-data-nvs-dat"
    data[0xF000:0xF010] = b"phy-data-phy-dat"
    flash.write_bytes(bytes(data))
    ignored = json.loads(run("boot", flash, "--hold-factory-reset-pin", "--json").output)
    assert ignored["booted"] == "ota_0" and any("without CONFIG_BOOTLOADER_FACTORY_RESET" in s for s in ignored["trace"])
    r = json.loads(run("boot", flash, "--factory-reset", "--factory-reset-otadata", "--factory-reset-data", "nvs",
                       "--hold-factory-reset-pin", "--hold-test-pin", "--json").output)
    assert r["booted"] == "factory"  # a factory reset returns before the test pin is looked at
    assert r["writes"] == [{"offset": 0x9000, "length": 0x4000}, {"offset": 0xD000, "length": 0x2000}]
    after = flash.read_bytes()
    assert after[0x9000:0xF000] == b"\xff" * 0x6000 and after[0xF000:0xF010] == b"phy-data-phy-dat"


def test_test_app_pin(realdata, tmp_path):
    flash = make_flash(tmp_path / "f.bin", realdata, FACTORY_TEST,
                       {"factory": sample("v1"), "test": sample("v3")}, size=1 << 20)
    assert json.loads(run("boot", flash, "--app-test", "--hold-test-pin", "--json").output)["booted"] == "test"
    assert json.loads(run("boot", flash, "--json").output)["booted"] == "factory"
    no_test = make_flash(tmp_path / "g.bin", realdata, TWO_OTA, {"app0": sample("v1")})
    result = run("boot", no_test, "--app-test", "--hold-test-pin", "--json")
    assert result.exit_code == EXIT_NO_BOOTABLE and json.loads(result.output)["booted"] is None


def test_otadata_partition_smaller_than_two_sectors_resets(realdata, tmp_path):
    csv = TWO_OTA.replace("otadata, data, ota, 0xe000, 0x2000", "otadata, data, ota, 0xe000, 0x1000")
    flash = make_flash(tmp_path / "f.bin", realdata, csv, {"app0": sample("v1")})
    r = json.loads(run("boot", flash, "--json").output)
    assert r["booted"] is None and any("needs 0x2000" in s for s in r["trace"])


def test_anti_rollback_burns_the_efuse_when_a_valid_app_boots(realdata, tmp_path):
    flash = make_flash(tmp_path / "f.bin", realdata, TWO_OTA, {"app0": sample("v1"), "app1": sample("v3")},
                       otadata=(SEQ1_VALID, bytes.fromhex("02000000" + FF20 + "02000000" + "7437f655")))
    r = json.loads(run("boot", flash, "--anti-rollback", "--json").output)
    assert r["booted"] == "app1" and r["burned_secure_version"] == 2
    assert json.loads((tmp_path / "f.bin.emu.json").read_text())["settings"]["efuse_secure_version"] == 2
    # app1 erased: v1 (secure_version 0) may no longer boot
    data = bytearray(flash.read_bytes())
    data[0x150000:0x151000] = b"\xff" * 0x1000
    flash.write_bytes(bytes(data))
    r = json.loads(run("boot", flash, "--json").output)
    assert r["booted"] is None and any("secure_version below the eFuse value" in s for s in r["trace"])


def test_test_app_is_the_last_resort(realdata, tmp_path):
    flash = make_flash(tmp_path / "f.bin", realdata, FACTORY_TEST,
                       {"factory": sample("broken"), "ota_0": sample("broken"), "test": sample("v3")},
                       otadata=(entry(1), None), size=1 << 20)
    r = json.loads(run("boot", flash, "--json").output)
    assert r["booted"] == "test" and r["trace"][-1] == "fell back to the test app as the only bootable partition"
    tried = [s.split(":")[0] for s in r["trace"] if "image invalid" in s]
    assert tried == ["ota_0", "factory", "ota_1"]  # the selected slot, down to factory, then up, then test


@pytest.mark.parametrize("chip,bits", [("esp32", 32), ("esp32c2", 4), ("esp32c3", 16)])
def test_efuse_secure_version_field_width_per_chip(realdata, tmp_path, chip, bits):
    flash = make_flash(tmp_path / "f.bin", realdata, TWO_OTA, {"app0": sample("v1")})
    with Device.open(flash, chip=chip) as dev:
        assert dev.secure_version_bits == bits
        dev.burn_secure_version(bits)
        with pytest.raises(EspError) as err:
            dev.burn_secure_version(bits + 1)
        assert err.value.esp_err == "ESP_ERR_INVALID_ARG" and dev.efuse_secure_version == bits


def test_rollback_rewrites_keep_the_entry_as_read(realdata, tmp_path):
    """write_otadata() writes the struct as read: seq_label and even a wrong CRC stay, only ota_state changes."""
    label = bytes(range(0x30, 0x44))
    odd = bytes.fromhex("05000000") + label + bytes.fromhex("01000000") + bytes.fromhex("deadbeef")  # bad CRC
    newer = bytes.fromhex("02000000") + label + bytes.fromhex("00000000") + bytes.fromhex("7437f655")
    flash = make_flash(tmp_path / "f.bin", realdata, TWO_OTA, {"app0": sample("v1"), "app1": sample("v2")},
                       otadata=(odd, newer))
    r = json.loads(run("boot", flash, "--rollback", "--json").output)
    assert r["booted"] == "app1"
    data = flash.read_bytes()
    assert data[OTADATA : OTADATA + 0x1000] == sector(odd[:24] + b"\x04\x00\x00\x00" + odd[28:])
    assert data[OTADATA + 0x1000 : OTADATA + 0x2000] == sector(newer[:24] + b"\x01\x00\x00\x00" + newer[28:])
    assert r["writes"] == [{"offset": OTADATA, "length": 0x1000}, {"offset": OTADATA + 0x1000, "length": 0x1000}]
