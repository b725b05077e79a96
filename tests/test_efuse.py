"""eFuse model: QEMU default files, field positions cross-checked with espefuse's virtual eFuses,
anti-rollback popcount semantics, key digests with revocation, flash-encryption key and counter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.efuse import Efuses
from esp_ota_emu.errors import EspError, InputError
from esp_ota_emu.security import sbv2
from esp_ota_emu.security.keys import load_public_key

ESPEFUSE = str(Path(sys.executable).with_name("espefuse"))
# Register offset (from the eFuse controller base) where QEMU's file starts, and the offsets of the
# blocks it holds, per chip (espefuse mem_definition.py read addresses).
REG_BLOCKS = {
    "esp32": [(0x00, 28), (0x38, 32), (0x58, 32), (0x78, 32)],
    "esp32c3": [(0x2C, 24), (0x44, 24)] + [(0x5C + 32 * i, 32) for i in range(9)],
}


@pytest.fixture(scope="module")
def sec(realdata) -> Path:
    return realdata / "esptool" / "secure_images"


def test_qemu_default_files():
    esp32 = Efuses.default("esp32").to_qemu_file()
    assert len(esp32) == 124 and {i: b for i, b in enumerate(esp32) if b} == {13: 0x80, 22: 0x10}
    c3 = Efuses.default("esp32c3").to_qemu_file()
    assert len(c3) == 1024 and {i: b for i, b in enumerate(c3) if b} == {0x26: 0x0C}
    assert Efuses.default("esp32").chip_revision == 300 and Efuses.default("esp32c3").chip_revision == 3
    assert Efuses.from_qemu_file("esp32", esp32).chip_revision == 300


@pytest.mark.parametrize("chip,rev", [("esp32", 0), ("esp32", 100), ("esp32", 201), ("esp32", 300), ("esp32", 303),
                                      ("esp32c3", 4), ("esp32c3", 101), ("esp32s3", 2), ("esp32c3", 11)])
def test_chip_revision_round_trips(chip, rev):
    efuses = Efuses.default(chip, rev)
    assert efuses.chip_revision == rev
    again = Efuses.from_dict(json.loads(json.dumps(efuses.to_dict())))
    assert again.chip_revision == rev and again.to_qemu_file() == efuses.to_qemu_file()


def test_bad_files_are_input_errors():
    with pytest.raises(InputError, match="124 bytes"):
        Efuses.from_qemu_file("esp32", bytes(1024))
    with pytest.raises(InputError, match="no eFuse model"):
        Efuses.default("esp8266")
    with pytest.raises(InputError):
        Efuses.from_dict({"chip": "esp32", "blocks": ["zz"]})


@pytest.mark.parametrize("chip,bits", [("esp32", 32), ("esp32c3", 16), ("esp32s3", 16)])
def test_secure_version_popcount(chip, bits):
    efuses = Efuses.default(chip)
    assert efuses.secure_version_bits == bits and efuses.secure_version == 0
    efuses.burn_secure_version(3)
    assert efuses.read("SECURE_VERSION") == 0b111 and efuses.secure_version == 3
    efuses.burn_secure_version(2)  # never goes down
    assert efuses.secure_version == 3
    assert efuses.check_secure_version(3) and efuses.check_secure_version(9) and not efuses.check_secure_version(2)
    efuses.burn("SECURE_VERSION", 1 << (bits - 1))  # popcount, not the highest bit
    assert efuses.secure_version == 4
    efuses.burn_secure_version(bits)
    assert efuses.secure_version == bits
    with pytest.raises(EspError) as err:
        efuses.burn_secure_version(bits + 1)
    assert err.value.esp_err == "ESP_ERR_INVALID_ARG"


def test_esp32_secure_version_is_in_block3_word4():
    efuses = Efuses.default("esp32")
    efuses.burn_secure_version(5)
    assert efuses.to_qemu_file()[108:112] == (0x1F).to_bytes(4, "little")


def test_key_digests_and_revocation(sec):
    digests = [sbv2.key_digest(load_public_key((sec / f"rsa_secure_boot_signing_pubkey{n}.pem").read_bytes()))
               for n in ("", "2", "4")]
    c3 = Efuses.default("esp32c3")
    assert c3.trusted_key_digests() == []
    assert [c3.burn_secure_boot_key_digest(d) for d in digests] == [0, 1, 2]
    assert c3.trusted_key_digests() == digests
    c3.revoke_secure_boot_key(1)
    assert c3.trusted_key_digests() == [digests[0], digests[2]]
    with pytest.raises(EspError):
        c3.burn_secure_boot_key_digest(digests[0])
    # The trusted digests feed the verifier: a revoked key no longer verifies.
    signed = (sec / "bootloader_multi_signed_v2_rsa.bin").read_bytes()
    image_len = len(signed) - 4096
    c3_2 = Efuses.default("esp32c3")
    c3_2.burn_secure_boot_key_digest(digests[1])  # key2 signs block 1
    assert sbv2.verify_image_signatures(signed, image_len, c3_2.trusted_key_digests()).verified_block == 1
    c3_2.revoke_secure_boot_key(0)
    check = sbv2.verify_image_signatures(signed, image_len, c3_2.trusted_key_digests())
    assert not check.ok and check.esp_err == "ESP_FAIL"
    esp32 = Efuses.default("esp32")
    esp32.burn_secure_boot_key_digest(digests[0])
    assert esp32.trusted_key_digests() == [digests[0]] and esp32.key_digest_slots == 1
    with pytest.raises(EspError, match="can not revoke"):
        esp32.revoke_secure_boot_key(0)


@pytest.mark.parametrize("chip", ["esp32", "esp32c3"])
def test_flash_encryption_state(chip):
    efuses = Efuses.default(chip)
    assert not efuses.flash_encryption_enabled and efuses.flash_encryption_key is None
    key = bytes(range(32))
    efuses.burn_flash_encryption_key(key)
    assert efuses.flash_encryption_key == key
    efuses.enable_flash_encryption()
    assert efuses.flash_encryption_enabled and efuses.flash_crypt_cnt == 1
    efuses.burn("FLASH_CRYPT_CNT" if chip == "esp32" else "SPI_BOOT_CRYPT_CNT", 0b10)  # even: disabled again
    assert not efuses.flash_encryption_enabled
    efuses.enable_flash_encryption()
    assert efuses.flash_crypt_cnt == 0b111 and efuses.flash_encryption_enabled


def test_s3_xts_256_key_uses_two_blocks():
    s3 = Efuses.default("esp32s3")
    key = bytes(range(64))
    s3.burn_flash_encryption_key(key)
    assert s3.flash_encryption_key == key
    assert s3.summary()["key_purposes"][:2] == ["XTS_AES_256_KEY_1", "XTS_AES_256_KEY_2"]


def _espefuse(chip: str, path: Path, *args: str) -> None:
    res = subprocess.run([ESPEFUSE, "--chip", chip, "--virt", "--path-efuse-file", str(path), "--do-not-confirm",
                          *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _from_espefuse(chip: str, path: Path, *, drop_protection: bool = False) -> Efuses:
    """espefuse's virtual eFuse file is the controller's register space, byte-reversed.

    ``drop_protection`` clears WR_DIS/RD_DIS: espefuse write-protects what it burns (key purposes
    always), a policy of the tool that the model does not copy."""
    regs = path.read_bytes()[::-1]
    blocks = [bytearray(regs[offset : offset + size]) for offset, size in REG_BLOCKS[chip]]
    efuses = Efuses(chip, blocks)
    if drop_protection:
        for name in ("WR_DIS", "RD_DIS"):
            f = efuses.layout.fields[name]
            value = int.from_bytes(efuses.blocks[0], "little") & ~(((1 << f.length) - 1) << f.bit)
            efuses.blocks[0][:] = value.to_bytes(len(efuses.blocks[0]), "little")
    return efuses


def test_fields_match_espefuse_esp32(sec, tmp_path):
    vfile = tmp_path / "esp32.bin"
    _espefuse("esp32", vfile, "summary")
    model = _from_espefuse("esp32", vfile)
    key = (sec / "256bit_key.bin").read_bytes()
    digest = (sec / "rsa_public_key_digest.bin")
    _espefuse("esp32", vfile, "burn-key", "--no-protect-key", "flash_encryption",
              str(sec / "256bit_key.bin"))
    _espefuse("esp32", vfile, "burn-block-data", "BLOCK2", str(digest))
    _espefuse("esp32", vfile, "burn-efuse", "FLASH_CRYPT_CNT", "1", "FLASH_CRYPT_CONFIG", "0xf", "ABS_DONE_1", "1")
    (tmp_path / "word4.bin").write_bytes((0x3F).to_bytes(4, "little"))  # SECURE_VERSION = BLOCK3 word 4
    _espefuse("esp32", vfile, "burn-block-data", "--offset", "16", "BLOCK3", str(tmp_path / "word4.bin"))
    model.burn_flash_encryption_key(key)
    model.burn_secure_boot_key_digest(digest.read_bytes())
    model.enable_flash_encryption()
    model.burn("FLASH_CRYPT_CONFIG", 0xF)
    model.enable_secure_boot_v2()
    model.burn_secure_version(6)
    assert _from_espefuse("esp32", vfile, drop_protection=True).blocks == model.blocks
    assert model.flash_encryption_key == key and model.trusted_key_digests() == [digest.read_bytes()]
    assert model.secure_version == 6 and model.secure_boot_v2_enabled and model.flash_crypt_config == 0xF


def test_fields_match_espefuse_esp32c3(sec, tmp_path):
    vfile = tmp_path / "c3.bin"
    _espefuse("esp32c3", vfile, "summary")
    model = _from_espefuse("esp32c3", vfile)
    key = (sec / "256bit_key.bin").read_bytes()
    pubkey = sec / "rsa_secure_boot_signing_pubkey.pem"
    _espefuse("esp32c3", vfile, "burn-key-digest", "BLOCK_KEY0", str(pubkey), "SECURE_BOOT_DIGEST0")
    _espefuse("esp32c3", vfile, "burn-key", "--no-read-protect", "BLOCK_KEY1", str(sec / "256bit_key.bin"),
              "XTS_AES_128_KEY")
    _espefuse("esp32c3", vfile, "burn-efuse", "SECURE_BOOT_KEY_REVOKE1", "1", "SPI_BOOT_CRYPT_CNT", "1",
              "SECURE_VERSION", "0x1f", "SECURE_BOOT_EN", "1", "WAFER_VERSION_MINOR_LO", "3",
              "DISABLE_WAFER_VERSION_MAJOR", "1")
    model.burn_secure_boot_key_digest(sbv2.key_digest(load_public_key(pubkey.read_bytes())))
    model.burn_flash_encryption_key(key)
    model.revoke_secure_boot_key(1)
    model.enable_flash_encryption()
    model.burn_secure_version(5)
    model.enable_secure_boot_v2()
    model.burn("WAFER_VERSION_MINOR_LO", 3)
    assert not model.disable_wafer_version_major
    model.burn("DISABLE_WAFER_VERSION_MAJOR", 1)
    got = _from_espefuse("esp32c3", vfile, drop_protection=True)
    assert got.blocks == model.blocks and got.disable_wafer_version_major
    assert got.chip_revision == 3 and got.secure_version == 5 and got.flash_encryption_key == key
    assert got.secure_boot_key_digests()[1]["revoked"] and got.secure_boot_v2_enabled


def test_cli_efuse_file(sec, tmp_path):
    out = tmp_path / "qemu_efuse.bin"
    runner = CliRunner()
    res = runner.invoke(cli, ["efuse", "--chip", "esp32", "-o", str(out), "--burn-secure-version", "2",
                              "--burn-key-digest", str(sec / "ecdsa256_secure_boot_signing_pubkey.pem"), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["secure_version"] == 2 and info["chip_revision"] == 300
    digest = sbv2.key_digest(load_public_key((sec / "ecdsa256_secure_boot_signing_pubkey.pem").read_bytes()))
    assert info["secure_boot_key_digests"][0]["digest"] == digest.hex()
    res = runner.invoke(cli, ["efuse", "--chip", "esp32", "--file", str(out), "--json"])
    assert json.loads(res.output)["secure_version"] == 2 and len(out.read_bytes()) == 124
    for chip, burn, message in [("esp32", "DISABLE_WAFER_VERSION_MAJOR=1", "esp32 has no eFuse field"),
                                ("esp32c3", "WAFER_VERSION_MAJOR=9", "2 bits wide"),
                                ("esp32c3", "SECURE_VERSION", "takes NAME=VALUE")]:
        res = runner.invoke(cli, ["efuse", "--chip", chip, "--burn-efuse", burn])
        assert res.exit_code == 3 and message in res.output
    res = runner.invoke(cli, ["efuse", "--chip", "esp32c3", "--file", str(out)])
    assert res.exit_code == 3 and "1024 bytes" in res.output


def test_device_chip_revision_comes_from_its_efuses(tmp_path):
    """Without --chip-rev the device reports what a fresh chip's eFuses say (ESP32 v3.0, ESP32-C3 v0.3)."""
    from esp_ota_emu.device import Device
    from esp_ota_emu.flash import Flash

    Flash.create(tmp_path / "f.bin", 4096).close()
    with Device.open(tmp_path / "f.bin", chip="esp32c3") as dev:
        assert dev.chip_rev == 3
    with Device.open(tmp_path / "f.bin", chip="esp32") as dev:
        assert dev.chip_rev == 300
    with Device.open(tmp_path / "f.bin", chip_rev=101) as dev:  # the setting wins
        assert dev.chip_rev == 101


