"""Secure Boot V2: signing (``espsecure sign-data --version 2``), key digests and ESP-IDF's verification.

Verification follows ``esp_secure_boot_verify_sbv2_signature_block`` / the ROM's
``ets_secure_boot_verify_signature``: the signed data is the image padded to a 4 KiB multiple, the
signature sector follows it; a block counts only if its magic byte and CRC are right (and, when a
scheme is configured, its version matches it), its key digest is trusted, and its signature verifies
over the digest of the signed data. Any one such block makes the image valid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from ..errors import EspError, InputError
from ..formats.signature import (
    CURVE_COORD_LEN,
    CURVE_P192,
    CURVE_P256,
    CURVE_P384,
    ECDSA_SHA_256,
    ECDSA_SHA_384,
    SIG_BLOCK_MAGIC,
    SIG_BLOCK_SIZE,
    SIG_BLOCK_VERSION_ECDSA,
    SIG_BLOCK_VERSION_RSA,
    SIG_BLOCKS_MAX,
    SIG_SECTOR_SIZE,
    EcdsaPublicKey256,
    EcdsaPublicKey384,
    RsaPublicKey,
    SignatureBlock,
    SignatureBlockV2,
    block_crc,
    signature_blocks,
)
from .keys import PrivateKey, PublicKey, describe_key, load_private_key

RSA_BITS = 3072
_RSA_BYTES = RSA_BITS // 8
_CURVES = {ec.SECP192R1: CURVE_P192, ec.SECP256R1: CURVE_P256, ec.SECP384R1: CURVE_P384}
_CURVE_CLASSES = {curve_id: cls for cls, curve_id in _CURVES.items()}
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
SCHEMES = {"RSA": SIG_BLOCK_VERSION_RSA, "ECDSA": SIG_BLOCK_VERSION_ECDSA}


def align_up(value: int, align: int = SIG_SECTOR_SIZE) -> int:
    return (value + align - 1) & ~(align - 1)


def _le(value: int, length: int) -> bytes:
    return value.to_bytes(length, "little")


def _check_key(key: PrivateKey | PublicKey) -> None:
    """Secure Boot V2 takes RSA-3072 or ECDSA P-192/P-256/P-384 keys only."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size != RSA_BITS:
            raise InputError(f"Secure Boot V2 uses RSA-3072 keys, this key is {describe_key(key)}")
    elif type(key.curve) not in _CURVES:
        raise InputError(f"Secure Boot V2 uses ECDSA P-192, P-256 or P-384 keys, this key is {describe_key(key)}")


def _key_fields(public_key: PublicKey) -> tuple[int, int, bytes]:
    """(block version, sha_type, public-key bytes exactly as stored in a signature block)."""
    _check_key(public_key)
    if isinstance(public_key, rsa.RSAPublicKey):
        nums = public_key.public_numbers()
        key = RsaPublicKey.build(
            {
                "n": _le(nums.n, _RSA_BYTES),
                "e": nums.e,
                "rinv": _le((1 << (2 * RSA_BITS)) % nums.n, _RSA_BYTES),
                "mdash": -pow(nums.n, -1, 1 << 32) & 0xFFFFFFFF,
            }
        )
        return SIG_BLOCK_VERSION_RSA, 0, key
    curve_id = _CURVES[type(public_key.curve)]
    nums = public_key.public_numbers()
    coord = CURVE_COORD_LEN[curve_id]
    point = _le(nums.x, coord) + _le(nums.y, coord)
    if curve_id == CURVE_P384:
        return SIG_BLOCK_VERSION_ECDSA, ECDSA_SHA_384, EcdsaPublicKey384.build({"curve_id": curve_id, "point": point})
    point = point.ljust(64, b"\0")  # P-192 coordinates are zero-padded into the 64-byte field
    return SIG_BLOCK_VERSION_ECDSA, ECDSA_SHA_256, EcdsaPublicKey256.build({"curve_id": curve_id, "point": point})


def key_digest(public_key: PublicKey) -> bytes:
    """The 32-byte digest ``espsecure digest-sbv2-public-key`` prints and eFuse holds for this key."""
    return hashlib.sha256(_key_fields(public_key)[2]).digest()


def _hash(sha_type: int, data) -> bytes:
    return (hashlib.sha384 if sha_type == ECDSA_SHA_384 else hashlib.sha256)(data).digest()


