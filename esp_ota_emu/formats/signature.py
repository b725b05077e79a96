"""Secure Boot signature formats appended to an ``esp_image``.

* Secure Boot V2: a 4 KiB signature sector right after the image (padded to 4 KiB) holding up to three
  1216-byte ``ets_secure_boot_sig_block_t`` blocks (RSA-3072-PSS or ECDSA P-192/P-256/P-384), the
  rest of the sector 0xFF.
* Secure Boot V1 / "signed apps" ECDSA scheme (ESP32 only): a 68-byte ``esp_secure_boot_sig_block_t``
  (version word + raw big-endian ``r‖s``) appended directly after the image.

All multi-byte numbers inside a V2 block are little-endian (the layout the ROM's RSA/ECDSA engines
read); the V1 signature is big-endian.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from construct import Bytes, Const, Int8ul, Int32ul, Padding, Struct, Switch

SIG_BLOCK_MAGIC = 0xE7
SIG_BLOCK_VERSION_RSA = 0x02
SIG_BLOCK_VERSION_ECDSA = 0x03
ECDSA_SHA_256 = 0
ECDSA_SHA_384 = 1
SIG_BLOCK_SIZE = 1216
SIG_BLOCK_CRC_LEN = 1196  # the CRC covers everything before the block_crc field
SIG_SECTOR_SIZE = 4096
SIG_BLOCKS_MAX = 3  # SECURE_BOOT_NUM_BLOCKS

# ESP-IDF's esp_secure_boot_get_scheme_name() names, keyed by the block version byte.
SCHEME_NAMES = {SIG_BLOCK_VERSION_RSA: "RSA", SIG_BLOCK_VERSION_ECDSA: "ECDSA"}

CURVE_P192 = 1
CURVE_P256 = 2
CURVE_P384 = 3
CURVE_NAMES = {CURVE_P192: "P-192", CURVE_P256: "P-256", CURVE_P384: "P-384"}
# Bytes of one coordinate (and of r, s) per curve id.
CURVE_COORD_LEN = {CURVE_P192: 24, CURVE_P256: 32, CURVE_P384: 48}

# The public-key part of a block; SHA-256 of its bytes is the key digest burned into eFuse.
RsaPublicKey = Struct(
    "n" / Bytes(384),  # modulus, little-endian
    "e" / Int32ul,
    "rinv" / Bytes(384),  # R^2 mod n, R = 2^3072, little-endian
    "mdash" / Int32ul,  # -n^-1 mod 2^32
)
EcdsaPublicKey256 = Struct("curve_id" / Int8ul, "point" / Bytes(64))  # P-192 and P-256 (X‖Y, little-endian)
EcdsaPublicKey384 = Struct("curve_id" / Int8ul, "point" / Bytes(96))

_RsaBody = Struct("image_digest" / Bytes(32), "key" / RsaPublicKey, "signature" / Bytes(384))
_EcdsaBody256 = Struct(
    "image_digest" / Bytes(32), "key" / EcdsaPublicKey256, "signature" / Bytes(64), Padding(1031)
)
_EcdsaBody384 = Struct(
    "image_digest" / Bytes(48), "key" / EcdsaPublicKey384, "signature" / Bytes(96), Padding(951)
)

# ets_secure_boot_sig_block_t. The body layout depends on (version, sha_type); anything else is
# kept as raw bytes so that blank (0xFF) and damaged blocks still parse.
SignatureBlockV2 = Struct(
    "magic_byte" / Int8ul,
    "version" / Int8ul,
    "sha_type" / Int8ul,  # reserved (0) for RSA
    "reserved" / Int8ul,
    "body"
    / Switch(
        # ESP-IDF ignores the reserved bytes of RSA blocks; byte 2 only selects the ECDSA hash.
        lambda ctx: (ctx.version, ctx.sha_type if ctx.version == SIG_BLOCK_VERSION_ECDSA else 0),
        {
            (SIG_BLOCK_VERSION_RSA, 0): _RsaBody,
            (SIG_BLOCK_VERSION_ECDSA, ECDSA_SHA_256): _EcdsaBody256,
            (SIG_BLOCK_VERSION_ECDSA, ECDSA_SHA_384): _EcdsaBody384,
        },
        default=Bytes(1192),
    ),
    "block_crc" / Int32ul,
    Padding(16),
)
assert _RsaBody.sizeof() == _EcdsaBody256.sizeof() == _EcdsaBody384.sizeof() == 1192

# esp_secure_boot_sig_block_t (Secure Boot V1 and the ECDSA "signed apps" scheme).
SIG_BLOCK_V1_SIZE = 68
SignatureBlockV1 = Struct("version" / Const(0, Int32ul), "signature" / Bytes(64))


def block_crc(raw: bytes) -> int:
    """``esp_rom_crc32_le(0, block, 1196)``: plain CRC-32 (init 0) over the data part of a block."""
    return zlib.crc32(raw[:SIG_BLOCK_CRC_LEN]) & 0xFFFFFFFF


@dataclass(frozen=True)
class SignatureBlock:
    """One parsed Secure Boot V2 signature block, with the facts ESP-IDF's checks look at."""

    index: int
    raw: bytes
    magic_byte: int
    version: int
    sha_type: int
    block_crc: int
    body: object  # the construct container of the body (None when the layout is unknown)

    @property
    def crc_ok(self) -> bool:
        return self.block_crc == block_crc(self.raw)

    @property
    def valid(self) -> bool:
        """ESP-IDF's ``validate_signature_block``: right magic byte and CRC."""
        return self.magic_byte == SIG_BLOCK_MAGIC and self.crc_ok

    @property
    def blank(self) -> bool:
        """An unused slot of the sector (espsecure fills it with 0xFF)."""
        return self.raw == b"\xff" * SIG_BLOCK_SIZE

    @property
    def scheme(self) -> str | None:
        return SCHEME_NAMES.get(self.version)

    @property
    def curve_id(self) -> int | None:
        if self.version != SIG_BLOCK_VERSION_ECDSA or self.body is None:
            return None
        return self.body.key.curve_id

    @property
    def curve(self) -> str | None:
        return CURVE_NAMES.get(self.curve_id)

    @property
    def hash_type(self) -> int:
        """ECDSA_SHA_384 for P-384 blocks, ECDSA_SHA_256 for every other block."""
        if self.version == SIG_BLOCK_VERSION_ECDSA and self.sha_type == ECDSA_SHA_384:
            return ECDSA_SHA_384
        return ECDSA_SHA_256

    @property
    def hash_name(self) -> str | None:
        if self.body is None:
            return None
        return "sha384" if self.hash_type == ECDSA_SHA_384 else "sha256"

    @property
    def image_digest(self) -> bytes | None:
        return None if self.body is None else self.body.image_digest

    @property
    def key_bytes(self) -> bytes | None:
        """The public-key bytes as stored in the block (what the eFuse key digest is computed over)."""
        if self.body is None:
            return None
        if self.version == SIG_BLOCK_VERSION_RSA:
            return RsaPublicKey.build(self.body.key)
        if self.hash_type == ECDSA_SHA_384:
            return EcdsaPublicKey384.build(self.body.key)
        return EcdsaPublicKey256.build(self.body.key)

    @property
    def key_digest(self) -> bytes | None:
        """SHA-256 of the block's public key, as ``espefuse burn-key-digest`` burns it."""
        key = self.key_bytes
        return None if key is None else hashlib.sha256(key).digest()

    def to_dict(self) -> dict:
        """A JSON-friendly description (used by ``image-info`` and ``verify --json``)."""
        digest = self.key_digest
        return {
            "index": self.index,
            "magic_ok": self.magic_byte == SIG_BLOCK_MAGIC,
            "crc_ok": self.crc_ok,
            "valid": self.valid,
            "version": self.version,
            "scheme": self.scheme,
            "curve": self.curve,
            "hash": self.hash_name,
            "image_digest": None if self.image_digest is None else self.image_digest.hex(),
            "key_digest": None if digest is None else digest.hex(),
        }


