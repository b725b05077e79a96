"""Security commands: Secure Boot signing and verification, pre-encrypted images, flash encryption, eFuses.

``sign`` / ``verify`` / ``digest`` write and read exactly what ``espsecure sign-data``,
``verify-signature`` and ``digest-sbv2-public-key`` do; ``encrypt`` / ``decrypt`` make and open
``esp_encrypted_img`` images; ``encrypt-flash-data`` / ``decrypt-flash-data`` match espsecure's
commands of the same name; ``efuse`` writes and reads QEMU eFuse files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..efuse import SUPPORTED_CHIPS, Efuses
from ..errors import EspError, InputError
from ..formats.signature import SIG_BLOCK_V1_SIZE, SIG_SECTOR_SIZE, signature_blocks
from ..image import parse_image
from ..security import encrypted_img, flash_encryption, sbv1, sbv2
from ..security.keys import load_private_key, load_public_key
from .main import cli


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None


def _int(value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number") from None


def _image_len(data: bytes) -> int | None:
    """ESP-IDF's image length when ``data`` is an ESP image, else None (then the file layout is used)."""
    try:
        return parse_image(data, layout="esp32").image_len
    except InputError:
        return None


def _emit(as_json: bool, obj: dict, text: str) -> None:
    click.echo(json.dumps(obj) if as_json else text)


@cli.command("sign")
@click.option("--version", "version", type=click.Choice(["1", "2"]), required=True, help="Secure Boot version.")
@click.option("--keyfile", "keyfiles", multiple=True, help="PEM private key (V2: up to 3).")
@click.option("--pub-key", "pub_keys", multiple=True, help="Public key of a pre-calculated --signature.")
@click.option("--signature", "signatures", multiple=True,
              help="Pre-calculated signature (V1: raw r||s; V2: RSA-PSS raw or ECDSA DER), one per --pub-key.")
@click.option("--append-signatures", "-a", is_flag=True, help="V2: keep the valid blocks already in the image.")
@click.option("--output", "-o", required=True, help="Signed image to write.")
@click.argument("datafile")
def sign_cmd(version, keyfiles, pub_keys, signatures, append_signatures, output, datafile):
    """Sign DATAFILE like ``espsecure sign-data`` (with private keys, or public keys plus signatures)."""
    data = _read(datafile)
    keys = [load_private_key(_read(k)) for k in keyfiles]
    if len(pub_keys) != len(signatures):
        raise InputError(f"{len(pub_keys)} --pub-key but {len(signatures)} --signature: give one key per signature")
    precalc = [(load_public_key(_read(k)), _read(s)) for k, s in zip(pub_keys, signatures)]
    if version == "1":
        if len(keys) + len(precalc) != 1:
            raise InputError("Secure Boot V1 signs with exactly one key")
        if append_signatures:
            raise InputError("--append-signatures is for Secure Boot V2")
        signed = sbv1.sign_image(data, keys[0]) if keys else sbv1.attach_signature(data, *precalc[0])
        what = "a 68-byte ECDSA signature block"
    else:
        signed = sbv2.sign_image(data, keys, append_signatures=append_signatures, signatures=precalc)
        blocks = [b for b in signature_blocks(memoryview(signed)[-SIG_SECTOR_SIZE:]) if b.valid]
        what = f"a signature sector with {len(blocks)} block(s)"
    _write(output, signed)
    click.echo(f"signed {len(data)} bytes of {datafile}: {output} ends with {what}")


def _verify_v1(data: bytes, key_pem: bytes) -> dict:
    key = sbv1.raw_public_key(key_pem) if len(key_pem) == 64 else load_public_key(key_pem)
    image_len = _image_len(data)
    if image_len is not None and len(data) >= image_len + SIG_BLOCK_V1_SIZE:
        sbv1.verify_image_signature(data, image_len, key)
        offset = image_len
    else:
        sbv1.verify_signed_file(data, key)
        offset = len(data) - SIG_BLOCK_V1_SIZE
    return {"ok": True, "version": 1, "sig_offset": offset, "reason": "ECDSA signature verified"}


