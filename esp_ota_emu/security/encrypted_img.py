"""Pre-encrypted OTA images (idf-extra-components ``esp_encrypted_img``): streaming decoder and encoder.

:class:`EncryptedImageDecrypter` reproduces ``esp_encrypted_img_decrypt_data`` /
``esp_encrypted_img_decrypt_end``: the 512-byte header is consumed first (magic, key, IV, bin_size,
tag), then ciphertext is decrypted and handed out in 16-byte multiples (the remainder is held back
until the last ``bin_size`` byte arrives); ``finish`` fails unless exactly ``bin_size`` bytes came
and the GCM tag matches. Every failure is ``ESP_FAIL``, as on the device.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ..errors import EspError, InputError
from ..formats.encrypted_image import (
    AUTH_SIZE,
    ENC_GCM_KEY_SIZE,
    ENC_IMG_MAGIC,
    GCM_KEY_SIZE,
    HEADER_SIZE,
    IV_SIZE,
    KDF_SALT_SIZE,
    EciesKeyField,
    RESERVED_HEADER,
    PreEncBinHeader,
)
from .keys import PrivateKey, PublicKey, describe_key

RSA_BITS = 3072
HKDF_INFO = b"_esp_enc_img_ecc"
# PBKDF2 salt the device uses to turn its eFuse HMAC key into the ECIES private key.
ECIES_PBKDF2_SALT = bytes.fromhex("0e2160642dae76d33448e43d7720123d9f3b1eceb88e573a4e8f7fb94ff0c869")
ECIES_PBKDF2_ITERATIONS = 2048
_KEY_END = 4 + ENC_GCM_KEY_SIZE  # header offset where the key field ends


def ecies_device_key(hmac_key: bytes) -> ec.EllipticCurvePrivateKey:
    """The device's P-256 private key derived from its eFuse HMAC key (PBKDF2-HMAC-SHA256, 2048 rounds)."""
    if len(hmac_key) != 32:
        raise InputError(f"an eFuse HMAC key is 32 bytes, got {len(hmac_key)}")
    kdf = PBKDF2HMAC(hashes.SHA256(), 32, ECIES_PBKDF2_SALT, ECIES_PBKDF2_ITERATIONS)
    scalar = int.from_bytes(kdf.derive(bytes(hmac_key)), "big")
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _ecies_gcm_key(private_key: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey, salt: bytes) -> bytes:
    shared = private_key.exchange(ec.ECDH(), peer)  # the x coordinate, 32 bytes
    return HKDF(hashes.SHA256(), GCM_KEY_SIZE, salt, HKDF_INFO).derive(shared)


