"""The app-side commands (mark-valid, mark-invalid, set-boot, erase-otadata, erase-last-boot,
check-rollback, state) on real flashes, with ESP-IDF's errors and exit codes, across resets."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EXIT_INVALID, EspError
from esp_ota_emu.local_ota import ota_from_file
from helpers_flash import SAMPLES, entry, make_flash, sample

LAYOUT = """nvs, data, nvs, 0x9000, 0x4000,
otadata, data, ota, 0xd000, 0x2000,
phy_init, data, phy, 0xf000, 0x1000,
factory, app, factory, 0x10000, 0x20000,
ota_0, app, ota_0, 0x30000, 0x20000,
ota_1, app, ota_1, 0x50000, 0x20000,
"""
OTADATA = 0xD000


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def js(*args):
    result = run(*args, "--json")
    return result.exit_code, json.loads(result.output) if result.output.startswith("{") else result.output


@pytest.fixture
def flash(realdata, tmp_path):
    return make_flash(tmp_path / "f.bin", realdata, LAYOUT, {"factory": sample("v1")}, size=1 << 20)


def otadata(path):
    return path.read_bytes()[OTADATA : OTADATA + 0x2000]


def test_update_confirm_and_keep(flash):
    with Device.open(flash, rollback=True) as dev:
        ota_from_file(dev, SAMPLES / "sample_v2.bin")  # powers on (factory), writes ota_0, selects it
        assert dev.state.running == "factory"
    assert js("state", flash, "ota_0") == (0, {"partition": "ota_0", "state": "NEW"})
    assert js("boot", flash)[1]["booted"] == "ota_0"
    assert js("state", flash, "ota_0")[1]["state"] == "PENDING_VERIFY"
    assert js("mark-valid", flash) == (0, {"running": "ota_0", "marked": "VALID"})
    assert js("state", flash, "ota_0")[1]["state"] == "VALID"
    before = otadata(flash)
    assert js("mark-valid", flash)[0] == 0 and otadata(flash) == before  # already VALID: no write
    assert js("boot", flash)[1]["booted"] == "ota_0"


def test_pending_app_cannot_start_another_ota(flash):
    with Device.open(flash, rollback=True) as dev:
        ota_from_file(dev, SAMPLES / "sample_v2.bin")
        dev.boot()
        with pytest.raises(EspError) as err:
            ota_from_file(dev, SAMPLES / "sample_v3.bin")
        assert err.value.esp_err == "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"
        dev.ota.mark_app_valid_cancel_rollback()
        assert ota_from_file(dev, SAMPLES / "sample_v3.bin").label == "ota_1"


def test_mark_invalid_rolls_back_and_reboots(flash):
    with Device.open(flash, rollback=True) as dev:
        ota_from_file(dev, SAMPLES / "sample_v2.bin")
        dev.boot()
    code, r = js("check-rollback", flash)
    assert (code, r) == (0, {"rollback_possible": True})  # the factory app verifies
    code, r = js("mark-invalid", flash)
    assert code == 0 and r["marked_invalid"] == "ota_0" and r["reboot"]["booted"] == "factory"
    assert otadata(flash)[24:28] == b"\x03\x00\x00\x00"  # entry 0: INVALID, same seq, same sector
    assert js("state", flash, "ota_0")[1]["state"] == "INVALID"


def test_mark_invalid_without_a_fallback_fails(realdata, tmp_path):
    csv = LAYOUT.replace("factory, app, factory, 0x10000, 0x20000,\n", "")
    flash = make_flash(tmp_path / "f.bin", realdata, csv, {"ota_0": sample("v1")}, size=1 << 20,
                       otadata=(entry(1, 2), None))
    assert run("check-rollback", flash).exit_code == EXIT_INVALID
    result = run("mark-invalid", flash)
    assert result.exit_code == EXIT_INVALID and "ESP_ERR_OTA_ROLLBACK_FAILED" in result.output
    assert otadata(flash)[:32] == entry(1, 2)


def test_factory_app_cannot_mark_itself(flash):
    result = run("mark-valid", flash)
    assert result.exit_code == EXIT_INVALID and "ESP_FAIL" in result.output and "factory" in result.output
    result = run("state", flash, "factory")
    assert result.exit_code == EXIT_INVALID and "ESP_ERR_NOT_SUPPORTED" in result.output
    result = run("state", flash, "ota_1")
    assert result.exit_code == EXIT_INVALID and "ESP_ERR_NOT_FOUND" in result.output
    assert run("state", flash, "nope").exit_code == 2


def test_set_boot_checks_the_image_and_factory_erases_otadata(realdata, flash):
    data = bytearray(flash.read_bytes())
    broken, v2 = sample("broken"), sample("v2")
    data[0x30000 : 0x30000 + len(broken)] = broken
    data[0x50000 : 0x50000 + len(v2)] = v2
    flash.write_bytes(bytes(data))
    result = run("set-boot", flash, "ota_0")
    assert result.exit_code == EXIT_INVALID and "ESP_ERR_OTA_VALIDATE_FAILED" in result.output
    assert js("set-boot", flash, "ota_1") == (0, {"set_boot": "ota_1", "boot_partition": "ota_1"})
    assert otadata(flash)[:32] == entry(2)  # blank otadata: sector 0, seq slot+1, UNDEFINED without rollback
    assert js("boot", flash)[1]["booted"] == "ota_1"
    assert js("set-boot", flash, "factory")[0] == 0
    assert otadata(flash) == b"\xff" * 0x2000
    assert js("boot", flash)[1]["booted"] == "factory"
    result = run("set-boot", flash, "nvs")
    assert result.exit_code == EXIT_INVALID and "ESP_ERR_OTA_VALIDATE_FAILED" in result.output


def test_set_boot_skip_validate_selects_an_image_the_bootloader_refuses(flash):
    """esp_ota_set_boot_partition_skip_validate (v6.1): otadata selects ota_0 although it holds a broken
    image, which esp_ota_set_boot_partition refuses; the next reset passes over it to factory."""
    data = bytearray(flash.read_bytes())
    broken = sample("broken")
    data[0x30000 : 0x30000 + len(broken)] = broken
    flash.write_bytes(bytes(data))
    before = otadata(flash)
    result = run("set-boot", flash, "ota_0", "--skip-validate", "--idf-release", "v6.0.2")
    assert result.exit_code != 0 and "ESP_ERR_NOT_SUPPORTED" in result.output and "v6.1 and newer" in result.output
    result = run("set-boot", flash, "ota_0", "--idf-release", "v6.1")
    assert result.exit_code == EXIT_INVALID and "ESP_ERR_OTA_VALIDATE_FAILED" in result.output
    assert otadata(flash) == before
    assert js("set-boot", flash, "ota_0", "--skip-validate") == (0, {"set_boot": "ota_0", "boot_partition": "ota_0"})
    assert otadata(flash)[:32] == entry(1)  # blank otadata: sector 0, seq slot+1
    boot = js("boot", flash)[1]
    assert boot["booted"] == "factory"
    assert any("ota_0" in line and "hash" in line.lower() for line in boot["trace"]), boot["trace"]


def test_erase_otadata_and_erase_last_boot(flash):
    with Device.open(flash) as dev:
        ota_from_file(dev, SAMPLES / "sample_v2.bin")
        dev.boot()
        ota_from_file(dev, SAMPLES / "sample_v3.bin")
        assert dev.boot().booted.label == "ota_1"
    assert js("erase-last-boot", flash) == (0, {"erased": ["ota_0"]})
    data = flash.read_bytes()
    assert data[0x30000:0x50000] == b"\xff" * 0x20000 and data[OTADATA : OTADATA + 0x1000] == b"\xff" * 0x1000
    result = run("erase-last-boot", flash)  # nothing left to erase
    assert result.exit_code == EXIT_INVALID and "ESP_FAIL" in result.output
    assert js("erase-otadata", flash) == (0, {"erased": {"offset": OTADATA, "length": 0x2000}})
    assert js("boot", flash)[1]["booted"] == "factory"


@pytest.mark.parametrize("release,sector,seq", [("v5", 1, 1), ("v4", 1, 1), ("v5.5.5", 1, 1), ("v6.0", 0, 1),
                                                 ("newest", 0, 1)])
def test_selecting_the_active_slot_again_per_release(flash, release, sector, seq):
    """Spec §11.5: before v6.0 the same seq goes into the other sector, from v6.0 the same one is rewritten."""
    with Device.open(flash, idf_release=release) as dev:
        ota_from_file(dev, SAMPLES / "sample_v2.bin")
        dev.boot()
        dev.ota.set_boot_partition(dev.partitions.find("ota_0"))
    data = otadata(flash)
    assert data[sector * 0x1000 : sector * 0x1000 + 32] == entry(seq)
    if sector == 1:
        assert data[:32] == entry(1)


def test_anti_rollback_refuses_and_erases_an_older_app(realdata, tmp_path):
    csv = LAYOUT.replace("factory, app, factory, 0x10000, 0x20000,\n", "")
    flash = make_flash(tmp_path / "f.bin", realdata, csv, {"ota_0": sample("v3"), "ota_1": sample("v2")},
                       size=1 << 20, otadata=(entry(1, 2), None))
    result = run("set-boot", flash, "ota_1", "--anti-rollback", "--efuse-secure-version", "2")
    assert result.exit_code == EXIT_INVALID and "ESP_ERR_OTA_SMALL_SEC_VER" in result.output
    assert flash.read_bytes()[0x50000:0x70000] == b"\xff" * 0x20000


def test_seq_arithmetic_with_four_slots(realdata, tmp_path):
    """Spec §4.7 example arithmetic with 4 slots: active seq 5 (slot 0) -> ota_3 needs seq 8, then ota_2 seq 11."""
    csv = "otadata, data, ota, 0xd000, 0x2000,\n" + "".join(
        f"ota_{i}, app, ota_{i}, 0x{0x10000 + 0x20000 * i:x}, 0x20000,\n" for i in range(4))
    apps = {f"ota_{i}": sample("v1") for i in range(4)}
    flash = make_flash(tmp_path / "f.bin", realdata, csv, apps, size=1 << 20, otadata=(entry(4), entry(5)))
    with Device.open(flash) as dev:
        assert dev.boot().booted.label == "ota_0"
        dev.ota.set_boot_partition(dev.partitions.find("ota_3"))
        assert dev.flash.read(OTADATA, 32) == entry(8)
        assert dev.boot().booted.label == "ota_3"
        dev.ota.set_boot_partition(dev.partitions.find("ota_2"))
        assert dev.flash.read(OTADATA + 0x1000, 32) == entry(11)
        assert dev.boot().booted.label == "ota_2"


def test_https_ota_command_refuses_while_pending_verify(flash):
    """The same rule through the `ota` command (esp_https_ota over the loopback server), then after confirming."""
    from esp_ota_emu.errors import EXIT_OTA_FAILED
    from esp_ota_emu.testserver import serve_files

    with Device.open(flash, rollback=True) as dev:
        ota_from_file(dev, SAMPLES / "sample_v2.bin")
        assert dev.boot().booted.label == "ota_0"
    with serve_files({"v3.bin": SAMPLES / "sample_v3.bin"}) as srv:
        args = ("ota", flash, "--url", srv.url("v3.bin"), "--cert-pem", srv.tls.ca_pem)
        refused = run(*args)
        assert refused.exit_code == EXIT_OTA_FAILED and "ESP_ERR_OTA_ROLLBACK_INVALID_STATE" in refused.output
        assert run("mark-valid", flash).exit_code == 0
        assert run(*args).exit_code == 0
    assert js("boot", flash)[1]["booted"] == "ota_1"
    assert js("state", flash, "ota_1")[1]["state"] == "PENDING_VERIFY"
