"""Build an esp_image from an ELF file, the way ``esptool elf2image`` (esptool 5.6.0) does.

The output is byte-identical to esptool's for ESP32-family chips: the same choice of ELF sections,
the same merging of adjacent sections, the same order of segments (``.flash.appdesc`` first among the
flash-mapped ones, ``.dram0.bootdesc`` first among the RAM ones), the same MMU-page placement of
flash-mapped segments (RAM segments split to fill the gap, else a padding segment at address 0), the
ESP32-only stretch of a flash segment ending less than 0x24 bytes past a page boundary, the same
checksum, appended SHA-256, ELF SHA-256 in the app descriptor and ``--secure-pad`` /
``--secure-pad-v2`` / ``--pad-to-size`` padding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..chips import Chip
from ..errors import InputError
from ..formats.app_desc import APP_DESC_SIZE, ESP_APP_DESC_MAGIC_WORD, AppDesc
from ..formats.image import (
    ESP_CHECKSUM_MAGIC,
    ESP_IMAGE_HEADER_MAGIC,
    ESP_IMAGE_MAX_SEGMENTS,
    HASH_LEN,
    IMAGE_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    WP_PIN_DISABLED,
    ImageHeader,
    SegmentHeader,
)
from .elf import ElfFile
from .reader import xor_bytes

# esptool's --flash-mode names and the header's spi_mode values.
FLASH_MODES = {"qio": 0, "qout": 1, "dio": 2, "dout": 3}

APPDESC_SECTION = ".flash.appdesc"
BOOTDESC_SECTION = ".dram0.bootdesc"
# Where esptool patches the ELF SHA-256 of an app: esp_app_desc_t.app_elf_sha256 at image offset 0xB0.
APP_ELF_SHA256_OFFSET = 0xB0
# ESP32 only: a flash segment must reach at least this far into its last MMU page (old bootloaders did
# not map a page the segment entered by fewer bytes).
ESP32_MIN_LAST_PAGE_BYTES = 0x24
# Bytes that follow the checksum in a signed image: SHA-256 digest, then for Secure Boot V1 a 4-byte
# version, a 64-byte ECDSA signature and 12 bytes of alignment; for V2 the signature sector starts on
# the next page and needs no room here.
SECURE_PAD_TRAILER = {"v1": HASH_LEN + 4 + 64 + 12, "v2": HASH_LEN}
MAX_SEGMENT_LEN = 0x1000000


@dataclass
class _Segment:
    addr: int
    data: bytes | bytearray
    name: str  # the ELF section's name


def size_bytes(text: str) -> int:
    """A size written as esptool accepts it for ``--pad-to-size``: ``<n>MB`` or ``<n>KB``."""
    for suffix, unit in (("MB", 1024 * 1024), ("KB", 1024)):
        if suffix in text:
            number = text[: text.index(suffix)]
            if number.strip().isdigit():
                return int(number) * unit
    raise InputError(f"unknown size {text!r} (write it as <n>MB or <n>KB)")


def _lookup(table: tuple[tuple[str, int], ...], name: str, what: str, chip: Chip) -> int:
    values = dict(table)
    if name not in values:
        raise InputError(
            f"flash {what} {name!r} is not supported by {chip.display} (supported: {', '.join(values)})"
        )
    return values[name]


def _page_size(elf: ElfFile, chip: Chip, flash_mmu_page_size: int | None) -> int:
    """The MMU page size flash-mapped segments are aligned to (esptool's IROM_ALIGN)."""
    configurable = len(chip.mmu_page_sizes) > 1
    default = chip.mmu_page_sizes[-1]
    if flash_mmu_page_size is not None:
        if not configurable:
            return default  # esptool only warns that this chip's page size is fixed
        if flash_mmu_page_size not in chip.mmu_page_sizes:
            valid = ", ".join(f"{size // 1024}KB" for size in chip.mmu_page_sizes)
            raise InputError(f"{flash_mmu_page_size} bytes is not a valid {chip.display} page size ({valid})")
        return flash_mmu_page_size
    appdesc = next((s for s in elf.sections if APPDESC_SECTION in s.name), None)
    if not (configurable and appdesc is not None and chip.should_map(appdesc.addr)):
        return default
    if len(appdesc.data) < APP_DESC_SIZE:
        raise InputError(f"{appdesc.name} is {len(appdesc.data)} bytes, shorter than esp_app_desc_t")
    desc = AppDesc.parse(appdesc.data[:APP_DESC_SIZE])
    if desc.magic_word != ESP_APP_DESC_MAGIC_WORD:
        return default
    if desc.mmu_page_size:  # recorded in the descriptor since ESP-IDF v5.4
        size = 1 << desc.mmu_page_size
        if size not in chip.mmu_page_sizes:
            raise InputError(f"{size} bytes is not a valid {chip.display} page size")
        return size
    # Older apps: the largest page size the descriptor's address (less both headers) is aligned to.
    for size in reversed(chip.mmu_page_sizes):
        if (appdesc.addr - IMAGE_HEADER_SIZE - SEGMENT_HEADER_SIZE) % size == 0:
            return size
    return default


def _merge_adjacent(segments: list[_Segment], chip: Chip) -> list[_Segment]:
    """Merge each section into the one before it when it starts where that one ends, in the same memory."""
    merged: list[_Segment] = []
    previous: _Segment | None = None
    for segment in segments:
        if (
            previous is not None
            and segment.addr == previous.addr + len(previous.data)
            and chip.memory_types(segment.addr) == chip.memory_types(previous.addr)
        ):
            merged[-1].data += segment.data
        else:
            merged.append(_Segment(segment.addr, bytearray(segment.data), segment.name))
        previous = segment
    return merged


def _move_first(segments: list[_Segment], name: str) -> None:
    for index, segment in enumerate(segments):
        if segment.name == name:
            segments.insert(0, segments.pop(index))
            return


class _ImageWriter:
    """Appends segments to the image, keeping the checksum and patching the ELF SHA-256 in."""

    def __init__(self, header_size: int, elf_sha256: bytes | None, elf_sha256_offset: int):
        self.out = bytearray(header_size)
        self.checksum = ESP_CHECKSUM_MAGIC
        self.count = 0
        self.elf_sha256 = elf_sha256
        self.elf_sha256_offset = elf_sha256_offset

    def _patch_elf_sha256(self, data: bytes) -> bytes:
        position = len(self.out)
        offset = self.elf_sha256_offset - position
        if self.elf_sha256 is None or not 0 <= offset < len(data):
            return data
        # esptool compares against the data length (not data + header), as reproduced here.
        if offset < SEGMENT_HEADER_SIZE or offset + HASH_LEN > len(data):
            raise InputError(
                f"cannot place the ELF SHA-256 on a segment boundary (offset {self.elf_sha256_offset:#x})"
            )
        offset -= SEGMENT_HEADER_SIZE
        if any(data[offset : offset + HASH_LEN]):
            raise InputError(
                f"the image bytes at the ELF SHA-256 offset {self.elf_sha256_offset:#x} are not zero"
            )
        return data[:offset] + self.elf_sha256 + data[offset + HASH_LEN :]

    def add(self, addr: int, data: bytes, name: str = "") -> None:
        data = self._patch_elf_sha256(data)
        if len(data) % 4:
            raise InputError(f"segment {name} length {len(data):#x} is not a multiple of 4")
        if len(data) >= MAX_SEGMENT_LEN:
            raise InputError(f"segment {name} length {len(data):#x} exceeds the 16 MB limit")
        self.out += SegmentHeader.build(dict(load_addr=addr, data_len=len(data)))
        self.out += data
        self.checksum ^= xor_bytes(data)
        self.count += 1


def _pad_alignment(position: int, addr: int, page: int) -> int:
    """Data bytes a padding segment needs so that the next segment's data lands on ``addr`` mod page."""
    align_past = addr % page - SEGMENT_HEADER_SIZE
    pad_len = page - position % page + align_past
    if pad_len in (0, page):
        return 0
    pad_len -= SEGMENT_HEADER_SIZE
    if pad_len < 0:
        pad_len += page
    return pad_len


def elf2image(
    elf: ElfFile,
    chip: Chip,
    *,
    flash_mode: str = "qio",
    flash_freq: str | None = None,
    flash_size: str = "1MB",
    min_rev: int = 0,
    min_rev_full: int = 0,
    max_rev_full: int = 0xFFFF,
    secure_pad: str | None = None,
    elf_sha256_offset: int | None = None,
    append_digest: bool = True,
    use_segments: bool = False,
    flash_mmu_page_size: int | None = None,
    pad_to_size: int = 0,
) -> bytes:
    """The esp_image ``esptool --chip <chip> elf2image`` writes for ``elf`` with these options.

    ``secure_pad`` is ``"v1"`` (``--secure-pad``, honoured on the ESP32 only, like esptool) or ``"v2"``
    (``--secure-pad-v2``); ``pad_to_size`` is in bytes (0: no padding).
    """
    if chip.chip_id is None:
        raise InputError(f"{chip.display} images are not supported")
    if secure_pad not in (None, "v1", "v2"):
        raise ValueError(f"secure_pad must be 'v1' or 'v2', not {secure_pad!r}")
    if secure_pad == "v1" and chip.name != "esp32":
        secure_pad = None
    if pad_to_size and not append_digest:
        # esptool 5.6.0 pads from the file position it left after rewriting the segment count (offset 2)
        # in this case, overwriting the header with 0xFF: refuse rather than write that.
        raise InputError("--pad-to-size needs the appended SHA-256 digest (esptool corrupts the header without it)")
    if flash_mode not in FLASH_MODES:
        raise InputError(f"unknown flash mode {flash_mode!r} (choose from {', '.join(FLASH_MODES)})")
    size_bits = _lookup(chip.flash_sizes, flash_size, "size", chip)
    freq_bits = 0 if flash_freq is None else _lookup(chip.flash_freqs, flash_freq, "frequency", chip)
    page = _page_size(elf, chip, flash_mmu_page_size)

    sections = elf.segments if use_segments else elf.sections
    # Like esptool's ImageSegment: every section's data is zero-padded to a multiple of 4 bytes.
    segments = [_Segment(s.addr, bytes(s.data) + bytes(-len(s.data) % 4), s.name) for s in sections]

    elf_sha256 = None
    if elf_sha256_offset:
        elf_sha256 = elf.sha256()
    else:
        elf_sha256_offset = 0
        appdesc = [s for s in segments if APPDESC_SECTION in s.name]
        if appdesc and chip.should_map(appdesc[0].addr):
            elf_sha256, elf_sha256_offset = elf.sha256(), APP_ELF_SHA256_OFFSET

    segments = _merge_adjacent(segments, chip)
    if len(segments) > ESP_IMAGE_MAX_SEGMENTS:
        raise InputError(
            f"invalid segment count {len(segments)} (max {ESP_IMAGE_MAX_SEGMENTS}); "
            "usually a linker script problem"
        )

    by_addr = sorted(segments, key=lambda s: s.addr)
    flash_segments = [s for s in by_addr if chip.should_map(s.addr)]
    ram_segments = [s for s in by_addr if not chip.should_map(s.addr)]
    _move_first(flash_segments, APPDESC_SECTION)
    _move_first(ram_segments, BOOTDESC_SECTION)
    for before, after in zip(flash_segments, flash_segments[1:]):
        if after.addr // page == before.addr // page:
            raise InputError(
                f"segment loaded at {after.addr:#010x} lands in the same {page // 1024} KB flash mapping "
                f"as segment loaded at {before.addr:#010x}; change the linker script to merge sections"
            )

    writer = _ImageWriter(ImageHeader.sizeof(), elf_sha256, elf_sha256_offset)
    for flash_segment in flash_segments:
        while pad_len := _pad_alignment(len(writer.out), flash_segment.addr, page):
            if ram_segments and pad_len > SEGMENT_HEADER_SIZE:
                # Fill the gap with the start of the lowest RAM segment.
                ram = ram_segments[0]
                writer.add(ram.addr, ram.data[:pad_len], ram.name)
                ram.addr += len(ram.data[:pad_len])
                ram.data = ram.data[pad_len:]
                if not ram.data:
                    ram_segments.pop(0)
            else:
                writer.add(0, bytes(pad_len), flash_segment.name)
        data = flash_segment.data
        if chip.name == "esp32":
            reach = (len(writer.out) + SEGMENT_HEADER_SIZE + len(data)) % page
            if reach < ESP32_MIN_LAST_PAGE_BYTES:
                data += bytes(ESP32_MIN_LAST_PAGE_BYTES - reach)
        writer.add(flash_segment.addr, data, flash_segment.name)
    for ram in ram_segments:
        writer.add(ram.addr, ram.data, ram.name)

    if secure_pad:
        if not append_digest:
            raise InputError("secure padding only applies if a SHA-256 digest is also appended")
        align_past = (len(writer.out) + SEGMENT_HEADER_SIZE) % page
        checksum_space = 16
        writer.add(0, bytes((page - align_past - checksum_space - SECURE_PAD_TRAILER[secure_pad]) % page))

    out = writer.out
    out += bytes(15 - len(out) % 16)
    out.append(writer.checksum)
    out[: ImageHeader.sizeof()] = ImageHeader.build(
        dict(
            magic=ESP_IMAGE_HEADER_MAGIC,
            segment_count=writer.count,
            spi_mode=FLASH_MODES[flash_mode],
            spi_size_speed=dict(spi_size=size_bits >> 4, spi_speed=freq_bits),
            entry_addr=elf.entry,
            wp_pin=WP_PIN_DISABLED,
            spi_pin_drv=dict(
                clk_q=dict(q_drv=0, clk_drv=0), d_cs=dict(cs_drv=0, d_drv=0), hd_wp=dict(wp_drv=0, hd_drv=0)
            ),
            chip_id=chip.chip_id,
            min_chip_rev=min_rev,
            min_chip_rev_full=min_rev_full,
            max_chip_rev_full=max_rev_full,
            reserved=bytes(4),
            hash_appended=int(append_digest),
        )
    )
    if append_digest:
        out += hashlib.sha256(out).digest()
    if pad_to_size and len(out) % pad_to_size:
        out += b"\xff" * (pad_to_size - len(out) % pad_to_size)
    return bytes(out)
