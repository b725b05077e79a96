"""Secure Boot V1 / signed-app ECDSA blocks: byte-identical to espsecure, real vectors verify,
tampering and wrong keys fail the way ESP-IDF reports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from esp_ota_emu.errors import EspError, InputError
from esp_ota_emu.formats.signature import SIG_BLOCK_V1_SIZE, SignatureBlockV1
from esp_ota_emu.image import parse_image
from esp_ota_emu.security import sbv1
from esp_ota_emu.security.keys import load_private_key, load_public_key

ESPSECURE = str(Path(sys.executable).with_name("espsecure"))


@pytest.fixture(scope="module")
def sec(realdata) -> Path:
    return realdata / "esptool" / "secure_images"


def key(sec, name):
    return load_private_key((sec / name).read_bytes())


def test_signing_is_byte_identical_to_espsecure_and_the_vector(sec, tmp_path):
    src = sec / "bootloader.bin"
    ours = sbv1.sign_image(src.read_bytes(), key(sec, "ecdsa256_secure_boot_signing_key.pem"))
    out = tmp_path / "theirs.bin"
    subprocess.run([ESPSECURE, "sign-data", "--version", "1", "--keyfile",
                    str(sec / "ecdsa256_secure_boot_signing_key.pem"), "-o", str(out), str(src)],
                   check=True, capture_output=True)
    assert ours == out.read_bytes() == (sec / "bootloader_signed.bin").read_bytes()


def test_vector_verifies_with_every_form_of_the_key(sec):
    data = (sec / "bootloader_signed.bin").read_bytes()
    sbv1.verify_signed_file(data, load_public_key((sec / "ecdsa256_secure_boot_signing_pubkey.pem").read_bytes()))
    sbv1.verify_signed_file(data, key(sec, "ecdsa256_secure_boot_signing_key.pem").public_key())
    sbv1.verify_signed_file(data, sbv1.raw_public_key((sec / "ecdsa256_secure_boot_signing_pubkey_raw.bin").read_bytes()))
    # ESP-IDF finds the block at image_len.
    image_len = parse_image(data).image_len
    assert image_len == len(data) - SIG_BLOCK_V1_SIZE
    sbv1.verify_image_signature(data, image_len, key(sec, "ecdsa256_secure_boot_signing_key.pem").public_key())


def test_wrong_key_and_tampering_fail(sec):
    data = (sec / "bootloader_signed.bin").read_bytes()
    good = key(sec, "ecdsa256_secure_boot_signing_key.pem").public_key()
    for bad in (
        (data, key(sec, "ecdsa256_secure_boot_signing_key2.pem").public_key()),
        (data[:100] + bytes([data[100] ^ 1]) + data[101:], good),
        (data[:-1] + bytes([data[-1] ^ 1]), good),
    ):
        with pytest.raises(EspError) as err:
            sbv1.verify_signed_file(*bad)
        assert err.value.esp_err == "ESP_ERR_IMAGE_INVALID"
    bad_version = data[:-68] + b"\x01" + data[-67:]
    with pytest.raises(EspError, match="version is not 0"):
        sbv1.verify_signed_file(bad_version, good)


def test_wrong_key_types_are_refused_clearly(sec):
    data = (sec / "bootloader_signed.bin").read_bytes()
    rsa_key = load_public_key((sec / "rsa_secure_boot_signing_pubkey.pem").read_bytes())
    with pytest.raises(InputError, match="ECDSA P-256 keys, this key is RSA-3072"):
        sbv1.verify_signed_file(data, rsa_key)
    with pytest.raises(InputError, match="ECDSA P-384"):
        sbv1.sign_image(b"data", ec.generate_private_key(ec.SECP384R1()))


def test_signed_app_carries_its_block_at_image_len(sec):
    """hello-world-signed.bin is an IDF v3.3 app built with --secure-pad and signed for Secure Boot V1:
    the version-0 block sits right after the image's SHA-256 and 12 more bytes end the file on 64 KiB."""
    data = (sec / "hello-world-signed.bin").read_bytes()
    image_len = parse_image(data).image_len
    block = SignatureBlockV1.parse(data[image_len : image_len + SIG_BLOCK_V1_SIZE])
    assert len(block.signature) == 64 and any(block.signature)
    assert len(data) == image_len + SIG_BLOCK_V1_SIZE + 12 and len(data) % 0x10000 == 0


def test_precalculated_signature_gives_the_vector(sec):
    data = (sec / "bootloader.bin").read_bytes()
    pub = load_public_key((sec / "ecdsa256_secure_boot_signing_pubkey.pem").read_bytes())
    raw = (sec / "pre_calculated_bootloader_signature.bin").read_bytes()
    assert sbv1.attach_signature(data, pub, raw) == (sec / "bootloader_signed.bin").read_bytes()
    with pytest.raises(InputError, match="not made over this data"):
        sbv1.attach_signature(data + b"\0" * 16, pub, raw)


def test_bootloader_digest_is_the_vector_and_espsecures(sec, tmp_path):
    image, key = (sec / "bootloader.bin").read_bytes(), (sec / "256bit_key.bin").read_bytes()
    # esptool's vector was made with a 32-byte IV file (espsecure takes what the file holds).
    assert sbv1.digest_secure_bootloader(image, key, (sec / "256bit_iv.bin").read_bytes()) == (
        sec / "bootloader_digested.bin").read_bytes()
    iv = (sec / "digest_iv.bin").read_bytes()
    out = tmp_path / "digested.bin"
    subprocess.run([ESPSECURE, "digest-secure-bootloader", "--keyfile", str(sec / "256bit_key.bin"), "--iv",
                    str(sec / "digest_iv.bin"), "-o", str(out), str(sec / "bootloader.bin")], check=True,
                   capture_output=True)
    theirs = out.read_bytes()
    assert sbv1.digest_secure_bootloader(image, key, iv) == theirs
    assert theirs[128:192] == sbv1.bootloader_digest(image, key, iv)
    assert sbv1.bootloader_digest(image[:-16] + bytes(16), key, iv) != theirs[128:192]
    with pytest.raises(InputError):
        sbv1.bootloader_digest(image, key[:16], iv)