def _verify_v2(data: bytes, key_pem: bytes) -> dict:
    key = load_public_key(key_pem)
    image_len = _image_len(data)
    if image_len is not None and len(data) < sbv2.align_up(image_len) + SIG_SECTOR_SIZE:
        image_len = None  # not followed by a whole sector: read the file as espsecure does
    check = sbv2.verify_signed_file(data, key, image_len)
    return {"version": 2, **check.to_dict()}


@cli.command("verify")
@click.option("--version", "version", type=click.Choice(["1", "2"]), required=True, help="Secure Boot version.")
@click.option("--keyfile", required=True, help="PEM public or private key (V1 also: raw 64-byte key).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.argument("datafile")
def verify_cmd(version, keyfile, as_json, datafile):
    """Verify DATAFILE's signature like ``espsecure verify-signature`` (exit 1 if it does not verify).

    An ESP image is checked where ESP-IDF looks (the signature after ``image_len``); other data the way
    espsecure does (the last 68 bytes / the last 4 KiB)."""
    data, key_pem = _read(datafile), _read(keyfile)
    try:
        result = _verify_v1(data, key_pem) if version == "1" else _verify_v2(data, key_pem)
    except EspError as err:
        result = {"ok": False, "version": int(version), "reason": err.message}
    if not result["ok"]:
        if as_json:
            click.echo(json.dumps(result))
        raise EspError("ESP_ERR_IMAGE_INVALID", result["reason"])
    _emit(as_json, result, f"signature valid: {result['reason']}")


@cli.command("digest")
@click.option("--keyfile", required=True, help="PEM public or private key (RSA-3072 or ECDSA P-192/256/384).")
@click.option("--output", "-o", default=None, help="Also write the 32 raw bytes here (as espsecure does).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def digest_cmd(keyfile, output, as_json):
    """The Secure Boot V2 public-key digest burned into eFuse (``espsecure digest-sbv2-public-key``)."""
    digest = sbv2.key_digest(load_public_key(_read(keyfile)))
    if output:
        _write(output, digest)
    _emit(as_json, {"key_digest": digest.hex()}, digest.hex())


@cli.command("digest-secure-bootloader")
@click.option("--keyfile", required=True, help="Raw 32-byte Secure Boot V1 key (the BLOCK2 key file).")
@click.option("--iv", "iv_file", default=None, help="128-byte IV (default: random, as on a device).")
@click.option("--output", "-o", required=True, help="IV + digest sector and bootloader, to flash at 0x0.")
@click.argument("image")
def digest_bootloader_cmd(keyfile, iv_file, output, image):
    """Secure Boot V1: the IV/digest sector plus bootloader (``espsecure digest-secure-bootloader``)."""
    iv = _read(iv_file) if iv_file else os.urandom(128)
    _write(output, sbv1.digest_secure_bootloader(_read(image), _read(keyfile), iv))
    click.echo(f"digest and bootloader written to {output} (flash it at 0x0)")


@cli.command("encrypt")
@click.option("--key", "keyfile", required=True, help="The device's RSA-3072 or P-256 public (or private) key.")
@click.option("--output", "-o", required=True, help="Pre-encrypted image to write.")
@click.argument("infile")
def encrypt_cmd(keyfile, output, infile):
    """Make an esp_encrypted_img pre-encrypted image of INFILE (RSA-3072 or ECIES P-256 scheme)."""
    data = _read(infile)
    key = load_public_key(_read(keyfile))
    _write(output, encrypted_img.encrypt_image(data, key))
    click.echo(f"encrypted {len(data)} bytes of {infile} into {output}")


@cli.command("decrypt")
@click.option("--key", "keyfile", required=True, help="The device's RSA-3072 or P-256 private key.")
@click.option("--output", "-o", required=True, help="Plaintext to write.")
@click.argument("infile")
def decrypt_cmd(keyfile, output, infile):
    """Decrypt an esp_encrypted_img image the way the device does (streaming, tag checked at the end)."""
    plain = encrypted_img.decrypt_image(_read(infile), load_private_key(_read(keyfile)))
    _write(output, plain)
    click.echo(f"decrypted {len(plain)} bytes into {output}")


def _flash_crypto_command(name: str, operation, verb: str):
    @cli.command(name)
    @click.option("--keyfile", required=True, help="Raw flash encryption key (ESP32: 32 bytes; XTS: 16/32/64).")
    @click.option("--address", required=True, help="Flash address of the data (multiple of 16).")
    @click.option("--aes-xts", "-x", is_flag=True, help="XTS-AES (every chip but the ESP32).")
    @click.option("--flash-crypt-conf", default="0xF", help="ESP32 FLASH_CRYPT_CONFIG eFuse (default 0xF).")
    @click.option("--output", "-o", required=True, help="File to write.")
    @click.argument("infile")
    def command(keyfile, address, aes_xts, flash_crypt_conf, output, infile):
        data = _read(infile)
        out = operation(
            data, _int(address), _read(keyfile), aes_xts=aes_xts, flash_crypt_config=_int(flash_crypt_conf)
        )
        _write(output, out)
        click.echo(f"{verb} {len(data)} bytes for flash address {_int(address):#x} into {output}")

    command.__doc__ = f"{verb.capitalize()} flash data like ``espsecure {name}``."
    return command


_flash_crypto_command("encrypt-flash-data", flash_encryption.encrypt_flash_data, "encrypted")
_flash_crypto_command("decrypt-flash-data", flash_encryption.decrypt_flash_data, "decrypted")


@cli.command("efuse")
@click.option("--chip", type=click.Choice(SUPPORTED_CHIPS), required=True, help="Chip of the eFuse file.")
@click.option("--file", "efuse_file", default=None, help="QEMU eFuse file to read (default: a fresh chip).")
@click.option("--chip-rev", default=None, help="Fresh chip only: revision as major*100+minor (e.g. 300).")
@click.option("--burn-efuse", "burn_fields", multiple=True, metavar="NAME=VALUE",
              help="Burn a field by its espefuse name (e.g. DISABLE_WAFER_VERSION_MAJOR=1); repeatable.")
@click.option("--burn-secure-version", type=int, default=None, help="Raise the anti-rollback version to N.")
@click.option("--burn-key-digest", "digest_keys", multiple=True, help="Burn the SBv2 digest of this PEM key.")
@click.option("--revoke-key-digest", "revoke", type=int, multiple=True, help="Revoke Secure Boot key N.")
@click.option("--burn-flash-encryption-key", "fe_key", default=None, help="Burn this raw flash encryption key.")
@click.option("--enable-secure-boot", is_flag=True, help="Enable Secure Boot V2.")
@click.option("--enable-flash-encryption", is_flag=True, help="Burn one more CRYPT_CNT bit (development mode).")
@click.option("--output", "-o", default=None, help="QEMU eFuse file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the eFuses as one JSON object.")
def efuse_cmd(chip, efuse_file, chip_rev, burn_fields, burn_secure_version, digest_keys, revoke, fe_key,
              enable_secure_boot, enable_flash_encryption, output, as_json):
    """Create, inspect and burn a QEMU eFuse file (124 bytes for the ESP32, 1024 for the C3/S3)."""
    if efuse_file:
        if chip_rev is not None:
            raise InputError("--chip-rev is for a fresh chip; an eFuse file already holds its revision")
        efuses = Efuses.from_qemu_file(chip, _read(efuse_file))
    else:
        efuses = Efuses.default(chip, None if chip_rev is None else _int(chip_rev))
    for field in burn_fields:
        name, sep, value = field.partition("=")
        if not sep:
            raise InputError(f"--burn-efuse takes NAME=VALUE, not {field!r}")
        efuses.burn(name.strip().upper(), _int(value))
    if burn_secure_version is not None:
        efuses.burn_secure_version(burn_secure_version)
    for key in digest_keys:
        efuses.burn_secure_boot_key_digest(sbv2.key_digest(load_public_key(_read(key))))
    for index in revoke:
        efuses.revoke_secure_boot_key(index)
    if fe_key:
        efuses.burn_flash_encryption_key(_read(fe_key))
    if enable_secure_boot:
        efuses.enable_secure_boot_v2()
    if enable_flash_encryption:
        efuses.enable_flash_encryption()
    if output:
        _write(output, efuses.to_qemu_file())
    summary = efuses.summary()
    text = "\n".join(f"{name}: {value}" for name, value in summary.items())
    _emit(as_json, {"chip": chip, **summary}, text)
