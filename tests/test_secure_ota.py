"""Signed OTAs on devices with Secure Boot V2, Secure Boot V1 or "signed apps without secure boot",
and the ROM's check of the bootloader at every reset.

The device is a real ESP32 bootloader with a table of factory + two OTA slots; the apps are the
firmware samples, signed with espsecure's format (RSA-3072) by the samples' test key, and one signed
by another key. Every refusal must come before otadata changes and say which check failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EXIT_NO_BOOTABLE, EXIT_OTA_FAILED, EspError, InputError
from esp_ota_emu.https_ota import api
from esp_ota_emu.local_ota import ota_from_file
from esp_ota_emu.security import sbv1, sbv2
from esp_ota_emu.security.keys import load_public_key
from esp_ota_emu.testserver import serve_files
from helpers_flash import (
    ROLLBACK_BOOTLOADER,
    SAMPLES,
    SMALL_BOOTLOADER,
    SMALL_LAYOUT,
    SMALL_OTADATA,
    STOCK_BOOTLOADER,
    make_flash,
    sample,
    signed_bootloader,
)

LAYOUT, OTADATA = SMALL_LAYOUT, SMALL_OTADATA
ESPSECURE = str(Path(sys.executable).with_name("espsecure"))
KEY = SAMPLES / "keys" / "secure_boot_signing_key.pem"
OTHER_KEY = SAMPLES / "keys" / "secure_boot_other_key.pem"


def digest(path) -> bytes:
    return sbv2.key_digest(load_public_key(path.read_bytes()))


@pytest.fixture
def flash(realdata, tmp_path):
    return make_flash(tmp_path / "f.bin", realdata, LAYOUT, {"factory": sample("v1_signed")}, size=1 << 20,
                      bootloader=signed_bootloader(realdata, KEY))


@pytest.fixture
def sb_device(flash):
    """A Secure Boot V2 device trusting the samples' key, powered on (factory runs)."""
    dev = Device.open(flash, secure_boot="v2", secure_boot_keys=[KEY])
    dev.power_on_if_needed()
    yield dev
    dev.close()


def tampered_signed_v2(tmp_path) -> str:
    """sample_v2_signed with the same bit flipped in two bytes of its padding segment: the XOR
    checksum and the segment headers stay right, only the digest over the signed data differs."""
    data = bytearray(sample("v2_signed"))
    data[0x11000] ^= 0x01
    data[0x11001] ^= 0x01
    out = tmp_path / "tampered.bin"
    out.write_bytes(data)
    return str(out)


def test_device_burns_digest_and_enables_secure_boot(sb_device, flash):
    assert sb_device.efuses.trusted_key_digests() == [digest(KEY)]
    assert sb_device.efuses.secure_boot_v2_enabled
    assert sb_device.running.label == "factory"
    side = json.loads(open(f"{flash}.emu.json").read())
    assert side["settings"]["secure_boot"] == "v2"
    # the digest persists with the device
    with Device.open(flash) as again:
        assert again.efuses.trusted_key_digests() == [digest(KEY)]


def test_signed_update_accepted_and_boots(sb_device):
    slot = ota_from_file(sb_device, SAMPLES / "sample_v2_signed.bin")
    assert slot.label == "ota_0"
    result = sb_device.verify_partition(slot)
    assert result.ok and result.image_len == 0x21000  # image padded to 4 KiB + the signature sector
    boot = sb_device.boot()
    assert boot.booted.label == "ota_0" and boot.version == "2.0.0"


@pytest.mark.parametrize(
    "image, reason",
    [
        ("unsigned", "no signature sector at offset 0x11000"),
        ("other", "signature block 0 made with a key whose digest is not trusted"),
        ("tampered", "image digest mismatch"),
    ],
)
def test_bad_signatures_fail_before_otadata_changes(sb_device, tmp_path, image, reason):
    path = {
        "unsigned": SAMPLES / "sample_v2.bin",
        "other": SAMPLES / "sample_v2_signed_other_key.bin",
        "tampered": tampered_signed_v2(tmp_path),
    }[image]
    otadata = sb_device.flash.read(OTADATA, 0x2000)
    with pytest.raises(EspError) as err:
        ota_from_file(sb_device, path)
    assert err.value.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED"
    assert reason in err.value.message and "Secure boot signature verification failed" in err.value.message
    assert sb_device.flash.read(OTADATA, 0x2000) == otadata
    assert sb_device.boot().booted.label == "factory"


