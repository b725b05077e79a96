"""The partition table as it sits in flash: 32-byte ``esp_partition_info_t`` rows.

Layout from ESP-IDF's esp_flash_partitions.h and gen_esp32part.py: entries (magic ``AA 50``) one after
another from the table offset, then optionally one MD5 row (magic ``EB EB``, 14 reserved bytes, the MD5 of
all entry bytes before it), then an end marker (gen_esp32part writes 32 x 0xFF and pads the table with
0xFF to ``TABLE_MAX_LEN`` bytes).

Also the type and subtype names ESP-IDF's gen_esp32part.py knows (v1.5: ``bootloader`` and
``partition_table`` types, ``littlefs``, ``tee_*``); the tool's keyword order is kept because its error
messages list the keywords in that order.
"""

from __future__ import annotations

import hashlib

from construct import Bytes, Const, Default, Int8ul, Int16ul, Int32ul, Struct

ROW_SIZE = 32
TABLE_MAX_LEN = 0xC00  # ESP_PARTITION_TABLE_MAX_LEN: what the bootloader maps and gen_esp32part pads to
TABLE_MAX_ENTRIES = TABLE_MAX_LEN // ROW_SIZE  # ESP_PARTITION_TABLE_MAX_ENTRIES = 96
TABLE_SECTOR_SIZE = 0x1000  # the table owns a whole sector; the first partition starts after it
DEFAULT_TABLE_OFFSET = 0x8000  # CONFIG_PARTITION_TABLE_OFFSET default

ENTRY_MAGIC = 0x50AA  # ESP_PARTITION_MAGIC, bytes AA 50
MD5_MAGIC = 0xEBEB  # ESP_PARTITION_MAGIC_MD5
END_MAGIC = 0xFFFF
MD5_OFFSET = 16  # ESP_PARTITION_MD5_OFFSET: the digest's place in the MD5 row
LABEL_LEN = 16

FLAG_ENCRYPTED = 1 << 0  # PART_FLAG_ENCRYPTED
FLAG_READONLY = 1 << 1  # PART_FLAG_READONLY
FLAG_NAMES = {"encrypted": FLAG_ENCRYPTED, "readonly": FLAG_READONLY}

PartitionEntry = Struct(
    "magic" / Const(ENTRY_MAGIC, Int16ul),
    "type" / Int8ul,
    "subtype" / Int8ul,
    "offset" / Int32ul,
    "size" / Int32ul,
    "label" / Bytes(LABEL_LEN),  # NUL-padded, not NUL-terminated when 16 bytes long
    "flags" / Int32ul,
)

Md5Row = Struct(
    "magic" / Const(MD5_MAGIC, Int16ul),
    "reserved" / Default(Bytes(14), b"\xff" * 14),
    "md5" / Bytes(16),
)

# What gen_esp32part writes after the last row; the bootloader only looks at magic, type and subtype.
END_MARKER = b"\xff" * ROW_SIZE
EndMarker = Const(END_MARKER)

# A row of any kind, for readers that look at the magic before deciding what the row is.
RowHead = Struct("magic" / Int16ul, "type" / Int8ul, "subtype" / Int8ul)

APP, DATA, BOOTLOADER, PARTITION_TABLE = 0x00, 0x01, 0x02, 0x03
TYPE_END = SUBTYPE_END = 0xFF  # PART_TYPE_END / PART_SUBTYPE_END

# gen_esp32part's TYPES, in its order.
TYPES: dict[str, int] = {"bootloader": BOOTLOADER, "partition_table": PARTITION_TABLE, "app": APP, "data": DATA}

APP_FACTORY = 0x00
APP_OTA_MIN = 0x10  # PART_SUBTYPE_OTA_FLAG
APP_OTA_MASK = 0x0F  # PART_SUBTYPE_OTA_MASK
APP_OTA_SLOTS = 16
APP_TEST = 0x20
APP_TEE_MIN = 0x30
DATA_OTA = 0x00
DATA_NVS = 0x02
DATA_COREDUMP = 0x03
DATA_UNDEFINED = 0x06
DATA_TEE_OTA = 0x90
OTADATA_SIZE = 0x2000

# gen_esp32part's SUBTYPES (the short-lived v5.5-dev ``tee_sec_stg`` 0x91 never shipped in a release).
SUBTYPES: dict[int, dict[str, int]] = {
    BOOTLOADER: {"primary": 0x00, "ota": 0x01, "recovery": 0x02},
    PARTITION_TABLE: {"primary": 0x00, "ota": 0x01},
    APP: {
        "factory": APP_FACTORY,
        "test": APP_TEST,
        **{f"ota_{i}": APP_OTA_MIN + i for i in range(APP_OTA_SLOTS)},
        **{f"tee_{i}": APP_TEE_MIN + i for i in range(2)},
    },
    DATA: {
        "ota": DATA_OTA,
        "phy": 0x01,
        "nvs": DATA_NVS,
        "coredump": DATA_COREDUMP,
        "nvs_keys": 0x04,
        "efuse": 0x05,
        "undefined": DATA_UNDEFINED,
        "esphttpd": 0x80,
        "fat": 0x81,
        "spiffs": 0x82,
        "littlefs": 0x83,
        "tee_ota": DATA_TEE_OTA,
    },
}


def type_name(ptype: int) -> str | int:
    """gen_esp32part's name of a partition type, or the number when it has none."""
    return next((name for name, value in TYPES.items() if value == ptype), ptype)


def subtype_name(ptype: int, subtype: int) -> str | int:
    """gen_esp32part's name of a subtype of ``ptype``, or the number when it has none."""
    return next((name for name, value in SUBTYPES.get(ptype, {}).items() if value == subtype), subtype)


def md5_row(entries: bytes | memoryview) -> bytes:
    """The MD5 row gen_esp32part appends after ``entries`` (all entry bytes before it)."""
    return Md5Row.build({"md5": hashlib.md5(entries).digest()})
