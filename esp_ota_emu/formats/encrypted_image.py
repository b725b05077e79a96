"""The ``esp_encrypted_img`` pre-encrypted image header (``pre_enc_bin_header``, 512 bytes).

The header is followed by ``bin_size`` bytes of AES-256-GCM ciphertext (16-byte IV, no AAD). The
384-byte key field holds, depending on the scheme the device was built for, the GCM key wrapped
with RSA-3072 PKCS#1 v1.5, or (ECIES) the sender's ephemeral P-256 public key and an HKDF salt.
"""

from __future__ import annotations

from construct import Bytes, Int32ul, Padding, Struct

# First 4 bytes of SHA-256("esp_encrypted_img"), stored little-endian.
ENC_IMG_MAGIC = 0x0788B6CF
HEADER_SIZE = 512  # esp_encrypted_img_get_header_size()
ENC_GCM_KEY_SIZE = 384
IV_SIZE = 16
AUTH_SIZE = 16
GCM_KEY_SIZE = 32
RESERVED_HEADER = HEADER_SIZE - 4 - ENC_GCM_KEY_SIZE - IV_SIZE - 4 - AUTH_SIZE  # 88
SERVER_ECC_KEY_LEN = 64
KDF_SALT_SIZE = 32

PreEncBinHeader = Struct(
    "magic" / Int32ul,
    "enc_gcm" / Bytes(ENC_GCM_KEY_SIZE),
    "iv" / Bytes(IV_SIZE),
    "bin_size" / Int32ul,
    "auth" / Bytes(AUTH_SIZE),
    "extra_header" / Bytes(RESERVED_HEADER),
)
assert PreEncBinHeader.sizeof() == HEADER_SIZE

# The ``enc_gcm`` field of the ECIES scheme.
EciesKeyField = Struct(
    "server_ecc_pub_key" / Bytes(SERVER_ECC_KEY_LEN),  # X‖Y, big-endian, no 0x04 prefix
    "kdf_salt" / Bytes(KDF_SALT_SIZE),
    Padding(ENC_GCM_KEY_SIZE - SERVER_ECC_KEY_LEN - KDF_SALT_SIZE),
)
assert EciesKeyField.sizeof() == ENC_GCM_KEY_SIZE
