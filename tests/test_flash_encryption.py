"""Flash encryption: the spec vectors, espsecure's encrypted test images, and random data
cross-checked against ``espsecure encrypt-flash-data`` / ``decrypt-flash-data``."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.errors import InputError
from esp_ota_emu.security import flash_encryption as fe

ESPSECURE = str(Path(sys.executable).with_name("espsecure"))
K32, K64, PLAIN = bytes(range(32)), bytes(range(64)), bytes(range(0x40, 0x60))

SPEC_VECTORS = [  # spec 12.4
    ("esp32", K32, 0x0, "78fadd4f7bbd234f11ffa1a4138741d8881f948af250d92befb15a75e14ef055"),
    ("esp32", K32, 0x10000, "32a0276b08b363e5a31fbdde6b794dbea004187055af6ee935f61972fce3ec42"),
    ("xts", K32, 0x0, "cf40988868afdcaa38ffd0a8516563edf311e8a8fa0c7431f0b00cc5545861aa"),
    ("xts", K32, 0x10000, "57e211beaca6c28be1f951fc3da3b290125d1be78a663aa6d5eedeee450ba571"),
    ("xts", K64, 0x0, "474bbf0adffdfee926b0149cba19c39039598bc7cfa5d5e264638b892611bb9a"),
    ("xts", K64, 0x10000, "19a52ee80cf8706bab3016295aca36783e06da3bfc44be190bb36a2affc7b158"),
]


@pytest.fixture(scope="module")
def sec(realdata) -> Path:
    return realdata / "esptool" / "secure_images"


@pytest.mark.parametrize("mode,key,address,expected", SPEC_VECTORS)
def test_spec_vectors(mode, key, address, expected):
    xts = mode == "xts"
    cipher = fe.encrypt_flash_data(PLAIN, address, key, aes_xts=xts)
    assert cipher.hex() == expected
    assert fe.decrypt_flash_data(cipher, address, key, aes_xts=xts) == PLAIN


def test_esp32_tweaked_key_vector():
    assert fe.esp32_tweaked_key(K32, 0x20).hex() == "000122030005068728090e0b0c8d0e1f001110131455161f38191e1b1c9d1e0e"
    assert fe.esp32_tweaked_key(K32, 0x20, 0) == K32


@pytest.mark.parametrize("conf,name", [(0xF, ""), (0x0, "-conf0"), (0x3, "-conf3"), (0x9, "-conf9"), (0xC, "-confc")])
def test_esp32_bootloader_vectors(sec, conf, name):
    plain = (sec / "bootloader.bin").read_bytes()
    cipher = (sec / f"bootloader-encrypted{name}.bin").read_bytes()
    key = (sec / "256bit_key.bin").read_bytes()
    assert fe.esp32_encrypt(plain, 0x1000, key, conf) == cipher
    assert fe.esp32_decrypt(cipher, 0x1000, key, conf) == plain


def test_xts_and_app_vectors(sec):
    assert fe.xts_encrypt((sec / "bootloader.bin").read_bytes(), 0x1000, (sec / "256bit_key.bin").read_bytes()) == (
        sec / "bootloader-encrypted-aes-xts.bin").read_bytes()
    app = (sec / "hello-world-signed.bin").read_bytes()
    key = (sec / "ef-flashencryption-key.bin").read_bytes()
    assert fe.esp32_decrypt((sec / "hello-world-signed-encrypted.bin").read_bytes(), 0x20000, key) == app
    assert fe.xts_decrypt((sec / "hello-world-signed-encrypted-aes-xts.bin").read_bytes(), 0x20000, key) == app
    assert fe.xts_encrypt(app, 0x10000, (sec / "512bit_key.bin").read_bytes()) == (
        sec / "hello-world-signed-encrypted-aes-xts-256.bin").read_bytes()


def _espsecure(op: str, tmp: Path, data: bytes, key: bytes, address: int, xts: bool, conf: int) -> bytes:
    src, out, keyfile = tmp / f"{op}.in", tmp / f"{op}.out", tmp / "key.bin"
    src.write_bytes(data)
    keyfile.write_bytes(key)
    args = [ESPSECURE, f"{op}-flash-data", "--keyfile", str(keyfile), "--address", hex(address), "-o", str(out)]
    args += ["--aes-xts"] if xts else ["--flash-crypt-conf", hex(conf)]
    subprocess.run([*args, str(src)], check=True, capture_output=True)
    return out.read_bytes()


@pytest.mark.parametrize("case", range(6))
def test_cross_check_with_espsecure(tmp_path, case):
    rnd = random.Random(case)
    xts = case % 2 == 1
    key = rnd.randbytes([16, 32, 64][case % 3] if xts else rnd.choice([24, 32]))
    address = rnd.randrange(0, 0x400000 // 16) * 16  # 16-aligned, often not 32- or 128-aligned
    conf = rnd.randrange(16)
    data = rnd.randbytes(16 * rnd.randrange(1, 300))
    ours = fe.encrypt_flash_data(data, address, key, aes_xts=xts, flash_crypt_config=conf)
    assert ours == _espsecure("encrypt", tmp_path, data, key, address, xts, conf)
    assert fe.decrypt_flash_data(ours, address, key, aes_xts=xts, flash_crypt_config=conf) == data
    assert _espsecure("decrypt", tmp_path, ours, key, address, xts, conf) == data


def test_refusals():
    with pytest.raises(InputError, match="multiple of 16"):
        fe.esp32_encrypt(b"x" * 20, 0, K32)
    with pytest.raises(InputError, match="multiple of 16"):
        fe.xts_encrypt(b"x" * 16, 8, K32)
    with pytest.raises(InputError, match="24 or 32 bytes"):
        fe.esp32_encrypt(PLAIN, 0, K64)
    with pytest.raises(InputError, match="16, 32 or 64"):
        fe.xts_encrypt(PLAIN, 0, bytes(24))
    with pytest.raises(InputError, match="4-bit"):
        fe.esp32_encrypt(PLAIN, 0, K32, 0x10)


def test_megabytes_are_fast():
    data = os.urandom(4 << 20)
    start = time.perf_counter()
    for xts in (False, True):
        assert fe.decrypt_flash_data(fe.encrypt_flash_data(data, 0x10000, K32, aes_xts=xts), 0x10000, K32,
                                     aes_xts=xts) == data
    assert time.perf_counter() - start < 10


def test_cli_matches_vector(sec, tmp_path):
    out = tmp_path / "enc.bin"
    res = CliRunner().invoke(cli, ["encrypt-flash-data", "--keyfile", str(sec / "256bit_key.bin"), "--address",
                                   "0x1000", "--flash-crypt-conf", "0x3", "-o", str(out), str(sec / "bootloader.bin")])
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == (sec / "bootloader-encrypted-conf3.bin").read_bytes()
    back = tmp_path / "dec.bin"
    res = CliRunner().invoke(cli, ["decrypt-flash-data", "-x", "--keyfile", str(sec / "256bit_key.bin"), "--address",
                                   "0x1000", "-o", str(back), str(sec / "bootloader-encrypted-aes-xts.bin")])
    assert res.exit_code == 0 and back.read_bytes() == (sec / "bootloader.bin").read_bytes()


def test_configured_from_efuses(sec):
    from esp_ota_emu.efuse import Efuses

    esp32 = Efuses.default("esp32")
    assert fe.FlashEncryption.from_efuses(esp32) is None
    esp32.burn_flash_encryption_key((sec / "ef-flashencryption-key.bin").read_bytes())
    esp32.burn("FLASH_CRYPT_CONFIG", 0xF)
    crypto = fe.FlashEncryption.from_efuses(esp32)
    app = (sec / "hello-world-signed.bin").read_bytes()
    assert crypto.decrypt((sec / "hello-world-signed-encrypted.bin").read_bytes(), 0x20000) == app
    c3 = Efuses.default("esp32c3")
    c3.burn_flash_encryption_key((sec / "256bit_key.bin").read_bytes())
    assert fe.FlashEncryption.from_efuses(c3).encrypt((sec / "bootloader.bin").read_bytes(), 0x1000) == (
        sec / "bootloader-encrypted-aes-xts.bin").read_bytes()
    s3 = Efuses.default("esp32s3")
    s3.burn_flash_encryption_key((sec / "512bit_key.bin").read_bytes())
    assert fe.FlashEncryption.from_efuses(s3).decrypt((sec / "hello-world-signed-encrypted-aes-xts-256.bin").read_bytes(),
                                                      0x10000) == app