def _scheme_of(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size != RSA_BITS:
            raise InputError(f"esp_encrypted_img uses RSA-3072 keys, this key is {describe_key(key)}")
        return "RSA"
    if not isinstance(key.curve, ec.SECP256R1):
        raise InputError(f"esp_encrypted_img's ECIES scheme uses P-256 keys, this key is {describe_key(key)}")
    return "ECIES"


class EncryptedImageDecrypter:
    """A streaming ``esp_encrypted_img`` decoder for one image, keyed with the device's private key
    (RSA-3072 for the RSA scheme, P-256 for ECIES)."""

    header_size = HEADER_SIZE

    def __init__(self, private_key: PrivateKey):
        self.scheme = _scheme_of(private_key)
        self._key = private_key
        self._header = bytearray()
        self._decryptor = None
        self._pending = b""  # ciphertext held back until 16 bytes (or the end) are there
        self.bin_size: int | None = None
        self.received = 0  # ciphertext bytes fed so far

    @property
    def is_complete(self) -> bool:
        """``esp_encrypted_img_is_complete_data_received``."""
        return self.bin_size is not None and self.received == self.bin_size

    def _fail(self, reason: str) -> EspError:
        return EspError("ESP_FAIL", reason)

    def _unwrap_key(self, enc_gcm: bytes) -> bytes:
        if self.scheme == "RSA":
            try:
                key = self._key.decrypt(enc_gcm, padding.PKCS1v15())
            except ValueError:
                key = b""
            if len(key) != GCM_KEY_SIZE:
                raise self._fail("unable to decipher the GCM key: the image was not encrypted for this RSA key")
            return key
        field = EciesKeyField.parse(enc_gcm)
        try:
            server = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b"\x04" + field.server_ecc_pub_key
            )
        except ValueError:
            raise self._fail("the image's ECIES server public key is not a P-256 point") from None
        return _ecies_gcm_key(self._key, server, field.kdf_salt)

    def _take_header(self, view: memoryview) -> memoryview:
        need = HEADER_SIZE - len(self._header)
        before = len(self._header)
        self._header += view[:need]
        if before < 4 <= len(self._header):
            magic = int.from_bytes(self._header[:4], "little")
            if magic != ENC_IMG_MAGIC:
                raise self._fail(f"magic verification failed (got {magic:#010x}, not an esp_encrypted_img image)")
        if before < _KEY_END <= len(self._header):
            self._gcm_key = self._unwrap_key(bytes(self._header[4:_KEY_END]))
        if len(self._header) == HEADER_SIZE:
            header = PreEncBinHeader.parse(bytes(self._header))
            self.bin_size = header.bin_size
            cipher = Cipher(algorithms.AES(self._gcm_key), modes.GCM(header.iv, header.auth, min_tag_length=AUTH_SIZE))
            self._decryptor = cipher.decryptor()
        return view[need:]

    def feed(self, chunk: bytes | memoryview) -> bytes:
        """Consume the next piece of the image; returns the plaintext now available (16-byte multiples,
        and the tail once the last byte of ``bin_size`` has arrived)."""
        view = memoryview(chunk)
        if self._decryptor is None:
            view = self._take_header(view)
            if self._decryptor is None or not len(view):
                return b""
        self.received += len(view)
        data = self._pending + bytes(view) if self._pending else view
        if self.received == self.bin_size:
            usable = len(data)
        else:
            usable = len(data) - len(data) % 16
        self._pending = bytes(data[usable:])
        return self._decryptor.update(data[:usable])

    def finish(self) -> None:
        """``esp_encrypted_img_decrypt_end``: all ``bin_size`` bytes received and the tag matches."""
        if self._decryptor is None:
            raise self._fail(f"the image ended inside its {HEADER_SIZE}-byte header ({len(self._header)} bytes)")
        if self._pending or self.received != self.bin_size:
            raise self._fail(f"received {self.received} bytes of ciphertext but the header says {self.bin_size}")
        try:
            self._decryptor.finalize()
        except InvalidTag:
            raise self._fail("GCM authentication tag mismatch: the image is corrupt or was altered") from None


def decrypt_image(data: bytes | memoryview, private_key: PrivateKey, chunk_size: int = 1 << 16) -> bytes:
    """Decrypt a whole pre-encrypted image through the streaming decoder."""
    dec = EncryptedImageDecrypter(private_key)
    view = memoryview(data)
    out = [dec.feed(view[i : i + chunk_size]) for i in range(0, len(view), chunk_size)]
    dec.finish()
    return b"".join(out)


def encrypt_image(plaintext: bytes | memoryview, public_key: PublicKey) -> bytes:
    """``esp_enc_img_gen.py encrypt``: the pre-encrypted image of ``plaintext`` for the device owning
    ``public_key`` (RSA-3072: the GCM key wrapped with PKCS#1 v1.5; P-256: ECIES with an ephemeral key)."""
    if isinstance(public_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        public_key = public_key.public_key()
    if _scheme_of(public_key) == "RSA":
        gcm_key = os.urandom(GCM_KEY_SIZE)
        enc_gcm = public_key.encrypt(gcm_key, padding.PKCS1v15())
    else:
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        salt = os.urandom(KDF_SALT_SIZE)
        gcm_key = _ecies_gcm_key(ephemeral, public_key, salt)
        point = ephemeral.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
        enc_gcm = EciesKeyField.build({"server_ecc_pub_key": point, "kdf_salt": salt})
    iv = os.urandom(IV_SIZE)
    sealed = AESGCM(gcm_key).encrypt(iv, bytes(plaintext), None)
    header = PreEncBinHeader.build(
        {
            "magic": ENC_IMG_MAGIC,
            "enc_gcm": enc_gcm,
            "iv": iv,
            "bin_size": len(plaintext),
            "auth": sealed[-AUTH_SIZE:],
            "extra_header": bytes(RESERVED_HEADER),
        }
    )
    return header + sealed[:-AUTH_SIZE]
