"""Secure Boot V1 / ``CONFIG_SECURE_SIGNED_APPS_ECDSA_SCHEME`` app signatures (ESP32 only).

The image is followed directly (no alignment) by a 68-byte block: a zero version word and the raw
ECDSA P-256 signature ``r‖s`` (big-endian) over SHA-256 of the image bytes. espsecure signs
deterministically (RFC 6979), so ``sign_image`` gives espsecure's bytes exactly.
"""

from __future__ import annotations

import array
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from construct import ConstError

from ..errors import EspError, InputError
from ..formats.signature import SIG_BLOCK_V1_SIZE, SignatureBlockV1
from ..image import parse_image
from .keys import PrivateKey, PublicKey, describe_key

_SIGN = ec.ECDSA(utils.Prehashed(hashes.SHA256()), deterministic_signing=True)
_VERIFY = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


def _check_key(key: PrivateKey | PublicKey) -> None:
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise InputError(f"Secure Boot V1 signatures use ECDSA P-256 keys, this key is {describe_key(key)}")


def raw_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """A 64-byte raw P-256 public key ``X‖Y`` (big-endian), as espsecure accepts for V1 verification."""
    if len(data) != 64:
        raise InputError(f"a raw P-256 public key is 64 bytes, got {len(data)}")
    x, y = int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError as err:
        raise InputError(f"not a P-256 public key ({err})") from None


def signature_block(data: bytes | memoryview, private_key: PrivateKey) -> bytes:
    """The 68-byte block signing ``data``."""
    _check_key(private_key)
    r, s = utils.decode_dss_signature(private_key.sign(hashlib.sha256(data).digest(), _SIGN))
    return SignatureBlockV1.build({"signature": r.to_bytes(32, "big") + s.to_bytes(32, "big")})


def sign_image(data: bytes, private_key: PrivateKey) -> bytes:
    """``espsecure sign-data --version 1``: ``data`` with its 68-byte signature block appended."""
    return bytes(data) + signature_block(data, private_key)


def attach_signature(data: bytes, public_key: PublicKey, signature: bytes) -> bytes:
    """``espsecure sign-data --version 1 --pub-key --signature``: append a pre-calculated raw ``r‖s``
    signature (64 bytes, big-endian), after checking it signs ``data``."""
    if len(signature) != 64:
        raise InputError(f"a raw P-256 signature r‖s is 64 bytes, got {len(signature)}")
    block = SignatureBlockV1.build({"signature": bytes(signature)})
    try:
        verify_signature_block(data, block, public_key)
    except EspError:
        raise InputError("the pre-calculated signature was not made over this data with this key") from None
    return bytes(data) + block


def verify_signature_block(data: bytes | memoryview, block: bytes | memoryview, public_key: PublicKey) -> None:
    """``esp_secure_boot_verify_ecdsa_signature_block``: raise ``ESP_ERR_IMAGE_INVALID`` unless ``block``
    is a version-0 block whose signature over SHA-256(``data``) verifies with ``public_key``."""
    _check_key(public_key)
    if len(block) < SIG_BLOCK_V1_SIZE:
        raise EspError("ESP_ERR_IMAGE_INVALID", "the 68-byte signature block is missing (data ends)")
    try:
        parsed = SignatureBlockV1.parse(bytes(block[:SIG_BLOCK_V1_SIZE]))
    except ConstError:
        raise EspError("ESP_ERR_IMAGE_INVALID", "signature block version is not 0") from None
    r = int.from_bytes(parsed.signature[:32], "big")
    s = int.from_bytes(parsed.signature[32:], "big")
    try:
        public_key.verify(utils.encode_dss_signature(r, s), hashlib.sha256(data).digest(), _VERIFY)
    except InvalidSignature:
        raise EspError("ESP_ERR_IMAGE_INVALID", "ECDSA signature verification failed") from None


def verify_image_signature(buf: bytes | memoryview, image_len: int, public_key: PublicKey) -> None:
    """The app/bootloader check of a V1-signed image: the block sits at ``image_len``."""
    view = memoryview(buf)
    verify_signature_block(view[:image_len], view[image_len : image_len + SIG_BLOCK_V1_SIZE], public_key)


def verify_signed_file(data: bytes | memoryview, public_key: PublicKey) -> None:
    """``espsecure verify-signature --version 1``: the last 68 bytes of ``data`` are the block."""
    if len(data) < SIG_BLOCK_V1_SIZE:
        raise InputError(f"a Secure Boot V1 signed file is longer than {SIG_BLOCK_V1_SIZE} bytes")
    verify_image_signature(data, len(data) - SIG_BLOCK_V1_SIZE, public_key)


IV_DIGEST_SECTOR = 0x1000  # esp_secure_boot_iv_digest_t, padded to a sector, at flash offset 0x0
IV_LEN, DIGEST_LEN = 128, 64  # its fields


def _as_rom_reads(image: bytes | memoryview) -> bytes:
    """The bootloader as the ROM's digest engine reads it: whole 128-byte blocks, 0xFF-padded, without
    an appended SHA-256 that starts a block of its own."""
    data = bytes(image)
    if parse_image(data, layout="esp32").hash_appended and len(data) % 128 <= 32:
        data = data[: len(data) - len(data) % 128]
    return data + b"\xff" * (-len(data) % 128)


def bootloader_digest(image: bytes | memoryview, key: bytes, iv: bytes) -> bytes:
    """The Secure Boot V1 bootloader digest the ROM checks (``espsecure digest-secure-bootloader``).

    The ROM reads the bootloader in 128-byte blocks (0xFF past its end, and not the appended SHA-256
    when that starts a block), prefixes the 128-byte IV, runs it through AES-256-ECB with the BLOCK2
    key on byte-reversed 16-byte blocks, and hashes the result word-swapped with SHA-512. Returns the
    64 digest bytes as stored in flash (each 32-bit word reversed). The ROM's IV is 128 bytes;
    espsecure's test-only ``--iv`` takes whatever the file holds, so shorter IVs are accepted too.
    """
    if len(key) != 32:
        raise InputError(f"the Secure Boot V1 key is 32 bytes, got {len(key)}")
    if not 0 < len(iv) <= 128 or len(iv) % 16:
        raise InputError(f"the Secure Boot V1 IV is 128 bytes, got {len(iv)}")
    plain = bytes(iv) + _as_rom_reads(image)
    # Reversing the whole buffer reverses every 16-byte block (and their order, which ECB ignores).
    cipher = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor().update(plain[::-1])[::-1]
    words = array.array("I", cipher)
    words.byteswap()
    digest = array.array("I", hashlib.sha512(words.tobytes()).digest())
    digest.byteswap()
    return digest.tobytes()


def digest_secure_bootloader(image: bytes | memoryview, key: bytes, iv: bytes) -> bytes:
    """What ``espsecure digest-secure-bootloader`` writes for flashing at 0x0: IV, digest, 0xFF up to
    0x1000, then the bootloader as the ROM reads it (padded to 128 bytes)."""
    head = bytes(iv) + bootloader_digest(image, key, iv)
    return head + b"\xff" * (IV_DIGEST_SECTOR - len(head)) + _as_rom_reads(image)
