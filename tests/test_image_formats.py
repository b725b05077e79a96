"""esp_image on-flash structures: every format round-trips on real images, and the spec's test vector."""

from __future__ import annotations

import hashlib
import struct

import pytest

from esp_ota_emu.formats.app_desc import APP_DESC_OFFSET, APP_DESC_SIZE, AppDesc, c_text
from esp_ota_emu.formats.bootloader_desc import BOOTLOADER_DESC_SIZE, BootloaderDesc
from esp_ota_emu.formats.image import CommonImageHeader, ImageHeader, SegmentHeader
from esp_ota_emu.errors import InputError
from esp_ota_emu.image import parse_image
from esp_ota_emu.image.reader import xor_bytes


def real_images(realdata):
    return sorted(p.with_name(p.name.replace(".imageinfo.txt", ".bin")) for p in realdata.rglob("*.imageinfo.txt"))


def test_every_format_round_trips_on_real_images(realdata):
    apps = boots = 0
    for path in real_images(realdata):
        data = path.read_bytes()
        image = parse_image(data)
        size = 8 if image.esp8266 else 24
        header_cls = CommonImageHeader if image.esp8266 else ImageHeader
        assert header_cls.build(header_cls.parse(data[:size])) == data[:size], path
        for seg in image.segments:
            raw = data[seg.file_offset : seg.data_offset]
            assert SegmentHeader.build(SegmentHeader.parse(raw)) == raw
        if image.app_desc is not None:
            raw = data[APP_DESC_OFFSET : APP_DESC_OFFSET + APP_DESC_SIZE]
            assert AppDesc.build(image.app_desc) == raw
            apps += 1
        if image.bootloader_desc is not None:
            raw = data[APP_DESC_OFFSET : APP_DESC_OFFSET + BOOTLOADER_DESC_SIZE]
            assert BootloaderDesc.build(image.bootloader_desc) == raw
            boots += 1
    assert apps >= 15 and boots >= 15  # the data set has both kinds in numbers


def test_header_fields_land_where_esp_idf_puts_them():
    raw = bytes.fromhex("e9 04 02 2f 78 56 34 12 ee 21 43 65 0d 00 03 2d 01 63 00 00 00 00 00 01".replace(" ", ""))
    h = ImageHeader.parse(raw)
    assert (h.magic, h.segment_count, h.spi_mode, h.entry_addr) == (0xE9, 4, 2, 0x12345678)
    assert (h.spi_size_speed.spi_size, h.spi_size_speed.spi_speed) == (2, 0xF)
    drv = h.spi_pin_drv
    assert (drv.clk_q.clk_drv, drv.clk_q.q_drv, drv.d_cs.d_drv, drv.d_cs.cs_drv) == (1, 2, 3, 4)
    assert (drv.hd_wp.hd_drv, drv.hd_wp.wp_drv) == (5, 6)
    assert (h.chip_id, h.min_chip_rev, h.min_chip_rev_full, h.max_chip_rev_full) == (13, 3, 301, 99)
    assert h.hash_appended == 1
    assert ImageHeader.build(h) == raw
    assert AppDesc.sizeof() == 256 and BootloaderDesc.sizeof() == 80 and SegmentHeader.sizeof() == 8


def test_spec_minimal_esp32_image_vector():
    """Spec 12.3: one 8-byte DRAM segment, checksum 0xE7 at 0x2F, SHA-256 of bytes 0..0x2F after it."""
    header = bytes.fromhex("e901022000000840ee0000000000000000" + "8f01" + "0000000001")
    body = header + struct.pack("<II", 0x3FFB0000, 8) + bytes(range(1, 9)) + bytes(7) + b"\xe7"
    image_bytes = body + hashlib.sha256(body).digest()
    assert image_bytes[0x30:0x34].hex() == "c734464b"
    image = parse_image(image_bytes)
    assert image.checksum_offset == 0x2F
    assert image.checksum_stored == image.checksum_computed == 0xE7
    assert image.hash_ok and image.image_len == 0x50
    assert image.header.max_chip_rev_full == 399
    assert image.segments[0].kinds == ("BYTE_ACCESSIBLE", "DRAM")


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 31, 32, 33, 1000])
def test_xor_bytes_equals_bytewise_xor(size):
    data = bytes((i * 37 + 11) & 0xFF for i in range(size))
    expected = 0
    for b in data:
        expected ^= b
    assert xor_bytes(memoryview(data)) == expected


def test_c_text_keeps_what_esptool_shows():
    assert c_text(b"v5.2.2\0\0\0") == "v5.2.2"
    assert c_text(b"ab\0cd\0") == "abcd"  # esptool removes NULs, it does not stop at the first


def test_parse_inside_a_flash_view_without_copying(realdata):
    """An image read in place from a merged flash dump: offsets are flash addresses, a limit bounds it."""
    flash = (realdata / "derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin").read_bytes()
    view = memoryview(flash)
    app = parse_image(view, 0x10000, 0x140000)
    assert app.segments[0].file_offset == 0x10000 + 24
    assert app.app_desc is not None and app.checksum_ok and app.hash_ok
    assert app.end == 0x10000 + app.image_len
    assert app.signature_sector_offset == -(-app.end // 4096) * 4096
    boot = parse_image(view, 0x1000, 0x7000)
    assert boot.checksum_ok and boot.chip.name == "esp32"
    with pytest.raises(InputError, match="truncated: segment"):
        parse_image(view, 0x10000, 0x1000)
    with pytest.raises(InputError, match="erased flash"):
        parse_image(view, 0x0)
