"""The eFuses of one chip: the bits ESP-IDF's boot, OTA and security code reads.

The model keeps the raw eFuse blocks (so that QEMU's eFuse file round-trips byte for byte) and
decodes the fields from a per-chip table taken from espefuse's eFuse definitions:

* ESP32: chip revision (CHIP_VER_REV1/REV2 + WAFER_VERSION_MINOR), FLASH_CRYPT_CNT,
  FLASH_CRYPT_CONFIG, the flash-encryption key in BLOCK1, Secure Boot (ABS_DONE_0 = V1,
  ABS_DONE_1 = V2) with the V2 key digest in BLOCK2, and the 32-bit SECURE_VERSION in BLOCK3.
* ESP32-C3 / ESP32-S3: WAFER_VERSION_MAJOR/MINOR, SPI_BOOT_CRYPT_CNT, SECURE_BOOT_EN, six key
  blocks KEY0..KEY5 with their KEY_PURPOSE_n, SECURE_BOOT_KEY_REVOKE0..2 and the 16-bit SECURE_VERSION.

Burning only ever sets bits (``old | new``), as on the hardware. QEMU's eFuse file is the blocks
back to back in register order: 124 bytes for the ESP32, 1024 for the C3 (and S3, which QEMU
drives with the C3 model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import EspError, InputError


@dataclass(frozen=True)
class Field:
    """An eFuse field: ``length`` bits from bit ``pos`` of 32-bit word ``word`` of block ``block``."""

    block: int
    word: int
    pos: int
    length: int

    @property
    def bit(self) -> int:
        return self.word * 32 + self.pos


@dataclass(frozen=True)
class EfuseLayout:
    chip: str
    block_sizes: tuple[int, ...]  # bytes of each block as QEMU stores it
    qemu_file_size: int
    fields: dict[str, Field]
    default_chip_rev: int  # the revision QEMU's default eFuses report

    @property
    def qemu_offsets(self) -> tuple[int, ...]:
        offsets, pos = [], 0
        for size in self.block_sizes:
            offsets.append(pos)
            pos += size
        return tuple(offsets)


_ESP32 = EfuseLayout(
    chip="esp32",
    block_sizes=(28, 32, 32, 32),
    qemu_file_size=124,
    default_chip_rev=300,
    fields={
        "WR_DIS": Field(0, 0, 0, 16),
        "RD_DIS": Field(0, 0, 16, 4),
        "FLASH_CRYPT_CNT": Field(0, 0, 20, 7),
        "UART_DOWNLOAD_DIS": Field(0, 0, 27, 1),
        "CHIP_VER_REV1": Field(0, 3, 15, 1),
        "CHIP_VER_REV2": Field(0, 5, 20, 1),
        "WAFER_VERSION_MINOR": Field(0, 5, 24, 2),
        "FLASH_CRYPT_CONFIG": Field(0, 5, 28, 4),
        "CODING_SCHEME": Field(0, 6, 0, 2),
        "ABS_DONE_0": Field(0, 6, 4, 1),
        "ABS_DONE_1": Field(0, 6, 5, 1),
        "JTAG_DISABLE": Field(0, 6, 6, 1),
        "DISABLE_DL_ENCRYPT": Field(0, 6, 7, 1),
        "DISABLE_DL_DECRYPT": Field(0, 6, 8, 1),
        "DISABLE_DL_CACHE": Field(0, 6, 9, 1),
        "BLOCK1": Field(1, 0, 0, 256),
        "BLOCK2": Field(2, 0, 0, 256),
        "SECURE_VERSION": Field(3, 4, 0, 32),
    },
)

# ESP32-C3 and ESP32-S3 share this part of the eFuse map (espefuse esp32c3.yaml / esp32s3.yaml).
_KEY_CHIP_FIELDS = {
    "WR_DIS": Field(0, 0, 0, 32),
    "RD_DIS": Field(0, 1, 0, 7),
    "DIS_DOWNLOAD_MANUAL_ENCRYPT": Field(0, 1, 20, 1),
    "SPI_BOOT_CRYPT_CNT": Field(0, 2, 18, 3),
    **{f"SECURE_BOOT_KEY_REVOKE{i}": Field(0, 2, 21 + i, 1) for i in range(3)},
    **{f"KEY_PURPOSE_{i}": Field(0, 2 + (24 + 4 * i) // 32, (24 + 4 * i) % 32, 4) for i in range(6)},
    "SECURE_BOOT_EN": Field(0, 3, 20, 1),
    "SECURE_BOOT_AGGRESSIVE_REVOKE": Field(0, 3, 21, 1),
    "DIS_DOWNLOAD_MODE": Field(0, 4, 0, 1),
    "SECURE_VERSION": Field(0, 4, 14, 16),
    "DISABLE_WAFER_VERSION_MAJOR": Field(0, 5, 0, 1),
    "WAFER_VERSION_MINOR_LO": Field(1, 3, 18, 3),
    "WAFER_VERSION_MINOR_HI": Field(1, 5, 23, 1),
    "WAFER_VERSION_MAJOR": Field(1, 5, 24, 2),
    **{f"BLOCK_KEY{i}": Field(4 + i, 0, 0, 256) for i in range(6)},
}
# BLK0 (WR_DIS + 5 words), BLK1 (6 words), BLK2..BLK10 (8 words each).
_KEY_CHIP_BLOCKS = (24, 24) + (32,) * 9

_LAYOUTS = {
    "esp32": _ESP32,
    "esp32c3": EfuseLayout("esp32c3", _KEY_CHIP_BLOCKS, 1024, _KEY_CHIP_FIELDS, default_chip_rev=3),
    "esp32s3": EfuseLayout("esp32s3", _KEY_CHIP_BLOCKS, 1024, _KEY_CHIP_FIELDS, default_chip_rev=0),
}
SUPPORTED_CHIPS = tuple(_LAYOUTS)

# KEY_PURPOSE_n values (esp_efuse_purpose_t).
KEY_PURPOSES = {
    "USER": 0,
    "RESERVED": 1,
    "XTS_AES_256_KEY_1": 2,
    "XTS_AES_256_KEY_2": 3,
    "XTS_AES_128_KEY": 4,
    "HMAC_DOWN_ALL": 5,
    "HMAC_DOWN_JTAG": 6,
    "HMAC_DOWN_DIGITAL_SIGNATURE": 7,
    "HMAC_UP": 8,
    "SECURE_BOOT_DIGEST0": 9,
    "SECURE_BOOT_DIGEST1": 10,
    "SECURE_BOOT_DIGEST2": 11,
}
_PURPOSE_NAMES = {v: k for k, v in KEY_PURPOSES.items()}
_XTS_PURPOSES = (KEY_PURPOSES["XTS_AES_256_KEY_1"], KEY_PURPOSES["XTS_AES_256_KEY_2"], KEY_PURPOSES["XTS_AES_128_KEY"])


def _layout(chip: str) -> EfuseLayout:
    try:
        return _LAYOUTS[chip]
    except KeyError:
        raise InputError(f"no eFuse model for {chip!r}; supported: {', '.join(SUPPORTED_CHIPS)}") from None


@dataclass
class Efuses:
    """The eFuse blocks of one chip.

    ``apb_date_rev3`` stands for the ESP32's ``APB_CTRL_DATE`` bit 31, the third "ECO" bit of its
    major revision (a register, not an eFuse; set on ECO3 silicon and in QEMU).
    """

    chip: str
    blocks: list[bytearray]
    apb_date_rev3: bool = True
    layout: EfuseLayout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.layout = _layout(self.chip)
        if [len(b) for b in self.blocks] != list(self.layout.block_sizes):
            raise InputError(f"{self.chip} eFuse blocks must be {self.layout.block_sizes} bytes long")
        self.blocks = [bytearray(b) for b in self.blocks]

    # --- construction and persistence -------------------------------------------------------

    @classmethod
    def blank(cls, chip: str) -> Efuses:
        """All eFuses zero (never burned)."""
        return cls(chip, [bytearray(size) for size in _layout(chip).block_sizes])

    @classmethod
    def default(cls, chip: str, chip_rev: int | None = None) -> Efuses:
        """A fresh chip as QEMU's default eFuse file describes it: zero except the revision fields
        (ESP32 v3.0 = CHIP_VER_REV1 + CHIP_VER_REV2; ESP32-C3 v0.3 = WAFER_VERSION_MINOR 3)."""
        efuses = cls.blank(chip)
        efuses._set_chip_revision(efuses.layout.default_chip_rev if chip_rev is None else chip_rev)
        return efuses

    @classmethod
    def from_qemu_file(cls, chip: str, data: bytes) -> Efuses:
        """Read QEMU's eFuse file (``-drive file=...,if=none,format=raw,id=efuse``)."""
        layout = _layout(chip)
        if len(data) != layout.qemu_file_size:
            raise InputError(
                f"a QEMU {chip} eFuse file is {layout.qemu_file_size} bytes, this one is {len(data)}"
            )
        blocks = [bytearray(data[o : o + s]) for o, s in zip(layout.qemu_offsets, layout.block_sizes)]
        return cls(chip, blocks)

    def to_qemu_file(self) -> bytes:
        """QEMU's eFuse file for these eFuses (zero-filled beyond the blocks)."""
        return b"".join(self.blocks).ljust(self.layout.qemu_file_size, b"\0")

    def to_dict(self) -> dict:
        """JSON-friendly: the raw blocks (authoritative) plus the decoded fields (for people)."""
        return {
            "chip": self.chip,
            "blocks": [bytes(b).hex() for b in self.blocks],
            "apb_date_rev3": self.apb_date_rev3,
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Efuses:
        try:
            blocks = [bytearray.fromhex(b) for b in data["blocks"]]
            return cls(data["chip"], blocks, bool(data.get("apb_date_rev3", True)))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"not an eFuse description ({err})") from None

    # --- raw field access --------------------------------------------------------------------

    def _field(self, name: str) -> Field:
        try:
            return self.layout.fields[name]
        except KeyError:
            raise InputError(f"{self.chip} has no eFuse field {name}") from None

    def read(self, name: str) -> int:
        """A field's value (eFuse words are little-endian; fields read as unsigned integers)."""
        f = self._field(name)
        value = int.from_bytes(self.blocks[f.block], "little")
        return value >> f.bit & ((1 << f.length) - 1)

    def read_bytes(self, name: str) -> bytes:
        """A whole-block field (key, digest) as its bytes in eFuse order."""
        f = self._field(name)
        return self.read(name).to_bytes(f.length // 8, "little")

    def burn(self, name: str, value: int) -> None:
        """Program a field: bits set in ``value`` become 1, nothing becomes 0 again."""
        f = self._field(name)
        if value < 0 or value >> f.length:
            raise InputError(f"{name} is {f.length} bits wide; {value:#x} does not fit")
        block = self.blocks[f.block]
        merged = int.from_bytes(block, "little") | value << f.bit
        block[:] = merged.to_bytes(len(block), "little")

    def burn_bytes(self, name: str, data: bytes) -> None:
        f = self._field(name)
        if len(data) * 8 != f.length:
            raise InputError(f"{name} takes {f.length // 8} bytes, got {len(data)}")
        self.burn(name, int.from_bytes(data, "little"))

    # --- chip revision -----------------------------------------------------------------------

    @property
    def chip_revision(self) -> int:
        """``efuse_hal_chip_revision()``: major * 100 + minor."""
        return self.major_revision * 100 + self.minor_revision

    @property
    def major_revision(self) -> int:
        if self.chip == "esp32":
            eco = self.read("CHIP_VER_REV1") | self.read("CHIP_VER_REV2") << 1 | int(self.apb_date_rev3) << 2
            return {0: 0, 1: 1, 3: 2, 7: 3}.get(eco, 0)
        return self.read("WAFER_VERSION_MAJOR")

    @property
    def minor_revision(self) -> int:
        if self.chip == "esp32":
            return self.read("WAFER_VERSION_MINOR")
        return self.read("WAFER_VERSION_MINOR_HI") << 3 | self.read("WAFER_VERSION_MINOR_LO")

    @property
    def disable_wafer_version_major(self) -> bool:
        """``efuse_hal_get_disable_wafer_version_major()``: set, apps' maximum chip revision is not
        checked. The ESP32 has no such eFuse (its HAL answers false)."""
        return "DISABLE_WAFER_VERSION_MAJOR" in self.layout.fields and bool(self.read("DISABLE_WAFER_VERSION_MAJOR"))

    def _set_chip_revision(self, chip_rev: int) -> None:
        major, minor = divmod(chip_rev, 100)
        if self.chip == "esp32":
            if major not in (0, 1, 2, 3) or minor > 3:
                raise InputError(f"ESP32 revisions are v0.0..v3.3, not v{major}.{minor}")
            self.burn("CHIP_VER_REV1", int(major >= 1))
            self.burn("CHIP_VER_REV2", int(major >= 2))
            self.apb_date_rev3 = major == 3
            self.burn("WAFER_VERSION_MINOR", minor)
        else:
            if major > 3 or minor > 15:
                raise InputError(f"{self.chip} revisions are v0.0..v3.15, not v{major}.{minor}")
            self.burn("WAFER_VERSION_MAJOR", major)
            self.burn("WAFER_VERSION_MINOR_LO", minor & 7)
            self.burn("WAFER_VERSION_MINOR_HI", minor >> 3)

    # --- anti-rollback -----------------------------------------------------------------------

    @property
    def secure_version_bits(self) -> int:
        """Width of the SECURE_VERSION field: the highest secure_version the chip can record."""
        return self._field("SECURE_VERSION").length

    @property
    def secure_version(self) -> int:
        """``esp_efuse_read_secure_version()``: the number of bits burned in SECURE_VERSION."""
        return bin(self.read("SECURE_VERSION")).count("1")

    def check_secure_version(self, secure_version: int) -> bool:
        """``esp_efuse_check_secure_version()``: an app may run if its version reaches the eFuse's."""
        return secure_version >= self.secure_version

    def burn_secure_version(self, secure_version: int) -> None:
        """``esp_efuse_update_secure_version()``: burn bits up to ``secure_version`` (never fewer)."""
        if secure_version > self.secure_version_bits:
            raise EspError(
                "ESP_ERR_INVALID_ARG",
                f"max secure version is {self.secure_version_bits}; version {secure_version} can not be written",
            )
        if secure_version > self.secure_version:
            self.burn("SECURE_VERSION", (1 << secure_version) - 1)

    # --- flash encryption --------------------------------------------------------------------

    @property
    def flash_crypt_cnt(self) -> int:
        return self.read("FLASH_CRYPT_CNT" if self.chip == "esp32" else "SPI_BOOT_CRYPT_CNT")

    @property
    def flash_encryption_enabled(self) -> bool:
        """``esp_flash_encryption_enabled()``: an odd number of CRYPT_CNT bits is set."""
        return bin(self.flash_crypt_cnt).count("1") % 2 == 1

    @property
    def flash_crypt_config(self) -> int | None:
        """ESP32 FLASH_CRYPT_CONFIG (which key bits the address tweak touches); None on XTS chips."""
        return self.read("FLASH_CRYPT_CONFIG") if self.chip == "esp32" else None

    def enable_flash_encryption(self) -> None:
        """What the bootloader does after encrypting flash in development mode: burn one more CRYPT_CNT bit."""
        cnt = self.flash_crypt_cnt
        if self.flash_encryption_enabled:
            return
        name = "FLASH_CRYPT_CNT" if self.chip == "esp32" else "SPI_BOOT_CRYPT_CNT"
        width = self._field(name).length
        if cnt == (1 << width) - 1:
            raise EspError("ESP_ERR_INVALID_STATE", f"{name} has no bit left to enable flash encryption")
        self.burn(name, cnt | (cnt + 1))  # the lowest clear bit

    def _key_blocks_with_purpose(self, purpose: int) -> list[int]:
        return [i for i in range(6) if self.read(f"KEY_PURPOSE_{i}") == purpose]

    @property
    def flash_encryption_key(self) -> bytes | None:
        """The flash-encryption key in key-file order (espefuse burns it byte-reversed), None if unset.

        ESP32: BLOCK1. Other chips: the XTS_AES_128_KEY block, or XTS_AES_256_KEY_1 + _2.
        """
        if self.chip == "esp32":
            key = self.read_bytes("BLOCK1")[::-1]
            return key if any(key) else None
        parts = []
        for purpose in (KEY_PURPOSES["XTS_AES_256_KEY_1"], KEY_PURPOSES["XTS_AES_256_KEY_2"]):
            blocks = self._key_blocks_with_purpose(purpose)
            if blocks:
                parts.append(self.read_bytes(f"BLOCK_KEY{blocks[0]}")[::-1])
        if len(parts) == 2:
            return b"".join(parts)
        blocks = self._key_blocks_with_purpose(KEY_PURPOSES["XTS_AES_128_KEY"])
        return self.read_bytes(f"BLOCK_KEY{blocks[0]}")[::-1] if blocks else None

    def burn_flash_encryption_key(self, key: bytes) -> None:
        """``espefuse burn-key``: ESP32 ``flash_encryption`` (32 bytes) or XTS_AES_128_KEY (32 bytes) /
        XTS_AES_256_KEY (64 bytes, two key blocks), byte-reversed as espefuse does."""
        if self.chip == "esp32":
            if len(key) != 32:
                raise InputError(f"the ESP32 flash encryption key is 32 bytes, got {len(key)}")
            self._burn_empty("BLOCK1", key[::-1])
            return
        if len(key) == 32:
            self._burn_key_block(key[::-1], KEY_PURPOSES["XTS_AES_128_KEY"])
        elif len(key) == 64 and self.chip == "esp32s3":
            self._burn_key_block(key[:32][::-1], KEY_PURPOSES["XTS_AES_256_KEY_1"])
            self._burn_key_block(key[32:][::-1], KEY_PURPOSES["XTS_AES_256_KEY_2"])
        else:
            raise InputError(f"{self.chip} flash encryption keys are 32 bytes (or 64 on the S3), got {len(key)}")

    def _burn_empty(self, name: str, data: bytes) -> None:
        if any(self.read_bytes(name)):
            raise EspError("ESP_ERR_INVALID_STATE", f"{name} is already burned")
        self.burn_bytes(name, data)

    def _burn_key_block(self, data: bytes, purpose: int) -> int:
        """Burn ``data`` into the first unused key block (zero key, purpose USER) with ``purpose``."""
        for i in range(6):
            if self.read(f"KEY_PURPOSE_{i}") == 0 and not any(self.read_bytes(f"BLOCK_KEY{i}")):
                if i == 5 and purpose in _XTS_PURPOSES:
                    continue  # SOC_EFUSE_BLOCK9_KEY_PURPOSE_QUIRK: KEY5 can not hold an XTS key
                self.burn_bytes(f"BLOCK_KEY{i}", data)
                self.burn(f"KEY_PURPOSE_{i}", purpose)
                return i
        raise EspError("ESP_ERR_INVALID_STATE", "no unused key block left")

    # --- secure boot -------------------------------------------------------------------------

    @property
    def secure_boot_v1_enabled(self) -> bool:
        return self.chip == "esp32" and bool(self.read("ABS_DONE_0"))

    @property
    def secure_boot_v1_key(self) -> bytes | None:
        """The ESP32's Secure Boot V1 bootloader key in BLOCK2, in key-file order (espefuse burns it
        byte-reversed), None if unset."""
        if self.chip != "esp32":
            return None
        key = self.read_bytes("BLOCK2")[::-1]
        return key if any(key) else None

    def burn_secure_boot_v1_key(self, key: bytes) -> None:
        """``espefuse burn-key secure_boot_v1``: 32 bytes into the ESP32's BLOCK2, byte-reversed."""
        if self.chip != "esp32":
            raise InputError(f"Secure Boot V1 exists on the ESP32 only, not on the {self.chip}")
        if len(key) != 32:
            raise InputError(f"the Secure Boot V1 key is 32 bytes, got {len(key)}")
        self._burn_empty("BLOCK2", key[::-1])

    @property
    def secure_boot_v2_enabled(self) -> bool:
        """``esp_secure_boot_enabled()`` for Secure Boot V2 (ESP32: ABS_DONE_1; others: SECURE_BOOT_EN)."""
        return bool(self.read("ABS_DONE_1" if self.chip == "esp32" else "SECURE_BOOT_EN"))

    def enable_secure_boot_v2(self) -> None:
        self.burn("ABS_DONE_1" if self.chip == "esp32" else "SECURE_BOOT_EN", 1)

    @property
    def key_digest_slots(self) -> int:
        """SOC_EFUSE_SECURE_BOOT_KEY_DIGESTS: 1 on the ESP32, 3 elsewhere."""
        return 1 if self.chip == "esp32" else 3

    def secure_boot_key_digests(self) -> list[dict]:
        """Every digest slot: ``{"index", "digest" (bytes or None), "revoked"}``."""
        if self.chip == "esp32":
            digest = self.read_bytes("BLOCK2")
            return [{"index": 0, "digest": digest if any(digest) else None, "revoked": False}]
        slots = []
        for i in range(3):
            blocks = self._key_blocks_with_purpose(KEY_PURPOSES[f"SECURE_BOOT_DIGEST{i}"])
            digest = self.read_bytes(f"BLOCK_KEY{blocks[0]}") if blocks else None
            slots.append({"index": i, "digest": digest, "revoked": bool(self.read(f"SECURE_BOOT_KEY_REVOKE{i}"))})
        return slots

    def trusted_key_digests(self) -> list[bytes]:
        """``esp_secure_boot_read_key_digests()``: the burned, not revoked key digests."""
        return [s["digest"] for s in self.secure_boot_key_digests() if s["digest"] is not None and not s["revoked"]]

    def burn_secure_boot_key_digest(self, digest: bytes, index: int | None = None) -> int:
        """``espefuse burn-key-digest`` / ``burn-key ... SECURE_BOOT_DIGESTn``: returns the slot index."""
        if len(digest) != 32:
            raise InputError(f"a Secure Boot key digest is 32 bytes, got {len(digest)}")
        if self.chip == "esp32":
            if index not in (None, 0):
                raise InputError("the ESP32 holds one Secure Boot V2 key digest (BLOCK2)")
            self._burn_empty("BLOCK2", bytes(digest))
            return 0
        used = {s["index"] for s in self.secure_boot_key_digests() if s["digest"] is not None}
        if index is None:
            index = next((i for i in range(3) if i not in used), None)
            if index is None:
                raise EspError("ESP_ERR_NOT_FOUND", "all three Secure Boot key digest slots are burned")
        elif index in used:
            raise EspError("ESP_ERR_INVALID_STATE", f"SECURE_BOOT_DIGEST{index} is already burned")
        self._burn_key_block(bytes(digest), KEY_PURPOSES[f"SECURE_BOOT_DIGEST{index}"])
        return index

    def revoke_secure_boot_key(self, index: int) -> None:
        """``esp_efuse_set_digest_revoke()``: key ``index`` is no longer trusted (not on the ESP32)."""
        if self.chip == "esp32":
            raise EspError("ESP_ERR_NOT_SUPPORTED", "the ESP32 can not revoke Secure Boot keys")
        if not 0 <= index < 3:
            raise EspError("ESP_ERR_INVALID_ARG", f"no Secure Boot key digest {index}")
        self.burn(f"SECURE_BOOT_KEY_REVOKE{index}", 1)

    def summary(self) -> dict:
        """The decoded security state, JSON-friendly."""
        out = {
            "chip_revision": self.chip_revision,
            "secure_version": self.secure_version,
            "secure_version_bits": self.secure_version_bits,
            "flash_crypt_cnt": self.flash_crypt_cnt,
            "flash_encryption_enabled": self.flash_encryption_enabled,
            "flash_encryption_key_set": self.flash_encryption_key is not None,
            "secure_boot_v2_enabled": self.secure_boot_v2_enabled,
            "secure_boot_key_digests": [
                {**s, "digest": None if s["digest"] is None else s["digest"].hex()}
                for s in self.secure_boot_key_digests()
            ],
        }
        if self.chip == "esp32":
            out["flash_crypt_config"] = self.flash_crypt_config
            out["secure_boot_v1_enabled"] = self.secure_boot_v1_enabled
        else:
            out["key_purposes"] = [_PURPOSE_NAMES.get(self.read(f"KEY_PURPOSE_{i}"), "?") for i in range(6)]
            out["disable_wafer_version_major"] = self.disable_wafer_version_major
        return out