def _prehashed(sha_type: int) -> utils.Prehashed:
    return utils.Prehashed(hashes.SHA384() if sha_type == ECDSA_SHA_384 else hashes.SHA256())


def _block(public_key: PublicKey, digest: bytes, signature: bytes) -> bytes:
    """A 1216-byte block for ``signature`` (RSA: big-endian PSS signature; ECDSA: DER) over ``digest``."""
    version, sha_type, key_bytes = _key_fields(public_key)
    if version == SIG_BLOCK_VERSION_RSA:
        body = {"image_digest": digest, "key": RsaPublicKey.parse(key_bytes), "signature": signature[::-1]}
    else:
        r, s = utils.decode_dss_signature(signature)
        coord = CURVE_COORD_LEN[_CURVES[type(public_key.curve)]]
        key_struct = EcdsaPublicKey384 if sha_type == ECDSA_SHA_384 else EcdsaPublicKey256
        rs = _le(r, coord) + _le(s, coord)
        body = {
            "image_digest": digest,
            "key": key_struct.parse(key_bytes),
            "signature": rs if sha_type == ECDSA_SHA_384 else rs.ljust(64, b"\0"),
        }
    fields = {"magic_byte": SIG_BLOCK_MAGIC, "version": version, "sha_type": sha_type, "reserved": 0, "body": body}
    raw = SignatureBlockV2.build({**fields, "block_crc": 0})
    return SignatureBlockV2.build({**fields, "block_crc": block_crc(raw)})


def signature_block(signed: bytes | memoryview, private_key: PrivateKey) -> bytes:
    """One 1216-byte block signing ``signed`` (the 4 KiB-padded image) as espsecure writes it."""
    version, sha_type, _ = _key_fields(private_key.public_key())
    digest = _hash(sha_type, signed)
    if version == SIG_BLOCK_VERSION_RSA:
        signature = private_key.sign(digest, _PSS, _prehashed(sha_type))
    else:
        signature = private_key.sign(digest, ec.ECDSA(_prehashed(sha_type), deterministic_signing=True))
    return _block(private_key.public_key(), digest, signature)


def precalculated_signature_block(signed: bytes | memoryview, public_key: PublicKey, signature: bytes) -> bytes:
    """``espsecure sign-data --pub-key --signature``: a block from a signature made elsewhere (an HSM,
    openssl): RSA-PSS raw big-endian, or ECDSA DER, over the digest of ``signed``. Checked first."""
    version, sha_type, _ = _key_fields(public_key)
    digest = _hash(sha_type, signed)
    try:
        if version == SIG_BLOCK_VERSION_RSA:
            public_key.verify(signature, digest, _PSS, _prehashed(sha_type))
        else:
            public_key.verify(signature, digest, ec.ECDSA(_prehashed(sha_type)))
    except (InvalidSignature, ValueError):
        raise InputError(
            f"the pre-calculated signature was not made over this data with this {describe_key(public_key)} key"
        ) from None
    return _block(public_key, digest, signature)


def _espsecure_valid(block: SignatureBlock) -> bool:
    """espsecure's ``validate_signature_block``: magic, a known version and the CRC."""
    return block.valid and block.version in (SIG_BLOCK_VERSION_RSA, SIG_BLOCK_VERSION_ECDSA)


def sign_image(
    data: bytes,
    private_keys: list[PrivateKey | bytes] = (),
    *,
    append_signatures: bool = False,
    signatures: list[tuple[PublicKey, bytes]] = (),
) -> bytes:
    """``espsecure sign-data --version 2 [--append-signatures]``: the signed image, signature sector appended.

    Unaligned data is padded with 0xFF to 4 KiB first. With ``append_signatures`` and aligned data
    the valid blocks already in the last sector are kept and the new ones added after them.
    ``signatures`` are pre-calculated (public key, signature) pairs used instead of private keys.
    """
    keys = [load_private_key(k) if isinstance(k, (bytes, bytearray)) else k for k in private_keys]
    if bool(keys) == bool(signatures):
        raise InputError("sign with private keys or with pre-calculated signatures (one of the two)")
    for key in keys:
        _check_key(key)
    contents = bytes(data)
    kept = b""
    if len(contents) % SIG_SECTOR_SIZE:
        if signatures:
            raise InputError("pre-calculated signatures need data that is already a multiple of 4096 bytes")
        contents += b"\xff" * (SIG_SECTOR_SIZE - len(contents) % SIG_SECTOR_SIZE)
    elif append_signatures:
        existing = []
        for block in signature_blocks(memoryview(contents)[-SIG_SECTOR_SIZE:]):
            if not _espsecure_valid(block):
                break
            existing.append(block.raw)
        if len(existing) == SIG_BLOCKS_MAX:
            raise InputError(f"the image already holds {SIG_BLOCKS_MAX} signature blocks, the most a sector takes")
        if existing:
            kept = b"".join(existing)
            contents = contents[:-SIG_SECTOR_SIZE]
    free = SIG_BLOCKS_MAX - len(kept) // SIG_BLOCK_SIZE
    if len(keys) + len(signatures) > free:
        raise InputError(f"{len(keys) + len(signatures)} signatures but only {free} free signature block(s)")
    new = [signature_block(contents, key) for key in keys]
    new += [precalculated_signature_block(contents, pub, sig) for pub, sig in signatures]
    sector = kept + b"".join(new)
    return contents + sector + b"\xff" * (SIG_SECTOR_SIZE - len(sector))


