"""Read an ``esp_image`` (app or bootloader) out of any buffer: a file's bytes, an mmap, a flash view.

The walk is ESP-IDF's (``process_image_header`` / ``process_segments`` / ``process_checksum`` /
``process_appended_hash``): a 24-byte header, ``segment_count`` segments of an 8-byte header plus data,
zero padding up to the checksum byte which ends a 16-byte block, then the optional SHA-256 of everything
before it. Nothing is copied whole: checksum and hash run over memoryview slices.

Every offset in the result is an offset into the buffer (the image starts at ``EspImage.offset``), so a
flash dump gives flash addresses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterator

from construct import Container

from ..chips import ESP8266, Chip, find_chip_by_id
from ..errors import InputError
from ..formats.app_desc import APP_DESC_OFFSET, APP_DESC_SIZE, ESP_APP_DESC_MAGIC_WORD, AppDesc
from ..formats.bootloader_desc import BOOTLOADER_DESC_SIZE, ESP_BOOTLOADER_DESC_MAGIC_BYTE, BootloaderDesc
from ..formats.image import (
    COMMON_HEADER_SIZE,
    ESP_CHECKSUM_MAGIC,
    ESP_IMAGE_HEADER_MAGIC,
    ESP_IMAGE_MAX_SEGMENTS,
    HASH_LEN,
    IMAGE_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    CommonImageHeader,
    ImageHeader,
)

SECTOR_SIZE = 0x1000
ESP8266_V2_MAGIC = 0xEA

# ``sha256(start, length)``: the SHA-256 of ``length`` bytes at ``start`` of the buffer being read (a
# flash offers one that reuses what it hashed while the bytes were written).
Sha256Of = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Segment:
    """One segment: where its header sits in the buffer, where it loads, and what memory that is."""

    index: int
    load_addr: int
    length: int
    file_offset: int  # offset of the 8-byte segment header
    kinds: tuple[str, ...] = ()  # esptool's memory type names for load_addr on this chip

    @property
    def data_offset(self) -> int:
        return self.file_offset + SEGMENT_HEADER_SIZE

    @property
    def end(self) -> int:
        return self.data_offset + self.length


@dataclass(frozen=True)
class EspImage:
    """A parsed image. ``image_len`` is ESP-IDF's: header, segments, checksum padding and the hash."""

    offset: int
    header: Container
    chip: Chip | None  # None: the header's chip id is unknown to ESP-IDF
    esp8266: bool  # 8-byte ESP8266 header (no extended header, no hash)
    segments: tuple[Segment, ...]
    checksum_offset: int
    checksum_stored: int
    checksum_computed: int
    hash_stored: bytes | None
    hash_computed: bytes | None
    image_len: int
    app_desc: Container | None = None
    bootloader_desc: Container | None = None

    @property
    def hash_appended(self) -> bool:
        return self.hash_stored is not None

    @property
    def checksum_ok(self) -> bool:
        return self.checksum_stored == self.checksum_computed

    @property
    def hash_ok(self) -> bool | None:
        """SHA-256 check of the appended digest; None when the image has none."""
        return None if self.hash_stored is None else self.hash_stored == self.hash_computed

    @property
    def end(self) -> int:
        """Buffer offset just past the image (past the hash when one is appended)."""
        return self.offset + self.image_len

    @property
    def signature_sector_offset(self) -> int:
        """Where a Secure Boot V2 signature sector starts: the image end rounded up to 4 KiB."""
        return align_up(self.end, SECTOR_SIZE)