@pytest.mark.parametrize("bootloader_key, reason", [
    (None, "no signature sector at offset 0x4000 (the image is not signed)"),
    (OTHER_KEY, "signature block 0 made with a key whose digest is not trusted"),
])
def test_the_rom_refuses_a_bootloader_without_a_trusted_signature(sb_device, realdata, bootloader_key, reason):
    """With Secure Boot V2 enabled the ROM checks the 2nd-stage bootloader's signature at every reset: a
    bootloader written in as esptool would, unsigned or signed with another key, boots nothing."""
    image = (signed_bootloader(realdata, bootloader_key) if bootloader_key is not None
             else (realdata / SMALL_BOOTLOADER).read_bytes())
    assert sb_device.boot().booted.label == "factory"  # the signed bootloader the device has
    sb_device.flash.write_raw(0x1000, image.ljust(0x7000, b"\xff"))
    boot = sb_device.boot()
    assert boot.booted is None
    assert f"2nd-stage bootloader at 0x1000 is invalid (the ROM's Secure Boot V2 check failed: {reason}" in boot.trace[-1]
    command = CliRunner().invoke(cli, ["boot", str(sb_device.flash.path)])
    assert command.exit_code == EXIT_NO_BOOTABLE
    lines = command.output.splitlines()
    assert lines[-2:] == ["booted: nothing: no app runs and the chip resets (why: below)", f"  {boot.trace[-1]}"]


def test_a_bootloader_update_must_be_signed_with_a_trusted_key(sb_device, realdata, tmp_path):
    """ESP-IDF v5.5's bootloader OTA on a Secure Boot V2 device: esp_ota_end refuses a bootloader signed
    with another key before the copy; one signed with the trusted key is copied and the ROM boots it."""
    with serve_files({"other.bin": signed_bootloader(realdata, OTHER_KEY),
                      "good.bin": signed_bootloader(realdata, KEY, STOCK_BOOTLOADER)}) as srv:
        options = dict(cert_pem=srv.tls.ca_pem, final="bootloader", finalize_with_copy=True)
        sb_device.settings.idf_release = "v5.5.5"
        before = sb_device.flash.read(0x1000, 0x7000)
        with pytest.raises(EspError) as err:
            api.https_ota(sb_device, srv.url("other.bin"), **options)
        assert err.value.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED" and "not trusted" in err.value.message
        assert sb_device.flash.read(0x1000, 0x7000) == before
        api.https_ota(sb_device, srv.url("good.bin"), **options)
    assert sb_device.flash.read(0x1000, 0x7000) != before
    boot = sb_device.boot()
    assert boot.booted.label == "factory", boot.trace


def test_untrusted_reason_names_both_digests(sb_device):
    with pytest.raises(EspError) as err:
        ota_from_file(sb_device, SAMPLES / "sample_v2_signed_other_key.bin")
    assert digest(OTHER_KEY).hex()[:16] in err.value.message
    assert f"trusted: {digest(KEY).hex()[:16]}" in err.value.message


def test_set_boot_partition_refuses_an_unsigned_image(sb_device):
    """esp_ota_set_boot_partition verifies again: an unsigned image put in a slot is not selected."""
    ota_0 = sb_device.partitions.find("ota_0")
    sb_device.flash.program(ota_0.offset, sample("v2"))
    otadata = sb_device.flash.read(OTADATA, 0x2000)
    with pytest.raises(EspError) as err:
        sb_device.ota.set_boot_partition(ota_0)
    assert err.value.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED" and "no signature sector" in err.value.message
    assert sb_device.flash.read(OTADATA, 0x2000) == otadata


def test_boot_refuses_a_foreign_key_image_and_falls_back(sb_device):
    """An image the app never accepted (written to flash directly) is refused by the bootloader."""
    ota_0 = sb_device.partitions.find("ota_0")
    sb_device.flash.erase_range(ota_0.offset, ota_0.size)
    sb_device.flash.program(ota_0.offset, sample("v2_signed_other_key"))
    # otadata selecting ota_0 as esp_ota_set_boot_partition would write it
    sb_device.ota._rewrite_ota_data(ota_0)
    boot = sb_device.boot()
    assert boot.booted.label == "factory"
    assert any("ota_0: image invalid" in step and "not trusted" in step for step in boot.trace)


def test_first_boot_without_burned_digest_trusts_the_image(flash):
    """Before any digest is burned (and Secure Boot not yet enabled) the bootloader accepts the
    image's own valid signature, as ESP-IDF's first boot does; an unsigned app does not boot."""
    with Device.open(flash) as dev:
        dev.settings.secure_boot = "v2"
        assert dev.boot_decision().booted.label == "factory"
        factory = dev.partitions.find("factory")
        dev.flash.erase_range(factory.offset, factory.size)
        dev.flash.program(factory.offset, sample("v1"))
        decision = dev.boot_decision()
        assert decision.booted is None
        assert any("no signature sector" in step for step in decision.trace)