@dataclass
class BlockVerdict:
    """What verification made of one block slot."""

    index: int
    status: str  # verified | blank | invalid | wrong-scheme | untrusted | digest-mismatch | bad-key | bad-signature
    reason: str
    key_digest: bytes | None = None

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "status": self.status,
            "reason": self.reason,
            "key_digest": None if self.key_digest is None else self.key_digest.hex(),
        }


@dataclass
class SignatureCheck:
    """Result of checking an image's Secure Boot V2 signature sector."""

    ok: bool
    sig_offset: int
    verified_block: int | None
    reason: str
    esp_err: str = "ESP_ERR_IMAGE_INVALID"
    blocks: list[BlockVerdict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "sig_offset": self.sig_offset,
            "verified_block": self.verified_block,
            "reason": self.reason,
            "blocks": [b.to_dict() for b in self.blocks],
        }

    def raise_for_failure(self) -> None:
        if not self.ok:
            raise EspError(self.esp_err, self.reason)


def _verify_block(block: SignatureBlock, digest: bytes) -> tuple[str, str]:
    """The cryptographic check of a valid, trusted block: (status, reason)."""
    if block.image_digest != digest:
        return "digest-mismatch", f"block {block.index} was made for another image (its digest differs)"
    body = block.body
    try:
        if block.version == SIG_BLOCK_VERSION_RSA:
            n = int.from_bytes(body.key.n, "little")
            if n < 3 or n.bit_length() != RSA_BITS or not n & 1:
                return "bad-key", f"block {block.index} holds no RSA-3072 modulus"
            if (
                int.from_bytes(body.key.rinv, "little") != (1 << (2 * RSA_BITS)) % n
                or body.key.mdash != -pow(n, -1, 1 << 32) & 0xFFFFFFFF
            ):
                return "bad-key", f"block {block.index} has RSA rinv/mdash values that do not belong to its modulus"
            pub = rsa.RSAPublicNumbers(body.key.e, n).public_key()
            pub.verify(body.signature[::-1], digest, _PSS, utils.Prehashed(hashes.SHA256()))
        else:
            curve_cls = _CURVE_CLASSES.get(body.key.curve_id)
            if curve_cls is None or (body.key.curve_id == CURVE_P384) != (block.hash_type == ECDSA_SHA_384):
                return "bad-key", f"block {block.index} names unknown curve id {body.key.curve_id}"
            coord = CURVE_COORD_LEN[body.key.curve_id]
            x = int.from_bytes(body.key.point[:coord], "little")
            y = int.from_bytes(body.key.point[coord : 2 * coord], "little")
            pub = ec.EllipticCurvePublicNumbers(x, y, curve_cls()).public_key()
            r = int.from_bytes(body.signature[:coord], "little")
            s = int.from_bytes(body.signature[coord : 2 * coord], "little")
            algo = hashes.SHA384() if block.hash_type == ECDSA_SHA_384 else hashes.SHA256()
            pub.verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(algo)))
    except InvalidSignature:
        return "bad-signature", f"block {block.index}: the signature does not verify"
    except ValueError as err:
        return "bad-key", f"block {block.index}: unusable public key ({err})"
    return "verified", f"block {block.index} verified"


