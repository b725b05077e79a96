"""esp_encrypted_img: the idf-extra-components vectors decrypt byte for byte through the streaming
decoder whatever the chunking; wrong keys, truncation and tampering fail with ESP_FAIL; our
encrypter's output is the same format (and decrypts with the same code path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from esp_ota_emu.cli.main import cli
from esp_ota_emu.errors import EspError, InputError
from esp_ota_emu.formats.encrypted_image import HEADER_SIZE, PreEncBinHeader
from esp_ota_emu.security.encrypted_img import (
    EncryptedImageDecrypter,
    decrypt_image,
    ecies_device_key,
    encrypt_image,
)
from esp_ota_emu.security.keys import load_private_key, load_public_key

RSA_VECTORS = ["esp_encrypted_img/image.bin", "esp_delta_ota/base.bin", "esp_delta_ota/new.bin"]


@pytest.fixture(scope="module")
def iec(realdata) -> Path:
    return realdata / "idf-extra-components"


@pytest.fixture(scope="module")
def rsa_key(iec):
    return load_private_key((iec / "esp_encrypted_img" / "certs_test_rsa_private_key.pem").read_bytes())


@pytest.fixture(scope="module")
def ecc_key(iec):
    return load_private_key((iec / "esp_encrypted_img" / "derived_ecc_device_key_from_test_mocks.pem").read_bytes())


@pytest.mark.parametrize("vector", RSA_VECTORS)
@pytest.mark.parametrize("chunk", [1, 15, 16, 17, 500, 512, 4096, 1 << 20])
def test_rsa_vectors_decrypt_in_any_chunking(iec, rsa_key, vector, chunk):
    data = (iec / vector).read_bytes()
    assert decrypt_image(data, rsa_key, chunk) == (iec / f"{vector}.decrypted.bin").read_bytes()


def test_ecies_vector_decrypts(iec, ecc_key):
    data = (iec / "esp_encrypted_img" / "image_ecc.bin").read_bytes()
    for chunk in (1, 7, 512, 1024):
        assert decrypt_image(data, ecc_key, chunk) == (iec / "esp_encrypted_img" / "image_ecc.bin.decrypted.bin").read_bytes()


def test_device_key_from_hmac_key_matches_the_example_public_key(iec):
    """The pre_encrypted_ota example's device HMAC key yields the public key the example encrypts for."""
    device = ecies_device_key((iec / "esp_encrypted_img" / "ecc_key_device_hmac_key.bin").read_bytes())
    pem = device.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert pem == (iec / "esp_encrypted_img" / "ecc_key_public.pem").read_bytes()
    plain = os.urandom(3000)
    image = encrypt_image(plain, load_public_key(pem))
    assert decrypt_image(image, device, 100) == plain


def test_output_comes_in_16_byte_multiples_until_the_end(iec, rsa_key):
    data = (iec / "esp_encrypted_img" / "image.bin").read_bytes()
    dec = EncryptedImageDecrypter(rsa_key)
    outs = [dec.feed(data[i : i + 37]) for i in range(0, len(data), 37)]
    dec.finish()
    assert all(len(o) % 16 == 0 for o in outs[:-1])
    assert dec.bin_size == 11680 and dec.is_complete and sum(map(len, outs)) == dec.bin_size


def test_header_layout(iec, rsa_key):
    data = (iec / "esp_encrypted_img" / "image.bin").read_bytes()
    header = PreEncBinHeader.parse(data[:HEADER_SIZE])
    assert data[:4] == bytes.fromhex("cfb68807")
    assert header.bin_size == len(data) - HEADER_SIZE and header.extra_header == bytes(88)
    # The GCM key is wrapped with PKCS#1 v1.5 (not OAEP).
    assert len(rsa_key.decrypt(header.enc_gcm, padding.PKCS1v15())) == 32


def _fails(data, key, match):
    with pytest.raises(EspError, match=match) as err:
        decrypt_image(data, key, 256)
    assert err.value.esp_err == "ESP_FAIL"


def test_failures_are_esp_fail(iec, rsa_key, ecc_key):
    data = (iec / "esp_encrypted_img" / "image.bin").read_bytes()
    other = load_private_key((iec / "esp_encrypted_img" / "rsa_key_private.pem").read_bytes())
    _fails(data, other, "GCM key")
    _fails(data[:-1], rsa_key, "received 11679 bytes")
    _fails(data[:300], rsa_key, "inside its 512-byte header")
    _fails(data + b"\0" * 16, rsa_key, "header says 11680")
    tag = bytearray(data)
    tag[408] ^= 1
    _fails(bytes(tag), rsa_key, "authentication tag")
    body = bytearray(data)
    body[5000] ^= 0x80
    _fails(bytes(body), rsa_key, "authentication tag")
    _fails(b"\0" * 600, rsa_key, "magic")
    ecc = (iec / "esp_encrypted_img" / "image_ecc.bin").read_bytes()
    _fails(ecc, ec.generate_private_key(ec.SECP256R1()), "authentication tag")


def test_keys_of_the_wrong_kind_are_refused(iec):
    with pytest.raises(InputError, match="P-256"):
        EncryptedImageDecrypter(ec.generate_private_key(ec.SECP384R1()))
    sb_key = load_public_key((iec.parent / "esptool" / "secure_images" / "ecdsa192_secure_boot_signing_pubkey.pem").read_bytes())
    with pytest.raises(InputError, match="P-256"):
        encrypt_image(b"x", sb_key)


@pytest.mark.parametrize("scheme", ["rsa", "ecc"])
def test_encrypt_round_trip_and_format(rsa_key, ecc_key, scheme):
    key = rsa_key if scheme == "rsa" else ecc_key
    plain = os.urandom(12345)
    image = encrypt_image(plain, key.public_key())
    header = PreEncBinHeader.parse(image[:HEADER_SIZE])
    assert len(image) == HEADER_SIZE + len(plain) and header.bin_size == len(plain)
    if scheme == "ecc":
        assert header.enc_gcm[96:] == bytes(288)  # ephemeral key, salt, then zeros
    assert decrypt_image(image, key, 999) == plain
    assert decrypt_image(encrypt_image(b"", key.public_key()), key) == b""


def test_cli_encrypt_decrypt(iec, tmp_path):
    src = iec / "esp_delta_ota" / "hello_world_esp32.bin"
    keydir = iec / "esp_encrypted_img"
    runner = CliRunner()
    enc, dec = tmp_path / "enc.bin", tmp_path / "dec.bin"
    res = runner.invoke(cli, ["encrypt", "--key", str(keydir / "certs_test_rsa_private_key.pem"), "-o", str(enc), str(src)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["decrypt", "--key", str(keydir / "certs_test_rsa_private_key.pem"), "-o", str(dec), str(enc)])
    assert res.exit_code == 0, res.output
    assert dec.read_bytes() == src.read_bytes()
    res = runner.invoke(cli, ["decrypt", "--key", str(keydir / "rsa_key_private.pem"), "-o", str(dec), str(enc)])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == ["error: ESP_FAIL: unable to decipher the GCM key: "
                                               "the image was not encrypted for this RSA key"]