@pytest.fixture
def signed_update_device(flash):
    """CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT: no Secure Boot, no eFuse digest."""
    dev = Device.open(flash, signed_on_update_no_secure_boot=True)
    dev.power_on_if_needed()
    yield dev
    dev.close()


def test_signed_on_update_trusts_the_running_apps_key(signed_update_device):
    dev = signed_update_device
    assert dev.efuses.trusted_key_digests() == [] and not dev.efuses.secure_boot_v2_enabled
    ota_from_file(dev, SAMPLES / "sample_v2_signed.bin")
    assert dev.boot().booted.label == "ota_0"


@pytest.mark.parametrize("name, reason", [("sample_v2_signed_other_key.bin", "not trusted"),
                                          ("sample_v2.bin", "no signature sector")])
def test_signed_on_update_refuses_other_keys_and_unsigned(signed_update_device, name, reason):
    with pytest.raises(EspError) as err:
        ota_from_file(signed_update_device, SAMPLES / name)
    assert err.value.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED" and reason in err.value.message


def test_signed_on_update_bootloader_does_not_check_signatures(signed_update_device):
    """Without Secure Boot the bootloader only checks the SHA-256: an unsigned app written
    directly boots."""
    dev = signed_update_device
    ota_0 = dev.partitions.find("ota_0")
    dev.flash.program(ota_0.offset, sample("v2"))
    dev.ota._rewrite_ota_data(ota_0)
    assert dev.boot().booted.label == "ota_0"


def test_signed_on_update_with_unsigned_running_app(realdata, tmp_path):
    flash = make_flash(tmp_path / "u.bin", realdata, LAYOUT, {"factory": sample("v1")}, size=1 << 20)
    with Device.open(flash, signed_on_update_no_secure_boot=True) as dev:
        with pytest.raises(EspError) as err:
            ota_from_file(dev, SAMPLES / "sample_v2_signed.bin")
    assert "no signatures were found for the running app" in err.value.message


def test_cli_ota_refusal_says_which_check(flash):
    runner = CliRunner()
    with serve_files({"other.bin": SAMPLES / "sample_v2_signed_other_key.bin"}) as srv:
        result = runner.invoke(cli, ["ota", str(flash), "--url", srv.url("other.bin"), "--cert-pem", str(srv.tls.ca_pem),
                                     "--secure-boot", "v2", "--secure-boot-key", str(KEY)])
    assert result.exit_code == EXIT_OTA_FAILED
    assert "ESP_ERR_OTA_VALIDATE_FAILED" in result.output and "not trusted" in result.output
    assert "Traceback" not in result.output


def test_qemu_efuse_file_round_trip(realdata, tmp_path):
    """The same device state for QEMU: an eFuse file made by the efuse command is imported with
    --efuse-file, enforced in OTAs, and the qemu command writes the device's eFuses back byte for byte."""
    flash = make_flash(tmp_path / "q.bin", realdata, LAYOUT, {"factory": sample("v1_signed")}, size=2 << 20,
                       bootloader=signed_bootloader(realdata, KEY))
    made = tmp_path / "efuse.bin"
    runner = CliRunner()
    assert runner.invoke(cli, ["efuse", "--chip", "esp32", "--burn-key-digest", str(KEY), "--enable-secure-boot",
                               "--burn-secure-version", "1", "-o", str(made)]).exit_code == 0
    info = runner.invoke(cli, ["info", str(flash), "--efuse-file", str(made), "--secure-boot", "v2", "--json"])
    security = json.loads(info.output)["security"]
    assert security["efuse"]["secure_boot_key_digests"][0]["digest"] == digest(KEY).hex()
    assert security["efuse_secure_version"] == 1
    with Device.open(flash) as dev:
        with pytest.raises(EspError) as err:
            ota_from_file(dev, SAMPLES / "sample_v2_signed_other_key.bin")
        assert "not trusted" in err.value.message
    out = json.loads(runner.invoke(cli, ["qemu", str(flash), "--json"]).output)
    assert open(out["efuse_file"], "rb").read() == made.read_bytes()


def test_secure_boot_key_option_accepts_public_keys(flash, realdata):
    pub = realdata / "esptool/secure_images/rsa_secure_boot_signing_pubkey.pem"
    with Device.open(flash, secure_boot_keys=[pub]) as dev:
        assert dev.efuses.trusted_key_digests() == [digest(pub)]
    with Device.open(flash, secure_boot_keys=[pub]) as dev:  # the same key again burns nothing
        assert dev.efuses.trusted_key_digests() == [digest(pub)]
    with pytest.raises(EspError) as err:  # the ESP32 holds one digest (BLOCK2)
        Device.open(flash, secure_boot_keys=[KEY])
    assert err.value.esp_err == "ESP_ERR_INVALID_STATE"