def check_signature_sector(
    signed: bytes | memoryview,
    sector: bytes | memoryview,
    trusted_digests: list[bytes] | None = None,
    *,
    scheme: str | None = None,
    only_block0: bool = False,
    sig_offset: int | None = None,
) -> SignatureCheck:
    """Check the blocks of ``sector`` against ``signed`` (the padded image they sign).

    ``trusted_digests=None`` trusts the key of every valid block (first boot before the digests are
    burned, or "is this well signed"); an empty list means no key is trusted. ``scheme`` ("RSA" or
    "ECDSA") rejects blocks of the other scheme, as a build configured for one scheme does.
    ``only_block0`` looks at block 0 alone (ESP32, and "signed apps without secure boot").
    """
    sig_offset = len(signed) if sig_offset is None else sig_offset
    if trusted_digests is not None and not trusted_digests:
        return SignatureCheck(False, sig_offset, None, "no trusted secure boot key digests", "ESP_FAIL")
    if len(sector) < SIG_BLOCK_SIZE * SIG_BLOCKS_MAX:
        return SignatureCheck(False, sig_offset, None, f"no signature sector at offset {sig_offset:#x} (data ends)")
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}")
    digests: dict[int, bytes] = {}
    verdicts = []
    blocks = signature_blocks(sector)[: 1 if only_block0 else SIG_BLOCKS_MAX]
    for block in blocks:
        key_dig = block.key_digest
        if block.blank:
            verdicts.append(BlockVerdict(block.index, "blank", f"block {block.index} is empty"))
            continue
        if not block.valid or block.body is None:
            what = "magic byte" if block.magic_byte != SIG_BLOCK_MAGIC else "CRC" if not block.crc_ok else "layout"
            verdicts.append(BlockVerdict(block.index, "invalid", f"block {block.index} has a bad {what}", key_dig))
            continue
        if scheme is not None and block.version != SCHEMES[scheme]:
            verdicts.append(
                BlockVerdict(
                    block.index,
                    "wrong-scheme",
                    f"{scheme} signing scheme selected but block {block.index} was generated for {block.scheme}",
                    key_dig,
                )
            )
            continue
        if trusted_digests is not None and key_dig not in trusted_digests:
            verdicts.append(
                BlockVerdict(block.index, "untrusted", f"block {block.index} is signed by an untrusted key", key_dig)
            )
            continue
        if block.hash_type not in digests:
            digests[block.hash_type] = _hash(block.hash_type, signed)
        status, reason = _verify_block(block, digests[block.hash_type])
        verdicts.append(BlockVerdict(block.index, status, reason, key_dig))
    verified = next((v.index for v in verdicts if v.status == "verified"), None)
    if verified is not None:
        return SignatureCheck(True, sig_offset, verified, f"signature block {verified} verified", blocks=verdicts)
    failures = [v.reason for v in verdicts if v.status != "blank"]
    reason = "; ".join(failures) if failures else "no signature blocks"
    return SignatureCheck(False, sig_offset, None, f"Secure Boot V2 verification failed: {reason}", blocks=verdicts)


def verify_image_signatures(
    buf: bytes | memoryview,
    image_len: int,
    trusted_digests: list[bytes] | None = None,
    *,
    scheme: str | None = None,
    only_block0: bool = False,
) -> SignatureCheck:
    """``esp_secure_boot_verify_signature(start, image_len)`` on ``buf`` (the image at offset 0).

    ``image_len`` is esp_image's length (including the appended SHA-256); the signature sector is at
    ``ALIGN_UP(image_len, 4096)``. See :func:`check_signature_sector` for the other arguments.
    """
    view = memoryview(buf)
    sig_offset = align_up(image_len)
    return check_signature_sector(
        view[:sig_offset],
        view[sig_offset : sig_offset + SIG_SECTOR_SIZE],
        trusted_digests,
        scheme=scheme,
        only_block0=only_block0,
        sig_offset=sig_offset,
    )