def align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def describe_non_image(first: bytes) -> str:
    """A one-line reason why bytes starting with ``first`` are not an ESP image."""
    if not first:
        return "not an ESP image: the input is empty"
    b0 = first[0]
    shown = chr(b0) if 0x20 <= b0 < 0x7F else ""
    what = f"first byte 0x{b0:02x}" + (f" {shown!r}" if shown else "")
    stripped = first.lstrip()
    if stripped[:1] == b"<":
        hint = "looks like an HTML page" if b"html" in stripped[:64].lower() else "looks like HTML/XML text"
    elif first[:4] == b"\x7fELF":
        hint = "an ELF file: convert it with esptool elf2image first"
    elif first[:2] == b"\xaa\x50":
        hint = "looks like a partition table"
    elif first[:2] == b"PK":
        hint = "looks like a zip archive"
    elif stripped[:1] in (b"{", b"["):
        hint = "looks like JSON text"
    elif b0 == 0xFF:
        hint = "erased flash: nothing written here"
    elif b0 == ESP8266_V2_MAGIC:
        hint = "an ESP8266 V2 (OTA) image, not supported"
    elif all(0x09 <= c < 0x7F for c in first[:16]):
        hint = "looks like text"
    else:
        hint = f"an ESP image starts with 0x{ESP_IMAGE_HEADER_MAGIC:02x}"
    return f"not an ESP image: {what} ({hint})"


def as_view(buf) -> memoryview:
    """A flat byte view of any buffer-protocol object, without copying it."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def need(end: int, offset: int, size: int, what: str) -> None:
    """InputError unless ``size`` bytes at ``offset`` lie before ``end``."""
    if offset + size > end:
        raise InputError(f"truncated: {what} needs 0x{size:x} bytes at 0x{offset:x}, file ends at 0x{end:x}")


def iter_segment_headers(view: memoryview, first: int, count: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Walk ``count`` segment headers from ``first`` like ``process_segments``: yields
    ``(index, header_offset, load_addr, data_len)``; the caller decides what to check before the data."""
    pos = first
    for index in range(count):
        need(end, pos, SEGMENT_HEADER_SIZE, f"segment {index} header")
        load_addr = int.from_bytes(view[pos : pos + 4], "little")
        data_len = int.from_bytes(view[pos + 4 : pos + 8], "little")
        yield index, pos, load_addr, data_len
        pos += SEGMENT_HEADER_SIZE + data_len


def xor_bytes(data) -> int:
    """XOR of every byte of ``data`` (any buffer; numpy reduces it in place, without a copy)."""
    import numpy  # here, not at the top: only commands that checksum image data pay for its import

    return int(numpy.bitwise_xor.reduce(numpy.frombuffer(data, dtype=numpy.uint8)))


def checksum_of(view: memoryview, segments: tuple[Segment, ...] | list[Segment]) -> int:
    """The ROM checksum: 0xEF XOR every segment data byte (headers excluded)."""
    checksum = ESP_CHECKSUM_MAGIC
    for seg in segments:
        checksum ^= xor_bytes(view[seg.data_offset : seg.end])
    return checksum


def read_app_desc(view: memoryview, start: int, segment_len: int) -> Container | None:
    """``esp_app_desc_t`` at the start of segment data at ``start`` (ESP-IDF reads the first segment's,
    image offset 0x20); None when the segment is too short or does not start with the magic word."""
    if segment_len < APP_DESC_SIZE or len(view) < start + APP_DESC_SIZE:
        return None
    if int.from_bytes(view[start : start + 4], "little") != ESP_APP_DESC_MAGIC_WORD:
        return None
    return AppDesc.parse(bytes(view[start : start + APP_DESC_SIZE]))


def read_bootloader_desc(view: memoryview, start: int, segment_len: int) -> Container | None:
    """``esp_bootloader_desc_t`` at the start of segment data at ``start`` (image offset 0x20 for ESP-IDF),
    None when the segment is too short or the magic byte is absent."""
    if segment_len < BOOTLOADER_DESC_SIZE or len(view) < start + BOOTLOADER_DESC_SIZE:
        return None
    if view[start] != ESP_BOOTLOADER_DESC_MAGIC_BYTE:
        return None
    return BootloaderDesc.parse(bytes(view[start : start + BOOTLOADER_DESC_SIZE]))