@pytest.fixture
def v1_signed(realdata, tmp_path):
    """espsecure sign-data --version 1 (the oracle) of the samples with esptool's ECDSA P-256 test keys."""
    sec = realdata / "esptool/secure_images"

    def sign(name: str, key: str):
        out = tmp_path / f"{name}-{key}.v1.bin"
        subprocess.run([ESPSECURE, "sign-data", "--version", "1", "--keyfile", str(sec / key), "-o", str(out),
                        str(SAMPLES / f"sample_{name}.bin")], check=True, capture_output=True)
        return out

    return sign, sec / "ecdsa256_secure_boot_signing_key.pem"


def test_secure_boot_v1_signed_apps(realdata, tmp_path, v1_signed):
    sign, key = v1_signed
    factory = sign("v1", "ecdsa256_secure_boot_signing_key.pem").read_bytes()
    flash = make_flash(tmp_path / "v1.bin", realdata, LAYOUT, {"factory": factory}, size=1 << 20)
    with Device.open(flash, secure_boot="v1", secure_boot_keys=[key]) as dev:
        assert dev.efuses.secure_boot_v1_enabled
        assert dev.boot(power_on=True).booted.label == "factory"
        for path, reason in ((sign("v2", "ecdsa256_secure_boot_signing_key2.pem"), "ECDSA signature verification failed"),
                             (SAMPLES / "sample_v2.bin", "signature block version is not 0")):
            with pytest.raises(EspError) as err:
                ota_from_file(dev, path)
            assert err.value.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED" and reason in err.value.message
        ota_from_file(dev, sign("v2", "ecdsa256_secure_boot_signing_key.pem"))
        assert dev.boot().booted.label == "ota_0"
        # the bootloader checks too: a foreign-signed image written directly does not boot
        ota_1 = dev.partitions.find("ota_1")
        dev.flash.program(ota_1.offset, sign("v3", "ecdsa256_secure_boot_signing_key2.pem").read_bytes())
        dev.ota._rewrite_ota_data(ota_1)
        boot = dev.boot()
        assert boot.booted.label == "ota_0"
        assert any("ota_1: image invalid" in step and "ECDSA" in step for step in boot.trace)


def test_secure_boot_v1_first_boot_digests_the_bootloader(realdata, tmp_path, v1_signed):
    """Reflashable mode: the key given is burned into BLOCK2 (byte-reversed, as espefuse does) and the
    first boot writes a random IV and the bootloader's digest at 0x0; espsecure digest-secure-bootloader
    with that IV computes the same 192 bytes. One-time mode (no key given) makes its own key."""
    sign, ecdsa_key = v1_signed
    sec = realdata / "esptool/secure_images"
    factory = sign("v1", "ecdsa256_secure_boot_signing_key.pem").read_bytes()
    flash = make_flash(tmp_path / "v1.bin", realdata, LAYOUT, {"factory": factory}, size=1 << 20,
                       bootloader=SMALL_BOOTLOADER)
    with Device.open(flash, secure_boot="v1", secure_boot_keys=[ecdsa_key],
                     secure_bootloader_key=sec / "256bit_key.bin") as dev:
        assert dev.efuses.read_bytes("BLOCK2") == (sec / "256bit_key.bin").read_bytes()[::-1]
        assert dev.boot(power_on=True).booted.label == "factory"
    stored = flash.read_bytes()
    iv = tmp_path / "iv.bin"
    iv.write_bytes(stored[:128])
    subprocess.run([ESPSECURE, "digest-secure-bootloader", "--keyfile", str(sec / "256bit_key.bin"), "--iv", str(iv),
                    "-o", str(tmp_path / "digested.bin"), str(realdata / SMALL_BOOTLOADER)],
                   check=True, capture_output=True)
    assert stored[:192] == (tmp_path / "digested.bin").read_bytes()[:192]
    assert stored[192:0x1000] == b"\xff" * (0x1000 - 192)

    one_time = make_flash(tmp_path / "v1-once.bin", realdata, LAYOUT, {"factory": factory}, size=1 << 20)
    with Device.open(one_time, secure_boot="v1", secure_boot_keys=[ecdsa_key]) as dev:
        assert dev.efuses.secure_boot_v1_key is not None and dev.boot().booted.label == "factory"


