"""``esp_image_header_t`` (24 bytes) and ``esp_image_segment_header_t`` (8 bytes).

The first 8 header bytes are common to every ESP image (the ESP8266 has only these); ESP32 and later
chips follow them with the 16-byte extended header (esp_app_format.h). Byte 3 packs the flash size in
its high nibble and the flash frequency in its low nibble; bytes 9..11 pack the SPI pin drive strengths
two per byte, low nibble first.
"""

from __future__ import annotations

from construct import BitStruct, Bytes, Int8ul, Int16ul, Int32ul, Nibble, Struct

ESP_IMAGE_HEADER_MAGIC = 0xE9
ESP_IMAGE_MAX_SEGMENTS = 16
ESP_CHECKSUM_MAGIC = 0xEF
WP_PIN_DISABLED = 0xEE
IMAGE_HEADER_SIZE = 24
COMMON_HEADER_SIZE = 8
SEGMENT_HEADER_SIZE = 8
HASH_LEN = 32

# spi_mode byte, as esp_image_spi_mode_t / esptool's FLASH_MODES.
SPI_MODES = ("QIO", "QOUT", "DIO", "DOUT", "FAST_READ", "SLOW_READ")

_COMMON_FIELDS = (
    "magic" / Int8ul,
    "segment_count" / Int8ul,
    "spi_mode" / Int8ul,
    "spi_size_speed" / BitStruct("spi_size" / Nibble, "spi_speed" / Nibble),
    "entry_addr" / Int32ul,
)

# The 8-byte header of an ESP8266 (v1) image.
CommonImageHeader = Struct(*_COMMON_FIELDS)

ImageHeader = Struct(
    *_COMMON_FIELDS,
    "wp_pin" / Int8ul,
    "spi_pin_drv"
    / Struct(
        "clk_q" / BitStruct("q_drv" / Nibble, "clk_drv" / Nibble),
        "d_cs" / BitStruct("cs_drv" / Nibble, "d_drv" / Nibble),
        "hd_wp" / BitStruct("wp_drv" / Nibble, "hd_drv" / Nibble),
    ),
    "chip_id" / Int16ul,
    "min_chip_rev" / Int8ul,
    "min_chip_rev_full" / Int16ul,
    "max_chip_rev_full" / Int16ul,
    "reserved" / Bytes(4),
    "hash_appended" / Int8ul,
)

SegmentHeader = Struct(
    "load_addr" / Int32ul,
    "data_len" / Int32ul,
)