def _has_extended_header(view: memoryview, offset: int, end: int) -> bool:
    """esptool's auto-detection: an ESP32-family header has hash_appended 0/1 and a known chip id;
    anything else is read as an ESP8266 image."""
    if offset + IMAGE_HEADER_SIZE > end or view[offset + 23] not in (0, 1):
        return False
    return find_chip_by_id(int.from_bytes(view[offset + 12 : offset + 14], "little")) is not None


def parse_image(
    buf, offset: int = 0, limit: int | None = None, *, layout: str = "auto", sha256: Sha256Of | None = None
) -> EspImage:
    """Parse the image at ``offset`` of ``buf`` (reading at most ``limit`` bytes).

    ``layout``: "esp32" (24-byte header, what ESP-IDF always reads), "esp8266" (8-byte header) or
    "auto" (esptool's guess). ``sha256`` computes the appended hash's digest over ``buf`` (default:
    hashlib over the buffer). Raises InputError for anything that cannot be read as an image.
    """
    view = as_view(buf)
    end = len(view) if limit is None else min(len(view), offset + limit)
    if offset >= end or view[offset] != ESP_IMAGE_HEADER_MAGIC:
        raise InputError(describe_non_image(bytes(view[offset : min(end, offset + 64)])))
    if layout == "auto":
        layout = "esp32" if _has_extended_header(view, offset, end) else "esp8266"
    esp8266 = layout == "esp8266"
    header_size = COMMON_HEADER_SIZE if esp8266 else IMAGE_HEADER_SIZE
    need(end, offset, header_size, "the image header")
    header = (CommonImageHeader if esp8266 else ImageHeader).parse(bytes(view[offset : offset + header_size]))
    if header.segment_count > ESP_IMAGE_MAX_SEGMENTS:
        raise InputError(f"invalid image: {header.segment_count} segments (at most {ESP_IMAGE_MAX_SEGMENTS})")
    chip = ESP8266 if esp8266 else find_chip_by_id(header.chip_id)

    segments = []
    for index, pos, load_addr, data_len in iter_segment_headers(
        view, offset + header_size, header.segment_count, end
    ):
        need(end, pos + SEGMENT_HEADER_SIZE, data_len, f"segment {index}")
        kinds = tuple(chip.memory_types(load_addr)) if chip else ()
        segments.append(Segment(index, load_addr, data_len, pos, kinds))
    data_end = segments[-1].end if segments else offset + header_size

    # Zero padding up to the checksum byte, which ends a 16-byte block of the image.
    checksum_offset = data_end + (15 - (data_end - offset) % 16)
    need(end, checksum_offset, 1, "the checksum")
    hash_stored = hash_computed = None
    if not esp8266 and header.hash_appended:
        need(end, checksum_offset + 1, HASH_LEN, "the appended SHA-256")
        hash_stored = bytes(view[checksum_offset + 1 : checksum_offset + 1 + HASH_LEN])
        if sha256 is None:
            hash_computed = hashlib.sha256(view[offset : checksum_offset + 1]).digest()
        else:
            hash_computed = sha256(offset, checksum_offset + 1 - offset)
    image_len = checksum_offset + 1 - offset + (HASH_LEN if hash_stored is not None else 0)

    first_len = segments[0].length if segments else 0
    first_data = offset + APP_DESC_OFFSET
    return EspImage(
        offset=offset,
        header=header,
        chip=chip,
        esp8266=esp8266,
        segments=tuple(segments),
        checksum_offset=checksum_offset,
        checksum_stored=view[checksum_offset],
        checksum_computed=checksum_of(view, segments),
        hash_stored=hash_stored,
        hash_computed=hash_computed,
        image_len=image_len,
        app_desc=None if esp8266 else read_app_desc(view, first_data, first_len),
        bootloader_desc=None if esp8266 else read_bootloader_desc(view, first_data, first_len),
    )
