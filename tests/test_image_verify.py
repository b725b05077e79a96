"""verify_image against ESP-IDF's esp_image_verify: error names, reasons, and the order of the checks.

Real images are damaged one field at a time; expected checksums come from esptool's own image loader
(the test-time oracle), never from our parser.
"""

from __future__ import annotations

import struct

import pytest
from esptool.bin_image import LoadFirmwareImage

from esp_ota_emu.errors import EspError
from esp_ota_emu.image import parse_image, verify_image
from esp_ota_emu.image.verify import SBV2_SIGNATURE_LEN
from helpers_flash import rehash

ESP32_APP = "esp-serial-flasher/hello-world_2025-08/ESP32/hello_world.bin"
C3_APP = "esp-serial-flasher/hello-world_2025-08/ESP32_C3/hello_world.bin"
C2_APP = "esp-serial-flasher/hello-world_2025-08/ESP32_C2/hello_world.bin"
ESP32_BOOTLOADER = "esp-serial-flasher/hello-world_2025-08/ESP32/bootloader.bin"
C6_SIGNED = "derived/esp32c6_zb_pzem.sbv2_ecdsa256_signed.bin"
PART = 0x100000


def load(realdata, rel) -> bytearray:
    return bytearray((realdata / rel).read_bytes())


def in_flash(image: bytes, offset: int = 0x10000, size: int = 0x400000) -> bytearray:
    flash = bytearray(b"\xff" * size)
    flash[offset : offset + len(image)] = image
    return flash


@pytest.mark.parametrize("rel", [ESP32_APP, C3_APP, C2_APP, C6_SIGNED])
def test_real_apps_verify_in_a_flash_view(realdata, rel):
    data = load(realdata, rel)
    flash = in_flash(data)
    header = parse_image(bytes(data)).header
    chip = parse_image(bytes(data)).chip
    result = verify_image(memoryview(flash), 0x10000, PART, chip=chip, chip_rev=header.min_chip_rev_full)
    assert result.ok, result.reason
    assert result.esp_err == "ESP_OK"
    assert result.image_len == parse_image(bytes(data)).image_len
    assert result.image.segments[0].file_offset == 0x10000 + 24


def test_flipped_segment_byte_fails_checksum_like_esp_idf(realdata):
    data = load(realdata, ESP32_APP)
    image = parse_image(bytes(data))
    data[image.segments[1].data_offset + 5] ^= 0x40
    calculated = LoadFirmwareImage("esp32", bytes(data)).calculate_checksum()
    result = verify_image(bytes(data), 0, PART)
    assert result.esp_err == "ESP_ERR_IMAGE_INVALID"
    assert result.reason == f"Checksum failed. Calculated 0x{calculated:x} read 0x{image.checksum_stored:x}"
    assert result.image is None and result.image_len == 0
    with pytest.raises(EspError) as err:
        result.raise_for_error()
    assert err.value.esp_err == "ESP_ERR_IMAGE_INVALID" and err.value.code == 0x2002


def test_flipped_byte_with_fixed_checksum_fails_the_hash(realdata):
    data = load(realdata, ESP32_APP)
    image = parse_image(bytes(data))
    pos = image.segments[1].data_offset + 8
    data[pos] ^= 0x01
    data[image.checksum_offset] ^= 0x01  # keep the XOR checksum right
    assert LoadFirmwareImage("esp32", bytes(data)).calculate_checksum() == data[image.checksum_offset]
    result = verify_image(bytes(data), 0, PART)
    assert (result.esp_err, result.reason) == ("ESP_ERR_IMAGE_INVALID", "Image hash failed - image is corrupt")
    # the bootloader's own SHA-256 is not checked at its offset without Secure Boot V2 ...
    assert verify_image(bytes(data), 0, PART, is_bootloader=True).ok
    # ... and is with it
    assert not verify_image(bytes(data), 0, PART, is_bootloader=True, secure_boot="v2").ok


def test_wrong_chip_is_esp_fail(realdata):
    data = bytes(load(realdata, ESP32_APP))
    result = verify_image(data, 0, PART, chip="esp32c3")
    assert (result.esp_err, result.reason) == ("ESP_FAIL", "mismatch chip ID, expected 5, found 0")


def test_chip_revision_range(realdata):
    data = bytes(load(realdata, C3_APP))
    header = parse_image(data).header
    low, high = header.min_chip_rev_full, header.max_chip_rev_full
    assert low == 3 and high == 199
    assert verify_image(data, 0, PART, chip="esp32c3", chip_rev=low).ok
    too_old = verify_image(data, 0, PART, chip="esp32c3", chip_rev=2)
    assert too_old.esp_err == "ESP_FAIL" and too_old.reason == "Image requires chip rev >= v0.3, but chip is v0.2"
    too_new = verify_image(data, 0, PART, chip="esp32c3", chip_rev=200)
    assert too_new.esp_err == "ESP_FAIL" and too_new.reason == "Image requires chip rev <= v1.99, but chip is v2.0"
    assert verify_image(data, 0, PART, chip="esp32c3", chip_rev=200, disable_wafer_version_major=True).ok
    assert verify_image(data, 0, PART, chip="esp32c3", chip_rev=200, is_bootloader=True).ok  # no max for bootloaders