def verify_signed_file(data: bytes | memoryview, public_key: PublicKey, image_len: int | None = None) -> SignatureCheck:
    """``espsecure verify-signature --version 2``: one block of the signature sector must be made with
    ``public_key``. The sector is the last 4 KiB of ``data`` (espsecure), or where ESP-IDF looks for it
    when ``image_len`` is given."""
    view = memoryview(data)
    _check_key(public_key)
    trusted = [key_digest(public_key)]
    if image_len is not None:
        check = verify_image_signatures(view, image_len, trusted)
    else:
        if len(view) < SIG_SECTOR_SIZE or len(view) % SIG_SECTOR_SIZE:
            raise InputError("a Secure Boot V2 signed file is a non-zero multiple of 4096 bytes")
        sig_offset = len(view) - SIG_SECTOR_SIZE
        check = check_signature_sector(view[:sig_offset], view[sig_offset:], trusted, sig_offset=sig_offset)
    statuses = {v.status for v in check.blocks}
    if not check.ok and "untrusted" in statuses and statuses <= {"blank", "invalid", "untrusted"}:
        sector = view[check.sig_offset : check.sig_offset + SIG_SECTOR_SIZE]
        present = sorted(
            {b.scheme if b.curve is None else f"{b.scheme} {b.curve}" for b in signature_blocks(sector) if b.valid}
        )
        check.reason = (
            f"no signature block is made with this key ({describe_key(public_key)}; "
            f"the image has {', '.join(present)} block(s))"
        )
    return check


def image_key_digests(buf: bytes | memoryview, image_len: int, *, scheme: str | None = None) -> list[bytes]:
    """``esp_secure_boot_get_signature_blocks_for_running_app``: the key digests of an image's valid
    blocks (right magic and CRC, and the configured scheme), in block order."""
    view = memoryview(buf)
    start = align_up(image_len)
    blocks = signature_blocks(view[start : start + SIG_SECTOR_SIZE])
    return [
        b.key_digest
        for b in blocks
        if b.valid and b.body is not None and (scheme is None or b.version == SCHEMES[scheme])
    ]


def verify_update(
    signed: bytes | memoryview,
    sector: bytes | memoryview,
    sig_offset: int,
    efuses,
    *,
    running: tuple[bytes | memoryview, int] | None = None,
    scheme: str | None = None,
) -> SignatureCheck:
    """``esp_secure_boot_verify_sbv2_signature_block`` as the app runs it: ``sector`` (found at
    ``sig_offset``) must hold a block that signs ``signed`` with a trusted key.

    Secure Boot V2 enabled in ``efuses``: the burned, non-revoked eFuse digests are trusted and every
    block may match (one block on the ESP32). Not enabled ("signed apps without secure boot"):
    the key digests of the running app's own blocks (``running`` = (buffer, image_len)) are trusted
    and only block 0 is looked at.
    """
    if efuses.secure_boot_v2_enabled:
        trusted = efuses.trusted_key_digests()
        only_block0 = efuses.key_digest_slots == 1
    else:
        if running is None:
            return SignatureCheck(False, sig_offset, None, "no running app to take trusted keys from", "ESP_FAIL")
        trusted = image_key_digests(*running, scheme=scheme)
        if not trusted:
            return SignatureCheck(False, sig_offset, None, "no signatures were found for the running app", "ESP_FAIL")
        only_block0 = True
    return check_signature_sector(signed, sector, trusted, scheme=scheme, only_block0=only_block0,
                                  sig_offset=sig_offset)


def verify_app_update(
    buf: bytes | memoryview,
    image_len: int,
    efuses,
    *,
    running: tuple[bytes | memoryview, int] | None = None,
    scheme: str | None = None,
) -> SignatureCheck:
    """The app's check of a new image during OTA (``CONFIG_SECURE_SIGNED_ON_UPDATE``): the signature
    sector at ``ALIGN_UP(image_len, 4096)`` of ``buf`` (see :func:`verify_update`)."""
    view = memoryview(buf)
    sig_offset = align_up(image_len)
    return verify_update(view[:sig_offset], view[sig_offset : sig_offset + SIG_SECTOR_SIZE], sig_offset, efuses,
                         running=running, scheme=scheme)


def verify_at_boot(buf: bytes | memoryview, image_len: int, efuses, *, scheme: str | None = None) -> SignatureCheck:
    """The bootloader's check (``esp_secure_boot_verify_signature`` with ``CONFIG_SECURE_BOOT_V2_ENABLED``).

    Digests come from eFuse; before Secure Boot is enabled and while none is burned (first boot),
    the image's own valid blocks are trusted. With Secure Boot enabled but no digest burned the
    check fails. The ESP32's ROM looks at block 0 only.
    """
    trusted = efuses.trusted_key_digests()
    if not trusted:
        if efuses.secure_boot_v2_enabled:
            return SignatureCheck(False, align_up(image_len), None, "could not read eFuse secure boot digests",
                                  "ESP_FAIL")
        trusted = None
    return verify_image_signatures(buf, image_len, trusted, scheme=scheme, only_block0=efuses.key_digest_slots == 1)
