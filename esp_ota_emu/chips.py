"""The ESP chip table: ids, bootloader offsets, memory maps and security features of every ESP-IDF target.

``chip_id`` is ``esp_chip_id_t`` (image header bytes 12-13). ``memory_map`` is the list of named address
ranges esptool uses to label image segments ("DRAM, BYTE_ACCESSIBLE", order matters: esptool prints them
in table order). ``irom``/``drom`` are the flash-mapped windows ESP-IDF's ``should_map()`` tests
(``SOC_IROM_LOW/HIGH``, ``SOC_DROM_LOW/HIGH``); segments there must satisfy the MMU page alignment rule.
RAM regions (DRAM, IRAM, RTC memories) are the ranges a bootloader may load segments into.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

Range = tuple[int, int]
MemoryRange = tuple[int, int, str]

# Flash size nibble (high nibble of header byte 3) as esptool names it; the same on every ESP32 chip.
FLASH_SIZES: tuple[tuple[str, int], ...] = (
    ("1MB", 0x00),
    ("2MB", 0x10),
    ("4MB", 0x20),
    ("8MB", 0x30),
    ("16MB", 0x40),
    ("32MB", 0x50),
    ("64MB", 0x60),
    ("128MB", 0x70),
)

# Flash frequency nibbles (low nibble of header byte 3).
_FREQ_80 = (("80m", 0xF), ("40m", 0x0), ("26m", 0x1), ("20m", 0x2))
_FREQ_80_NO26 = (("80m", 0xF), ("40m", 0x0), ("20m", 0x2))
_FREQ_48 = (("48m", 0xF), ("24m", 0x0), ("16m", 0x1), ("12m", 0x2))


@dataclass(frozen=True)
class Chip:
    """One ESP-IDF target."""

    name: str  # "esp32c3", as in IDF_TARGET
    display: str  # "ESP32-C3"
    chip_id: int | None  # esp_chip_id_t; None for the ESP8266 (its images have no extended header)
    bootloader_offset: int  # BOOTLOADER_FLASH_OFFSET / CONFIG_BOOTLOADER_OFFSET_IN_FLASH
    memory_map: tuple[MemoryRange, ...]
    irom: Range
    drom: Range
    flash_freqs: tuple[tuple[str, int], ...]
    ram_regions: tuple[Range, ...] = ()  # SOC_DRAM, SOC_IRAM, RTC fast/slow, SPM ranges (ESP-IDF soc.h)
    extram: Range = (0, 0)  # SOC_EXTRAM, flash-mapped too on chips with a per-target MMU
    flash_sizes: tuple[tuple[str, int], ...] = FLASH_SIZES
    mmu_page_sizes: tuple[int, ...] = (0x10000,)  # configurable CONFIG_MMU_PAGE_SIZE values
    secure_boot_schemes: tuple[str, ...] = ()  # SOC_SECURE_BOOT_V2_RSA/ECC (+ P-384) and ESP32's V1
    efuse_secure_version_bits: int = 16  # width of the SECURE_VERSION eFuse field
    flash_encryption: str = "xts-aes"
    qemu_machine: str | None = None

    def memory_types(self, addr: int) -> list[str]:
        """Names of every memory-map range holding ``addr``, in table order (esptool's segment kinds)."""
        return [kind for start, end, kind in self.memory_map if start <= addr < end]

    def flash_freq_name(self, nibble: int) -> str | None:
        """The first frequency name whose nibble is ``nibble`` (esptool's lookup), None if there is none."""
        return next((name for name, value in self.flash_freqs if value == nibble), None)

    def flash_size_name(self, bits: int) -> str | None:
        """Name of the flash size encoded in the high nibble ``bits`` (0x00..0xF0)."""
        return next((name for name, value in self.flash_sizes if value == bits), None)

    def should_map(self, addr: int) -> bool:
        """ESP-IDF ``should_map()``: the address lies in the flash-mapped IROM, DROM or external RAM window."""
        return any(lo <= addr < hi for lo, hi in (self.irom, self.drom, self.extram))

    def in_ram(self, start: int, end: int) -> bool:
        """``verify_load_addresses()`` region test: ``[start, end)`` lies entirely inside one RAM region."""
        return any(lo <= start and end <= hi for lo, hi in self.ram_regions)


_PAD = (0x0, 0x10000, "PADDING")

CHIPS: tuple[Chip, ...] = (
    Chip(
        name="esp32",
        display="ESP32",
        chip_id=0x0000,
        bootloader_offset=0x1000,
        memory_map=(
            _PAD,
            (0x3F400000, 0x3F800000, "DROM"),
            (0x3F800000, 0x3FC00000, "EXTRAM_DATA"),
            (0x3FF80000, 0x3FF82000, "RTC_DRAM"),
            (0x3FF90000, 0x40000000, "BYTE_ACCESSIBLE"),
            (0x3FFAE000, 0x40000000, "DRAM"),
            (0x3FFE0000, 0x3FFFFFFC, "DIRAM_DRAM"),
            (0x40000000, 0x40070000, "IROM"),
            (0x40070000, 0x40078000, "CACHE_PRO"),
            (0x40078000, 0x40080000, "CACHE_APP"),
            (0x40080000, 0x400A0000, "IRAM"),
            (0x400A0000, 0x400BFFFC, "DIRAM_IRAM"),
            (0x400C0000, 0x400C2000, "RTC_IRAM"),
            (0x400D0000, 0x40400000, "IROM"),
            (0x50000000, 0x50002000, "RTC_DATA"),
        ),
        irom=(0x400D0000, 0x40400000),
        drom=(0x3F400000, 0x3F800000),
        ram_regions=((0x3FFAE000, 0x40000000), (0x40080000, 0x400AA000), (0x400C0000, 0x400C2000), (0x3FF80000, 0x3FF82000), (0x50000000, 0x50002000)),
        flash_freqs=_FREQ_80,
        secure_boot_schemes=("sbv1", "rsa3072"),
        efuse_secure_version_bits=32,
        flash_encryption="aes256-tweak",
        qemu_machine="esp32",
    ),
    Chip(
        name="esp32s2",
        display="ESP32-S2",
        chip_id=0x0002,
        bootloader_offset=0x1000,
        memory_map=(
            _PAD,
            (0x3F000000, 0x3FF80000, "DROM"),
            (0x3F500000, 0x3FF80000, "EXTRAM_DATA"),
            (0x3FF9E000, 0x3FFA0000, "RTC_DRAM"),
            (0x3FF9E000, 0x40000000, "BYTE_ACCESSIBLE"),
            (0x3FF9E000, 0x40072000, "MEM_INTERNAL"),
            (0x3FFB0000, 0x40000000, "DRAM"),
            (0x40000000, 0x4001A100, "IROM_MASK"),
            (0x40020000, 0x40070000, "IRAM"),
            (0x40070000, 0x40072000, "RTC_IRAM"),
            (0x40080000, 0x40800000, "IROM"),
            (0x50000000, 0x50002000, "RTC_DATA"),
        ),
        irom=(0x40080000, 0x40800000),
        drom=(0x3F000000, 0x3FF80000),
        ram_regions=((0x3FFB0000, 0x40000000), (0x40020000, 0x40070000), (0x40070000, 0x40072000), (0x3FF9E000, 0x3FFA0000), (0x50000000, 0x50002000)),
        flash_freqs=_FREQ_80,
        secure_boot_schemes=("rsa3072",),
    ),
    Chip(
        name="esp32s3",
        display="ESP32-S3",
        chip_id=0x0009,
        bootloader_offset=0x0,
        memory_map=(
            _PAD,
            (0x3C000000, 0x3D000000, "DROM"),
            (0x3D000000, 0x3E000000, "EXTRAM_DATA"),
            (0x600FE000, 0x60100000, "RTC_DRAM"),
            (0x3FC88000, 0x3FD00000, "BYTE_ACCESSIBLE"),
            (0x3FC88000, 0x403E2000, "MEM_INTERNAL"),
            (0x3FC88000, 0x3FD00000, "DRAM"),
            (0x40000000, 0x4001A100, "IROM_MASK"),
            (0x40370000, 0x403E0000, "IRAM"),
            (0x600FE000, 0x60100000, "RTC_IRAM"),
            (0x42000000, 0x42800000, "IROM"),
            (0x50000000, 0x50002000, "RTC_DATA"),
        ),
        irom=(0x42000000, 0x44000000),
        drom=(0x3C000000, 0x3E000000),
        ram_regions=((0x3FC88000, 0x3FD00000), (0x40370000, 0x403E0000), (0x600FE000, 0x60100000), (0x50000000, 0x50002000)),
        flash_freqs=_FREQ_80,
        secure_boot_schemes=("rsa3072",),
        qemu_machine="esp32s3",
    ),
    Chip(
        name="esp32c3",
        display="ESP32-C3",
        chip_id=0x0005,
        bootloader_offset=0x0,
        memory_map=(
            _PAD,
            (0x3C000000, 0x3C800000, "DROM"),
            (0x3FC80000, 0x3FCE0000, "DRAM"),
            (0x3FC88000, 0x3FD00000, "BYTE_ACCESSIBLE"),
            (0x3FF00000, 0x3FF20000, "DROM_MASK"),
            (0x40000000, 0x40060000, "IROM_MASK"),
            (0x42000000, 0x42800000, "IROM"),
            (0x4037C000, 0x403E0000, "IRAM"),
            (0x50000000, 0x50002000, "RTC_IRAM"),
            (0x50000000, 0x50002000, "RTC_DRAM"),
            (0x600FE000, 0x60100000, "MEM_INTERNAL2"),
        ),
        irom=(0x42000000, 0x42800000),
        drom=(0x3C000000, 0x3C800000),
        ram_regions=((0x3FC80000, 0x3FCE0000), (0x4037C000, 0x403E0000), (0x50000000, 0x50002000)),
        flash_freqs=_FREQ_80,
        secure_boot_schemes=("rsa3072",),
        qemu_machine="esp32c3",
    ),
    Chip(
        name="esp32c2",
        display="ESP32-C2",
        chip_id=0x000C,
        bootloader_offset=0x0,
        memory_map=(
            _PAD,
            (0x3C000000, 0x3C400000, "DROM"),
            (0x3FCA0000, 0x3FCE0000, "DRAM"),
            (0x3FC88000, 0x3FD00000, "BYTE_ACCESSIBLE"),
            (0x3FF00000, 0x3FF50000, "DROM_MASK"),
            (0x40000000, 0x40090000, "IROM_MASK"),
            (0x42000000, 0x42400000, "IROM"),
            (0x4037C000, 0x403C0000, "IRAM"),
        ),
        irom=(0x42000000, 0x42400000),
        drom=(0x3C000000, 0x3C400000),
        ram_regions=((0x3FCA0000, 0x3FCE0000), (0x4037C000, 0x403C0000)),
        flash_freqs=(("60m", 0xF), ("30m", 0x0), ("20m", 0x1), ("15m", 0x2)),
        mmu_page_sizes=(0x4000, 0x8000, 0x10000),
        secure_boot_schemes=("ecdsa192", "ecdsa256"),
        efuse_secure_version_bits=4,
    ),
    Chip(
        name="esp32c6",
        display="ESP32-C6",
        chip_id=0x000D,
        bootloader_offset=0x0,
        memory_map=(
            _PAD,
            (0x42000000, 0x43000000, "DROM"),
            (0x40800000, 0x40880000, "DRAM"),
            (0x40800000, 0x40880000, "BYTE_ACCESSIBLE"),
            (0x4004AC00, 0x40050000, "DROM_MASK"),
            (0x40000000, 0x4004AC00, "IROM_MASK"),
            (0x42000000, 0x43000000, "IROM"),
            (0x40800000, 0x40880000, "IRAM"),
            (0x50000000, 0x50004000, "RTC_IRAM"),
            (0x50000000, 0x50004000, "RTC_DRAM"),
            (0x600FE000, 0x60100000, "MEM_INTERNAL2"),
        ),
        irom=(0x42000000, 0x43000000),
        drom=(0x42000000, 0x43000000),
        ram_regions=((0x40800000, 0x40880000), (0x50000000, 0x50004000)),
        # esptool maps both "80m" and "40m" to nibble 0 on the C6 and looks up the first: "80m".
        flash_freqs=(("80m", 0x0), ("40m", 0x0), ("20m", 0x2)),
        mmu_page_sizes=(0x2000, 0x4000, 0x8000, 0x10000),
        secure_boot_schemes=("rsa3072", "ecdsa192", "ecdsa256"),
    ),
    Chip(
        name="esp32c61",
        display="ESP32-C61",
        chip_id=0x0014,
        bootloader_offset=0x0,
        memory_map=(
            _PAD,
            (0x42000000, 0x44000000, "DROM"),
            (0x40800000, 0x40860000, "DRAM"),
            (0x40800000, 0x40860000, "BYTE_ACCESSIBLE"),
            (0x4004AC00, 0x40050000, "DROM_MASK"),
            (0x40000000, 0x4004AC00, "IROM_MASK"),
            (0x42000000, 0x44000000, "IROM"),
            (0x40800000, 0x40860000, "IRAM"),
            (0x50000000, 0x50004000, "RTC_IRAM"),
            (0x50000000, 0x50004000, "RTC_DRAM"),
            (0x600FE000, 0x60100000, "MEM_INTERNAL2"),
        ),
        irom=(0x42000000, 0x44000000),
        drom=(0x42000000, 0x44000000),
        ram_regions=((0x40800000, 0x40850000),),
        flash_freqs=_FREQ_80_NO26,
        mmu_page_sizes=(0x2000, 0x4000, 0x8000, 0x10000),
        secure_boot_schemes=("ecdsa192", "ecdsa256"),
    ),
    Chip(
        name="esp32c5",
        display="ESP32-C5",
        chip_id=0x0017,
        bootloader_offset=0x2000,
        memory_map=(
            _PAD,
            (0x42000000, 0x44000000, "DROM"),
            (0x40800000, 0x40860000, "DRAM"),
            (0x40800000, 0x40860000, "BYTE_ACCESSIBLE"),
            (0x4003A000, 0x40040000, "DROM_MASK"),
            (0x40000000, 0x4003A000, "IROM_MASK"),
            (0x42000000, 0x44000000, "IROM"),
            (0x40800000, 0x40860000, "IRAM"),
            (0x50000000, 0x50004000, "RTC_IRAM"),
            (0x50000000, 0x50004000, "RTC_DRAM"),
            (0x600FE000, 0x60100000, "MEM_INTERNAL2"),
        ),
        irom=(0x42000000, 0x44000000),
        drom=(0x42000000, 0x44000000),
        ram_regions=((0x40800000, 0x40860000), (0x50000000, 0x50004000)),
        flash_freqs=_FREQ_80_NO26,
        secure_boot_schemes=("rsa3072", "ecdsa192", "ecdsa256", "ecdsa384"),
        efuse_secure_version_bits=9,
    ),
    Chip(
        name="esp32h2",
        display="ESP32-H2",
        chip_id=0x0010,
        bootloader_offset=0x0,
        memory_map=(
            _PAD,
            (0x42000000, 0x43000000, "DROM"),
            (0x40800000, 0x40880000, "DRAM"),
            (0x40800000, 0x40880000, "BYTE_ACCESSIBLE"),
            (0x4004AC00, 0x40050000, "DROM_MASK"),
            (0x40000000, 0x4004AC00, "IROM_MASK"),
            (0x42000000, 0x43000000, "IROM"),
            (0x40800000, 0x40880000, "IRAM"),
            (0x50000000, 0x50004000, "RTC_IRAM"),
            (0x50000000, 0x50004000, "RTC_DRAM"),
            (0x600FE000, 0x60100000, "MEM_INTERNAL2"),
        ),
        irom=(0x42000000, 0x43000000),
        drom=(0x42000000, 0x43000000),
        ram_regions=((0x40800000, 0x40850000), (0x50000000, 0x50001000)),
        flash_freqs=_FREQ_48,
        mmu_page_sizes=(0x2000, 0x4000, 0x8000, 0x10000),
        secure_boot_schemes=("rsa3072", "ecdsa192", "ecdsa256"),
    ),
    Chip(
        name="esp32p4",
        display="ESP32-P4",
        chip_id=0x0012,
        bootloader_offset=0x2000,
        memory_map=(
            _PAD,
            (0x40000000, 0x4C000000, "DROM"),
            (0x4FF00000, 0x4FFA0000, "DRAM"),
            (0x4FF00000, 0x4FFA0000, "BYTE_ACCESSIBLE"),
            (0x4FC00000, 0x4FC20000, "DROM_MASK"),
            (0x4FC00000, 0x4FC20000, "IROM_MASK"),
            (0x40000000, 0x4C000000, "IROM"),
            (0x4FF00000, 0x4FFA0000, "IRAM"),
            (0x50108000, 0x50110000, "RTC_IRAM"),
            (0x50108000, 0x50110000, "RTC_DRAM"),
            (0x600FE000, 0x60100000, "MEM_INTERNAL2"),
        ),
        irom=(0x40000000, 0x44000000),
        drom=(0x40000000, 0x44000000),
        ram_regions=((0x4FF00000, 0x4FFC0000), (0x50108000, 0x50110000), (0x30100000, 0x30102000)),
        extram=(0x48000000, 0x4C000000),
        flash_freqs=_FREQ_80,
        secure_boot_schemes=("rsa3072", "ecdsa192", "ecdsa256", "ecdsa384"),
    ),
    Chip(
        name="esp32h21",
        display="ESP32-H21",
        chip_id=0x0019,
        bootloader_offset=0x0,
        memory_map=(
            _PAD,
            (0x42000000, 0x43000000, "DROM"),
            (0x40800000, 0x40850000, "DRAM"),
            (0x40800000, 0x40850000, "BYTE_ACCESSIBLE"),
            (0x40000000, 0x40020000, "DROM_MASK"),
            (0x40000000, 0x40020000, "IROM_MASK"),
            (0x42000000, 0x43000000, "IROM"),
            (0x40800000, 0x40850000, "IRAM"),
            (0x50000000, 0x50001000, "RTC_IRAM"),
            (0x50000000, 0x50001000, "RTC_DRAM"),
            (0x40800000, 0x40850000, "MEM_INTERNAL"),
        ),
        irom=(0x42000000, 0x43000000),
        drom=(0x42000000, 0x43000000),
        ram_regions=((0x40800000, 0x40850000), (0x50000000, 0x50001000)),
        flash_freqs=(("48m", 0xF), ("24m", 0x0)),
        mmu_page_sizes=(0x2000, 0x4000, 0x8000, 0x10000),
        secure_boot_schemes=("rsa3072",),
    ),
    Chip(
        name="esp32h4",
        display="ESP32-H4",
        chip_id=0x001C,
        bootloader_offset=0x2000,
        memory_map=(
            _PAD,
            (0x42000000, 0x44000000, "DROM"),
            (0x40810000, 0x40860000, "DRAM"),
            (0x40810000, 0x40860000, "BYTE_ACCESSIBLE"),
            (0x40000000, 0x40020000, "DROM_MASK"),
            (0x40000000, 0x40020000, "IROM_MASK"),
            (0x42000000, 0x44000000, "IROM"),
            (0x40810000, 0x40860000, "IRAM"),
            (0x40810000, 0x40860000, "MEM_INTERNAL"),
        ),
        irom=(0x42000000, 0x44000000),
        drom=(0x42000000, 0x44000000),
        ram_regions=((0x40810000, 0x40860000), (0x50000000, 0x50004000)),
        flash_freqs=(("48m", 0xF), ("24m", 0x0)),
        mmu_page_sizes=(0x2000, 0x4000, 0x8000, 0x10000),
    ),
)

# The ESP8266: no extended header, no chip id; esptool falls back to it for headers it cannot place.
ESP8266 = Chip(
    name="esp8266",
    display="ESP8266",
    chip_id=None,
    bootloader_offset=0x0,
    memory_map=(
        (0x3FF00000, 0x3FF00010, "DPORT"),
        (0x3FFE8000, 0x40000000, "DRAM"),
        (0x40100000, 0x40108000, "IRAM"),
        (0x40201010, 0x402E1010, "IROM"),
    ),
    irom=(0x40200000, 0x40300000),
    drom=(0, 0),
    flash_freqs=_FREQ_80,
    flash_sizes=(
        ("512KB", 0x00),
        ("256KB", 0x10),
        ("1MB", 0x20),
        ("2MB", 0x30),
        ("4MB", 0x40),
        ("2MB-c1", 0x50),
        ("4MB-c1", 0x60),
        ("8MB", 0x80),
        ("16MB", 0x90),
    ),
    flash_encryption="none",
)

_BY_ID = {chip.chip_id: chip for chip in CHIPS}
_BY_NAME = {chip.name: chip for chip in (*CHIPS, ESP8266)}


def chip_by_id(chip_id: int) -> Chip:
    """The chip whose ``esp_chip_id_t`` is ``chip_id``; InputError when no ESP-IDF chip has it."""
    try:
        return _BY_ID[chip_id]
    except KeyError:
        raise InputError(f"unknown chip ID {chip_id} (0x{chip_id:04x})") from None


def find_chip_by_id(chip_id: int) -> Chip | None:
    """Like :func:`chip_by_id` but None for an unknown id."""
    return _BY_ID.get(chip_id)


def chip_by_name(name: str) -> Chip:
    """Look a chip up by target name ("esp32c3") or display name ("ESP32-C3")."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    try:
        return _BY_NAME[key]
    except KeyError:
        known = ", ".join(_BY_NAME)
        raise InputError(f"unknown chip {name!r} (known: {known})") from None
