"""Flash encryption as the SPI flash controller applies it, byte-compatible with
``espsecure encrypt-flash-data`` / ``decrypt-flash-data``.

* ESP32: AES-256 whose key is XOR-"tweaked" per 32-byte unit of flash address (the bits the
  ``FLASH_CRYPT_CONFIG`` eFuse selects); flash *encryption* runs the AES *decrypt* primitive.
* ESP32-S2/S3/C2/C3/C6/H2/P4...: XTS-AES-128 (32-byte key) or XTS-AES-256 (64-byte key) over
  128-byte data units, tweak = the unit's flash address.

Both engines see each block byte-reversed (16 bytes on ESP32, the 128-byte unit for XTS).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import InputError

ESP32_UNIT = 32  # bytes sharing one tweaked key
XTS_UNIT = 128  # XTS data unit

# The ESP32 key tweak, as 256-bit integers in espsecure's bit order. For the 32-byte unit number
# u = address >> 5 the key is XORed with ((_MUL1 * u) | ((_MUL2 * u) & _MUL2_MASK)) & tweak_range.
_MUL1 = 0x0000200004000080000004000080001000000200004000080000040000800010
_MUL2 = 0x0000000000000000200000000000000010000000000000002000000000000001
_MUL2_MASK = 0x000000000000007FE00000000000000FF000000000000007E00000000000000F
# Key bits each FLASH_CRYPT_CONFIG bit lets the tweak touch.
_TWEAK_RANGE_BITS = (
    0xFFFFFFFFFFFFFFFFE00000000000000000000000000000000000000000000000,
    0x00000000000000001FFFFFFFFFFFFFFFF0000000000000000000000000000000,
    0x000000000000000000000000000000000FFFFFFFFFFFFFFFE000000000000000,
    0x0000000000000000000000000000000000000000000000001FFFFFFFFFFFFFFF,
)


def load_flash_encryption_key(raw: bytes, *, aes_xts: bool) -> bytes:
    """A key file as espsecure reads it: ESP32 takes 256-bit keys (or 192-bit, extended as the 3/4
    coding scheme does); XTS takes 256- or 512-bit keys, or 128-bit ones extended with SHA-256."""
    raw = bytes(raw)
    if aes_xts:
        if len(raw) == 16:
            return hashlib.sha256(raw).digest()
        if len(raw) in (32, 64):
            return raw
        raise InputError(f"XTS-AES flash encryption keys are 16, 32 or 64 bytes, got {len(raw)}")
    if len(raw) == 24:
        return raw + raw[8:16]
    if len(raw) == 32:
        return raw
    raise InputError(f"ESP32 flash encryption keys are 24 or 32 bytes, got {len(raw)}")


def tweak_range(flash_crypt_config: int) -> int:
    """The key bits the address tweak applies to for a ``FLASH_CRYPT_CONFIG`` value (0..15)."""
    if not 0 <= flash_crypt_config <= 0xF:
        raise InputError(f"FLASH_CRYPT_CONFIG is a 4-bit value, got {flash_crypt_config:#x}")
    bits = 0
    for i, mask in enumerate(_TWEAK_RANGE_BITS):
        if flash_crypt_config >> i & 1:
            bits |= mask
    return bits


def _tweak(key: int, address: int, key_bits: int) -> bytes:
    unit = address >> 5
    return (key ^ (((_MUL1 * unit) | ((_MUL2 * unit) & _MUL2_MASK)) & key_bits)).to_bytes(32, "big")


def esp32_tweaked_key(key: bytes, address: int, flash_crypt_config: int = 0xF) -> bytes:
    """The AES-256 key the ESP32 uses for the 32-byte unit holding flash ``address``."""
    return _tweak(int.from_bytes(key, "big"), address, tweak_range(flash_crypt_config))


def _run_units(data: bytes | memoryview, address: int, unit: int, transform) -> bytes:
    """Apply ``transform(unit_address, reversed_unit) -> reversed_result`` to every ``unit``-sized,
    ``unit``-aligned piece covering ``data`` at ``address`` (partial units are zero-padded, then cut)."""
    if address < 0 or address % 16:
        raise InputError(f"flash address {address:#x} must be a non-negative multiple of 16")
    if len(data) % 16:
        raise InputError(
            f"encrypted flash data is written in 16-byte blocks; {len(data)} bytes is not a multiple of 16"
        )
    lead = address % unit
    tail = -(lead + len(data)) % unit
    buf = bytes(lead) + bytes(data) + bytes(tail) if lead or tail else bytes(data)
    base = address - lead
    out = bytearray(len(buf))
    for off in range(0, len(buf), unit):
        out[off : off + unit] = transform(base + off, buf[off : off + unit][::-1])[::-1]
    return bytes(out[lead : lead + len(data)]) if lead or tail else bytes(out)


def _esp32(data, address: int, key: bytes, flash_crypt_config: int, decrypt: bool) -> bytes:
    key = load_flash_encryption_key(key, aes_xts=False)
    base_key = int.from_bytes(key, "big")
    key_bits = tweak_range(flash_crypt_config)

    def transform(unit_addr: int, block: bytes) -> bytes:
        cipher = Cipher(algorithms.AES(_tweak(base_key, unit_addr, key_bits)), modes.ECB())
        # The hardware encrypts with AES decryption and decrypts with AES encryption.
        ctx = cipher.encryptor() if decrypt else cipher.decryptor()
        return ctx.update(block)

    # Reversing a whole 32-byte unit reverses each 16-byte block and swaps the two; ECB treats the
    # blocks independently, so reversing the result back restores the order.
    return _run_units(data, address, ESP32_UNIT, transform)


def _xts(data, address: int, key: bytes, decrypt: bool) -> bytes:
    key = load_flash_encryption_key(key, aes_xts=True)
    if len(data) == 0:
        return b""

    def transform(unit_addr: int, block: bytes) -> bytes:
        tweak = unit_addr.to_bytes(4, "little") + bytes(12)
        cipher = Cipher(algorithms.AES(key), modes.XTS(tweak))
        ctx = cipher.decryptor() if decrypt else cipher.encryptor()
        return ctx.update(block)

    return _run_units(data, address, XTS_UNIT, transform)


def esp32_encrypt(data: bytes | memoryview, address: int, key: bytes, flash_crypt_config: int = 0xF) -> bytes:
    """What an ESP32 with flash encryption stores for plaintext ``data`` written at ``address``."""
    return _esp32(data, address, key, flash_crypt_config, decrypt=False)


def esp32_decrypt(data: bytes | memoryview, address: int, key: bytes, flash_crypt_config: int = 0xF) -> bytes:
    """What an ESP32 with flash encryption reads (through the cache) from ciphertext at ``address``."""
    return _esp32(data, address, key, flash_crypt_config, decrypt=True)


def xts_encrypt(data: bytes | memoryview, address: int, key: bytes) -> bytes:
    """XTS-AES flash encryption of ``data`` at ``address`` (S2/S3/C3/C6/... chips)."""
    return _xts(data, address, key, decrypt=False)


def xts_decrypt(data: bytes | memoryview, address: int, key: bytes) -> bytes:
    """XTS-AES flash decryption of ``data`` read from ``address``."""
    return _xts(data, address, key, decrypt=True)


def encrypt_flash_data(
    data: bytes | memoryview, address: int, key: bytes, *, aes_xts: bool, flash_crypt_config: int = 0xF
) -> bytes:
    """``espsecure encrypt-flash-data [--aes-xts]`` on 16-byte-multiple data."""
    return xts_encrypt(data, address, key) if aes_xts else esp32_encrypt(data, address, key, flash_crypt_config)


def decrypt_flash_data(
    data: bytes | memoryview, address: int, key: bytes, *, aes_xts: bool, flash_crypt_config: int = 0xF
) -> bytes:
    """``espsecure decrypt-flash-data [--aes-xts]``."""
    return xts_decrypt(data, address, key) if aes_xts else esp32_decrypt(data, address, key, flash_crypt_config)


@dataclass(frozen=True)
class FlashEncryption:
    """The flash controller's encryption as a chip's eFuses configure it."""

    key: bytes
    aes_xts: bool
    flash_crypt_config: int = 0xF

    @classmethod
    def from_efuses(cls, efuses) -> FlashEncryption | None:
        """The key and mode burned in ``efuses`` (an :class:`esp_ota_emu.efuse.Efuses`); None without a key."""
        key = efuses.flash_encryption_key
        if key is None:
            return None
        if efuses.chip == "esp32":
            return cls(key, aes_xts=False, flash_crypt_config=efuses.flash_crypt_config)
        return cls(key, aes_xts=True)

    def encrypt(self, data: bytes | memoryview, address: int) -> bytes:
        """What ``esp_flash_write_encrypted(address, data)`` stores."""
        return encrypt_flash_data(
            data, address, self.key, aes_xts=self.aes_xts, flash_crypt_config=self.flash_crypt_config
        )

    def decrypt(self, data: bytes | memoryview, address: int) -> bytes:
        """What a cache (mmap) read of ciphertext ``data`` at ``address`` returns."""
        return decrypt_flash_data(
            data, address, self.key, aes_xts=self.aes_xts, flash_crypt_config=self.flash_crypt_config
        )
