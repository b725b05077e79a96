"""Randomly damaged real images: our parser agrees with esptool's image loader (the test-time oracle)
on segments, stored and computed checksum and SHA-256, or both refuse the file."""

from __future__ import annotations

from pathlib import Path

from esptool.bin_image import LoadFirmwareImage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esp_ota_emu.errors import InputError
from esp_ota_emu.image import parse_image

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
IMAGES = [
    "esp-serial-flasher/hello-world_2025-08/ESP32/hello_world.bin",
    "esp-serial-flasher/hello-world_2025-08/ESP32_C6/bootloader.bin",
    "esp-serial-flasher/hello-world_2025-08/ESP32_S3/hello_world.bin",
    "esptool/images/esp_idf_blink_esp32s2.bin",
    "arduino-esp32/v1.0.6_idf-v3.3.5/StartCounter.ino.bin",
]


def esptool_view(chip: str, data: bytes):
    image = LoadFirmwareImage(chip, data)
    segments = [(s.addr, len(s.data), s.file_offs) for s in image.segments]
    digest = (image.stored_digest, image.calc_digest) if image.append_digest else None
    return segments, image.checksum, image.calculate_checksum(), digest


def ours(data: bytes):
    image = parse_image(data, layout="esp32")
    segments = [(s.load_addr, s.length, s.file_offset) for s in image.segments]
    digest = (image.hash_stored, image.hash_computed) if image.hash_appended else None
    return segments, image.checksum_stored, image.checksum_computed, digest


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(IMAGES),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_damaged_images_agree_with_esptool(which, edits):
    data = bytearray((REALDATA / which).read_bytes())
    chip = parse_image(bytes(data)).chip.name
    for where, xor in edits:
        data[24 + int(where * (len(data) - 24))] ^= xor  # anywhere after the image header
    data = bytes(data)
    try:
        expected = esptool_view(chip, data)
    except Exception:  # esptool refuses the file (end of file inside a segment, ...)
        try:
            ours(data)
        except InputError:
            return
        raise AssertionError("esptool refused an image that we parsed")
    raw_lengths = [int.from_bytes(data[offs + 4 : offs + 8], "little") for _, _, offs in expected[0]]
    if any(length % 4 for length in raw_lengths):
        return  # esptool pads odd segment lengths in memory; ESP-IDF rejects such images anyway
    assert ours(data) == expected