def test_region_checks(realdata):
    data = bytes(load(realdata, ESP32_APP))
    length = parse_image(data).image_len
    assert verify_image(data, 0, length).ok
    small = verify_image(data, 0, length - 1)
    assert small.esp_err == "ESP_ERR_IMAGE_INVALID"
    assert small.reason == f"Image length {length} doesn't fit in partition length {length - 1}"
    huge = verify_image(data, 0, 0x1000001)
    assert (huge.esp_err, huge.reason) == ("ESP_ERR_INVALID_ARG", "partition size 0x1000001 invalid, larger than 16MB")
    # Secure Boot V2 needs room for the padding to 4 KiB plus the 4 KiB signature sector
    needed = -(-length // 4096) * 4096 + SBV2_SIGNATURE_LEN
    assert not verify_image(data, 0, needed - 1, secure_boot="v2").ok
    assert verify_image(data, 0, needed, secure_boot="v2").ok


def test_header_checks_in_esp_idf_order(realdata):
    data = load(realdata, ESP32_APP)
    erased = verify_image(b"\xff" * 0x2000, 0, 0x2000)
    assert erased.esp_err == "ESP_ERR_IMAGE_INVALID"
    assert erased.reason == "image at 0x0 has invalid magic byte (nothing flashed here?)"
    many = bytearray(data)
    many[1] = 17
    result = verify_image(bytes(many), 0, PART)
    assert result.reason == "image at 0x0 segment count 17 exceeds max 16"
    many[12] = 5  # the chip id is checked before the segment count: ESP_FAIL wins
    assert verify_image(bytes(many), 0, PART, chip="esp32").esp_err == "ESP_FAIL"


def test_segment_checks(realdata):
    data = load(realdata, ESP32_APP)
    image = parse_image(bytes(data))
    drom = image.segments[0]
    odd = bytearray(data)
    struct.pack_into("<I", odd, drom.file_offset + 4, drom.length + 2)
    assert verify_image(bytes(odd), 0, PART).reason == f"invalid segment length 0x{drom.length + 2:x}"
    moved = bytearray(data)
    struct.pack_into("<I", moved, drom.file_offset, drom.load_addr + 4)
    assert verify_image(bytes(moved), 0, PART).reason == (
        f"Segment 0 load address 0x{drom.load_addr + 4:08x}, doesn't match data 0x{drom.data_offset:08x}"
    )
    short = verify_image(b"\xe9\x01" + bytes(data[2:24]) + struct.pack("<II", 0x3FFB0000, 16) + bytes(32), 0, PART)
    assert short.reason == "Segment 0: length 0x10 is too short for app description"


def test_load_addresses_checked_only_when_loading(realdata):
    data = load(realdata, ESP32_APP)
    image = parse_image(bytes(data))
    ram = next(s for s in image.segments if "IRAM" in s.kinds)
    struct.pack_into("<I", data, ram.file_offset, 0x60000000)
    rehash(data)
    assert verify_image(bytes(data), 0, PART).ok
    result = verify_image(bytes(data), 0, PART, load=True)
    end = 0x60000000 + ram.length
    assert result.reason == f"Segment {ram.index} 0x60000000-0x{end:08x} invalid: bad load address range"


def test_configurable_mmu_chips_need_the_app_description(realdata):
    data = load(realdata, C2_APP)
    assert verify_image(bytes(data), 0, PART).ok  # v5.2 app for 32 KiB pages, descriptor without the size
    data[0x20] ^= 0xFF  # break the magic word
    result = verify_image(bytes(data), 0, PART)
    assert (result.esp_err, result.reason) == ("ESP_FAIL", "Failed to fetch app description header!")
    assert not verify_image(bytes(load(realdata, C2_APP)), 0, PART, mmu_page_size=0x10000).ok


def test_efuse_block_revision(realdata):
    data = bytearray(load(realdata, C3_APP))
    struct.pack_into("<HH", data, 0x20 + 176, 100, 199)  # needs eFuse block rev v1.0 .. v1.99
    image = parse_image(bytes(data))
    data[image.checksum_offset] = image.checksum_computed
    rehash(data)
    assert verify_image(bytes(data), 0, PART).ok  # not checked without an eFuse revision
    low = verify_image(bytes(data), 0, PART, efuse_blk_rev=99)
    assert (low.esp_err, low.reason) == ("ESP_FAIL", "Image requires efuse blk rev >= v1.0, but chip is v0.99")
    assert verify_image(bytes(data), 0, PART, efuse_blk_rev=150).ok
    assert verify_image(bytes(data), 0, PART, efuse_blk_rev=200).esp_err == "ESP_FAIL"


def test_truncated_region_is_image_invalid(realdata):
    data = bytes(load(realdata, ESP32_APP))
    result = verify_image(data[:5000], 0, PART)
    assert result.esp_err == "ESP_ERR_IMAGE_INVALID" and result.reason.startswith("truncated: segment 0")


def test_signature_check_hook(realdata):
    data = bytes(load(realdata, C6_SIGNED))
    image = parse_image(data)
    seen = []

    def accept(img, view, offset):
        seen.append((img.end, offset, bytes(view[img.signature_sector_offset : img.signature_sector_offset + 1])))
        return None

    result = verify_image(data, 0, len(data), secure_boot="v2", signature_check=accept)
    assert result.ok and seen == [(image.end, 0, b"\xe7")]
    assert result.image_len == image.signature_sector_offset + SBV2_SIGNATURE_LEN
    rejected = verify_image(data, 0, len(data), secure_boot="v2", signature_check=lambda *a: "no key matches")
    assert rejected.esp_err == "ESP_ERR_IMAGE_INVALID"
    assert rejected.reason == "Secure boot signature verification failed: no key matches"
