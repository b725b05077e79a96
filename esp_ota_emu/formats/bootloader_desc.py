"""``esp_bootloader_desc_t``: the 80-byte bootloader description (ESP-IDF v5.2+) at image offset 0x20.

It starts the first RAM segment (``.dram0.bootdesc``) of a bootloader image;
``esp_ota_get_bootloader_description()`` reads it at bootloader offset 32 and checks the magic byte.
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int32ul, Struct

ESP_BOOTLOADER_DESC_MAGIC_BYTE = 0x50
BOOTLOADER_DESC_SIZE = 80

BootloaderDesc = Struct(
    "magic_byte" / Int8ul,
    "reserved" / Bytes(3),
    "version" / Int32ul,
    "idf_ver" / Bytes(32),
    "date_time" / Bytes(24),
    "reserved2" / Bytes(16),
)
