"""``esp_app_desc_t``: the 256-byte application description at image offset 0x20.

It is the start of the first segment's data (``.flash.appdesc``); ESP-IDF reads it at partition offset
``sizeof(esp_image_header_t) + sizeof(esp_image_segment_header_t)``. Text fields are NUL-padded C strings
kept as raw bytes so that parse then build gives the same bytes; :func:`c_text` decodes one.
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32ul, Struct

ESP_APP_DESC_MAGIC_WORD = 0xABCD5432
APP_DESC_SIZE = 256
APP_DESC_OFFSET = 0x20  # image offset: 24-byte image header + 8-byte segment header

AppDesc = Struct(
    "magic_word" / Int32ul,
    "secure_version" / Int32ul,
    "reserv1" / Bytes(8),
    "version" / Bytes(32),
    "project_name" / Bytes(32),
    "time" / Bytes(16),
    "date" / Bytes(16),
    "idf_ver" / Bytes(32),
    "app_elf_sha256" / Bytes(32),
    "min_efuse_blk_rev_full" / Int16ul,
    "max_efuse_blk_rev_full" / Int16ul,
    "mmu_page_size" / Int8ul,  # log2 of the MMU page size, 0 when unset (before v5.4)
    "spi_flash_mode" / Int8ul,  # CONFIG_ESPTOOLPY_FLASHMODE_VAL from v6.1 (SPI_FLASH_MODES); a reserved 0 before
    "reserv3" / Bytes(2),
    "reserv2" / Bytes(72),
)


# Where spi_flash_mode sits in the descriptor, and what its values name (0: not recorded).
SPI_FLASH_MODE_OFFSET = sum(
    sub.sizeof() for sub in AppDesc.subcons[: [sub.name for sub in AppDesc.subcons].index("spi_flash_mode")]
)
SPI_FLASH_MODES = {1: "QIO", 2: "QOUT", 3: "DIO", 4: "DOUT", 5: "OPI"}


def spi_flash_mode_name(value: int) -> str:
    """``3`` -> ``DIO (3)``: a descriptor's spi_flash_mode as the Kconfig choice it records."""
    return f"{SPI_FLASH_MODES.get(value, 'unknown mode')} ({value})"


def c_text(raw: bytes) -> str:
    """A descriptor text field as esptool shows it: decoded as UTF-8 with every NUL removed."""
    return bytes(raw).decode("utf-8", errors="replace").replace("\0", "")