C3 = "esp-serial-flasher/hello-world_2025-08/ESP32_C3"


def test_disable_wafer_version_major_lifts_the_maximum_revision(realdata, tmp_path):
    """Espressif's C3 hello_world runs on v0.3..v1.99. On a v2.0 chip the bootloader refuses it, and
    from v5.5 esp_https_ota refuses it on its first bytes, unless DISABLE_WAFER_VERSION_MAJOR is burned
    (bootloader_common_check_chip_revision_validity skips the maximum then)."""
    from esp_ota_emu.device import Device
    from esp_ota_emu.https_ota.api import https_ota
    from esp_ota_emu.mkflash import build_flash
    from esp_ota_emu.partitions import PartitionTable
    from esp_ota_emu.testserver import serve_files

    app = (realdata / C3 / "hello_world.bin").read_bytes()
    table = PartitionTable.from_csv("otadata, data, ota, 0xd000, 0x2000,\n"
                                    "ota_0, app, ota_0, 0x10000, 0x100000,\n"
                                    "ota_1, app, ota_1, 0x110000, 0x100000,\n")
    bootloader = (realdata / C3 / "bootloader.bin").read_bytes()
    runner = CliRunner()
    for fuse in (False, True):
        flash, efuse_file = tmp_path / f"c3-{fuse}.bin", tmp_path / f"c3-{fuse}.efuse"
        build_flash(flash, partitions=table, bootloader=bootloader, apps={"ota_0": app}, chip="esp32c3",
                    flash_size="keep")
        args = ["efuse", "--chip", "esp32c3", "--chip-rev", "200", "-o", str(efuse_file), "--json"]
        res = runner.invoke(cli, args + (["--burn-efuse", "disable_wafer_version_major=1"] if fuse else []))
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["disable_wafer_version_major"] is fuse
        with Device.open(flash, efuse_file=str(efuse_file)) as dev:
            assert dev.chip_rev == 200 and dev.disable_wafer_version_major is fuse
            assert (dev.boot(power_on=True).booted is not None) is fuse
        # the OTA's own check, from an app that runs: give the device a revision it can boot at first
        with Device.open(flash, chip_rev=3) as dev:
            assert dev.boot(power_on=True).booted.label == "ota_0"
        events = []
        with serve_files({"app.bin": app}) as srv, Device.open(flash, chip_rev=200, idf_release="v5.5") as dev:
            try:
                result = https_ota(dev, srv.url("app.bin"), cert_pem=srv.tls.ca_pem.read_text(),
                                   on_event=lambda name, data: events.append((name, data)))
            except EspError as err:
                result = err
            assert ("ESP_HTTPS_OTA_VERIFY_CHIP_REVISION", 3) in events
            if fuse:
                assert result.boot_partition_updated and dev.boot().booted.label == "ota_1"
            else:
                assert result.esp_err == "ESP_ERR_INVALID_VERSION"
                assert result.message == "Image requires chip rev <= v1.99, but chip is v2.0"