def parse_signature_block(raw: bytes, index: int = 0) -> SignatureBlock:
    """Parse one 1216-byte block (any content: blank and corrupt blocks parse too)."""
    raw = bytes(raw)
    if len(raw) != SIG_BLOCK_SIZE:
        raise ValueError(f"a signature block is {SIG_BLOCK_SIZE} bytes, got {len(raw)}")
    parsed = SignatureBlockV2.parse(raw)
    body = None if isinstance(parsed.body, bytes) else parsed.body
    return SignatureBlock(
        index=index,
        raw=raw,
        magic_byte=parsed.magic_byte,
        version=parsed.version,
        sha_type=parsed.sha_type,
        block_crc=parsed.block_crc,
        body=body,
    )


def signature_blocks(sector: bytes | memoryview) -> list[SignatureBlock]:
    """The (up to three) block slots at the start of a signature sector, blank slots included."""
    count = min(SIG_BLOCKS_MAX, len(sector) // SIG_BLOCK_SIZE)
    return [
        parse_signature_block(sector[i * SIG_BLOCK_SIZE : (i + 1) * SIG_BLOCK_SIZE], i) for i in range(count)
    ]


def parse_signature_sector(buf: bytes | memoryview) -> list[dict]:
    """Describe the signature blocks of a Secure Boot V2 signature sector (``buf`` starts at the sector).

    Blank (all-0xFF) slots are left out; every other slot is described, valid or not.
    """
    return [block.to_dict() for block in signature_blocks(buf) if not block.blank]