def test_secure_boot_v1_with_flash_encryption(realdata, tmp_path, v1_signed):
    """The first boot writes the digest sector, then flash encryption encrypts it together with the
    bootloader (ESP-IDF's encrypt_bootloader); the ROM reads both through decryption and boots."""
    sign, ecdsa_key = v1_signed
    sec = realdata / "esptool/secure_images"
    factory = sign("v1", "ecdsa256_secure_boot_signing_key.pem").read_bytes()
    flash = make_flash(tmp_path / "v1fe.bin", realdata, LAYOUT, {"factory": factory}, size=1 << 20,
                       bootloader=SMALL_BOOTLOADER)
    with Device.open(flash, secure_boot="v1", secure_boot_keys=[ecdsa_key], secure_bootloader_key=sec / "256bit_key.bin",
                     flash_encryption_key=sec / "256bit_key.bin", flash_encryption=True) as dev:
        assert dev.boot(power_on=True).booted.label == "factory"
        plain = dev.io.read(dev.secure_boot_digest_region(), 0, 192)
    assert flash.read_bytes()[:192] != plain  # stored encrypted
    bootloader = (realdata / SMALL_BOOTLOADER).read_bytes()
    assert plain[128:] == sbv1.bootloader_digest(bootloader, (sec / "256bit_key.bin").read_bytes(), plain[:128])


def test_secure_boot_v1_enabled_on_an_encrypted_device(realdata, tmp_path, v1_signed):
    """Secure Boot V1 turned on after flash encryption: the first boot digests the bootloader as the
    cache reads it (decrypted) and writes the IV and digest encrypted; the ROM then accepts it."""
    sign, ecdsa_key = v1_signed
    sec = realdata / "esptool/secure_images"
    factory = sign("v1", "ecdsa256_secure_boot_signing_key.pem").read_bytes()
    flash = make_flash(tmp_path / "fe-then-v1.bin", realdata, LAYOUT, {"factory": factory}, size=1 << 20)
    with Device.open(flash, flash_encryption_key=sec / "256bit_key.bin", flash_encryption=True) as dev:
        assert dev.boot(power_on=True).booted.label == "factory"
    with Device.open(flash, secure_boot="v1", secure_boot_keys=[ecdsa_key]) as dev:
        boot = dev.boot()
        assert boot.booted.label == "factory", boot.trace
        plain = dev.io.read(dev.secure_boot_digest_region(), 0, 192)
        key = dev.efuses.secure_boot_v1_key
    assert flash.read_bytes()[:192] != plain
    bootloader = (realdata / ROLLBACK_BOOTLOADER).read_bytes()
    assert plain[128:] == sbv1.bootloader_digest(bootloader, key, plain[:128])


def test_secure_boot_v1_bootloader_update_bricks_the_device(realdata, tmp_path, v1_signed):
    """ESP-IDF v5.5's bootloader OTA accepts a valid new bootloader on a Secure Boot V1 device (V1
    bootloaders carry no signature), and copies it; the ROM then finds that its digest is not the
    one at 0x0, and nothing boots any more."""
    sign, ecdsa_key = v1_signed
    factory = sign("v1", "ecdsa256_secure_boot_signing_key.pem").read_bytes()
    flash = make_flash(tmp_path / "v1.bin", realdata, LAYOUT, {"factory": factory}, size=1 << 20,
                       bootloader=SMALL_BOOTLOADER)
    with serve_files({"bootloader.bin": (realdata / STOCK_BOOTLOADER).read_bytes()}) as srv:
        with Device.open(flash, secure_boot="v1", secure_boot_keys=[ecdsa_key], idf_release="v5.5.5") as dev:
            assert dev.boot(power_on=True).booted.label == "factory"
            api.https_ota(dev, srv.url("bootloader.bin"), cert_pem=srv.tls.ca_pem, final="bootloader",
                          finalize_with_copy=True)
            boot = dev.boot()
    assert boot.booted is None
    assert boot.trace[-1].startswith("2nd-stage bootloader at 0x1000 is invalid (the ROM's Secure Boot V1 check "
                                     "failed: the bootloader's digest is not the one stored at 0x0")


def test_secure_boot_v1_takes_p256_keys_only(flash):
    with pytest.raises(InputError) as err:
        Device.open(flash, secure_boot="v1", secure_boot_keys=[KEY])  # an RSA key
    assert "ECDSA P-256" in str(err.value)


def test_signed_on_update_counts_the_signature_sector(signed_update_device):
    """With signed updates the verified image length includes the padding and the signature sector."""
    dev = signed_update_device
    slot = ota_from_file(dev, SAMPLES / "sample_v2_signed.bin")
    assert dev.verify_partition(slot).image_len == len(sample("v2_signed"))
