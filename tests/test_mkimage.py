"""mkimage against the oracle: ``esptool elf2image`` (esptool 5.6.0) must write the same bytes.

The ELFs are the committed sample ELFs and ELFs built here in Python, with sections in RAM and
flash at awkward addresses, so that merging, ordering, page-alignment padding (by splitting RAM
segments or with padding segments), the ESP32 0x24 stretch and the secure/size padding all run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from esptool.cmds import elf2image as esptool_elf2image
from esptool.util import FatalError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esp_ota_emu.chips import chip_by_name
from esp_ota_emu.cli.main import cli
from esp_ota_emu.errors import EXIT_BAD_INPUT, InputError
from esp_ota_emu.formats.app_desc import ESP_APP_DESC_MAGIC_WORD, AppDesc
from esp_ota_emu.image.builder import elf2image
from esp_ota_emu.image.elf import ElfFile

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ELFS = sorted((REPO / "firmware_samples" / "elf").glob("sample_*.elf"))
ESPTOOL = Path(sys.executable).with_name("esptool")

SHT_PROGBITS, SHT_STRTAB, SHT_NOBITS, SHT_INIT_ARRAY = 1, 3, 8, 14


def make_elf(sections, entry=0x40080000, machine=0x5E, program_headers=False) -> bytes:
    """A little-endian ELF32 executable holding ``sections``: (name, addr, data[, type]) tuples."""
    sections = [s if len(s) == 4 else (*s, SHT_PROGBITS) for s in sections]
    names = b"\0.shstrtab\0" + b"".join(name.encode() + b"\0" for name, *_ in sections)
    phnum = len(sections) if program_headers else 0
    offset = 52 + 32 * phnum
    body = bytearray()
    placed = []
    for name, addr, data, kind in sections:
        placed.append((names.index(b"\0" + name.encode() + b"\0") + 1, kind, addr, offset + len(body), len(data)))
        if kind != SHT_NOBITS:
            body += data
        body += bytes(-len(body) % 4)
    names_offset = offset + len(body)
    body += names + bytes(-len(names) % 4)
    shoff = offset + len(body)
    shdrs = bytes(40)  # SHN_UNDEF
    for name_off, kind, addr, data_off, size in placed:
        shdrs += struct.pack("<10I", name_off, kind, 2, addr, data_off, size, 0, 0, 4, 0)
    shdrs += struct.pack("<10I", 1, SHT_STRTAB, 0, 0, names_offset, len(names), 0, 0, 1, 0)
    header = b"\x7fELF\x01\x01\x01" + bytes(9) + struct.pack(
        "<HHIIIIIHHHHHH", 2, machine, 1, entry, 52 if phnum else 0, shoff, 0, 52, 32, phnum, 40,
        len(placed) + 2, len(placed) + 1,
    )
    phdrs = b"".join(
        struct.pack("<8I", 1, data_off, addr, addr, size if kind != SHT_NOBITS else 0, size, 5, 4)
        for _, kind, addr, data_off, size in placed
        if program_headers
    )
    return header + phdrs + bytes(body) + shdrs


def app_desc(mmu_page_size: int = 0, magic: int = ESP_APP_DESC_MAGIC_WORD) -> bytes:
    return AppDesc.build(
        dict(
            magic_word=magic, secure_version=1, reserv1=bytes(8), version=b"1.2.3".ljust(32, b"\0"),
            project_name=b"hand-made".ljust(32, b"\0"), time=bytes(16), date=bytes(16),
            idf_ver=b"v5.3".ljust(32, b"\0"), app_elf_sha256=bytes(32), min_efuse_blk_rev_full=0,
            max_efuse_blk_rev_full=99, mmu_page_size=mmu_page_size, spi_flash_mode=0, reserv3=bytes(2),
            reserv2=bytes(72),
        )
    )


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def oracle(elf: bytes, chip: str, **options) -> bytes | None:
    """esptool's image for ``elf`` (in-process), None when esptool refuses the ELF."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return esptool_elf2image(elf, chip, output=None, **options)
        except FatalError:
            return None


def ours(elf: bytes, chip: str, **options) -> bytes | None:
    translated = dict(options)
    if translated.pop("secure_pad", False):
        translated["secure_pad"] = "v1"
    if translated.pop("secure_pad_v2", False):
        translated["secure_pad"] = "v2"
    if "pad_to_size" in translated:
        translated["pad_to_size"] = {"64KB": 0x10000, "4KB": 0x1000}[translated["pad_to_size"]]
    try:
        return elf2image(ElfFile(elf), chip_by_name(chip), **translated)
    except InputError:
        return None


# -- the sample ELFs, through the command line of both tools ------------------------------------------

CLI_VARIANTS = [
    [],
    ["--flash-mode", "dio", "--flash-freq", "40m", "--flash-size", "4MB"],
    ["--flash-mode", "dout", "--flash-freq", "80m", "--flash-size", "16MB", "--min-rev-full", "300", "--max-rev-full", "399"],
    ["--secure-pad"],
    ["--secure-pad-v2", "--flash-size", "2MB"],
    ["--pad-to-size", "64KB"],
    ["--dont-append-digest", "--flash-freq", "20m"],
]


@pytest.mark.parametrize("elf", SAMPLE_ELFS, ids=lambda p: p.name)
def test_samples_byte_identical_to_esptool_cli(elf, tmp_path):
    assert len(SAMPLE_ELFS) == 3
    runner = CliRunner()
    for number, options in enumerate(CLI_VARIANTS):
        theirs, mine = tmp_path / f"esptool{number}.bin", tmp_path / f"ours{number}.bin"
        subprocess.run(
            [str(ESPTOOL), "--chip", "esp32", "elf2image", *options, "-o", str(theirs), str(elf)],
            check=True, capture_output=True,
        )
        result = runner.invoke(cli, ["mkimage", str(elf), "-o", str(mine), "--json", *options])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert mine.read_bytes() == theirs.read_bytes(), options
        assert report["sha256"] == hashlib.sha256(theirs.read_bytes()).hexdigest()
        assert report["size"] == theirs.stat().st_size


@pytest.mark.parametrize(
    "case, options",
    [
        ("esp32c6-guess", ["--chip", "esp32c6", "--flash-mmu-page-size", "16KB", "--flash-freq", "80m"]),
        ("esp32c6-desc", ["--chip", "esp32c6", "--use-segments", "--flash-size", "8MB"]),
        ("app", ["--chip", "esp32", "--elf-sha256-offset", "0x70", "-r", "1", "--pad-to-size", "1MB"]),
        ("bootloader", ["--chip", "esp32", "--flash-mode", "qout", "--dont-append-digest"]),
    ],
)
def test_more_options_byte_identical_to_esptool_cli(case, options, tmp_path):
    elf = tmp_path / "in.elf"
    elf.write_bytes(make_elf(CASES[case][0], program_headers=True))
    chip_args, rest = options[:2], options[2:]
    subprocess.run(
        [str(ESPTOOL), *chip_args, "elf2image", *rest, "-o", str(tmp_path / "e.bin"), str(elf)],
        check=True, capture_output=True,
    )
    result = CliRunner().invoke(cli, ["mkimage", str(elf), "-o", str(tmp_path / "o.bin"), *options])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o.bin").read_bytes() == (tmp_path / "e.bin").read_bytes()


def test_sample_elf_sha256_patched_into_app_desc():
    elf = SAMPLE_ELFS[0].read_bytes()
    image = elf2image(ElfFile(elf), chip_by_name("esp32"))
    assert image[0xB0:0xD0] == hashlib.sha256(elf).digest()
    assert AppDesc.parse(image[0x20:0x120]).magic_word == ESP_APP_DESC_MAGIC_WORD


# -- hand-made ELFs --------------------------------------------------------------------------------------

APP_SECTIONS = [
    (".flash.appdesc", 0x3F400020, app_desc()),
    (".flash.rodata", 0x3F400120, pattern(0x1233)),  # not a multiple of 4: zero-padded
    (".iram0.vectors", 0x40080000, pattern(0x400, 2)),
    (".iram0.text", 0x40080400, pattern(0x2F02, 3)),  # merged with the vectors
    (".dram0.data", 0x3FFB0000, pattern(0x1F10, 4)),
    (".rtc.text", 0x400C0000, pattern(0x40, 5)),  # RTC_IRAM: a memory type of its own
    (".bss", 0x3FFB2000, bytes(0x100), SHT_NOBITS),
    (".flash.text", 0x400D0020, pattern(0x5000, 6)),
    (".init_array", 0x3FFB1F10, pattern(8, 7), SHT_INIT_ARRAY),  # merged with .dram0.data
    (".comment", 0, b"ld 2.40\0"),  # address 0: not loaded
]

CASES = {
    "app": (APP_SECTIONS, "esp32"),
    # No RAM to split: flash segments are aligned with padding segments at address 0.
    "flash-only": ([APP_SECTIONS[0], APP_SECTIONS[1], APP_SECTIONS[7]], "esp32"),
    # RAM smaller than the gap: split until exhausted, then a padding segment.
    "little-ram": ([APP_SECTIONS[0], (".flash.text", 0x400D0020, pattern(0x100)), (".dram0.data", 0x3FFB0000, pattern(0x804))], "esp32"),
    # A flash segment ending 0x10 bytes into a page: stretched to 0x24 on the ESP32 only.
    "esp32-0x24": ([(".flash.rodata", 0x3F400020, pattern(0xFFF0))], "esp32"),
    "s2-no-0x24": ([(".flash.rodata", 0x3F000020, pattern(0xFFF0))], "esp32s2"),
    "appdesc-not-lowest": ([(".flash.rodata", 0x3F400020, pattern(0x100)), (".flash.appdesc", 0x3F410020, app_desc()),
                            (".flash.text", 0x400E0020, pattern(0x80))], "esp32"),
    "two-in-one-page": ([(".flash.rodata", 0x3F400020, pattern(0x100)), (".flash.rodata2", 0x3F400400, pattern(0x100))], "esp32"),
    "bootloader": ([(".iram_loader.text", 0x40078000, pattern(0x1000)), (".iram.text", 0x40080000, pattern(0x400)),
                    (".dram0.data", 0x3FFF0000, pattern(0x60)), (".dram0.bootdesc", 0x3FFF0060, pattern(0x50))], "esp32"),
    "esp32c3": ([(".flash.appdesc", 0x3C000020, app_desc()), (".flash.rodata", 0x3C000120, pattern(0x777)),
                 (".iram0.text", 0x40380000, pattern(0x3000)), (".flash.text", 0x42000020, pattern(0x1000))], "esp32c3"),
    # C6: MMU page size guessed from the descriptor's address (32 KiB here) ...
    "esp32c6-guess": ([(".flash.appdesc", 0x42008020, app_desc()), (".flash.text", 0x42010020, pattern(0x100)),
                       (".iram0.text", 0x40800000, pattern(0x9000))], "esp32c6"),
    # ... or read from esp_app_desc_t.mmu_page_size (log2, 14 = 16 KiB).
    "esp32c6-desc": ([(".flash.appdesc", 0x42000020, app_desc(14)), (".flash.text", 0x42004020, pattern(0x100)),
                      (".iram0.text", 0x40800000, pattern(0x500))], "esp32c6"),
    "esp32c2-bad-magic": ([(".flash.appdesc", 0x3C000020, app_desc(magic=0)), (".flash.text", 0x42010020, pattern(0x40))], "esp32c2"),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(
    "options",
    [{}, {"secure_pad_v2": True, "flash_mode": "dio", "flash_size": "4MB"}, {"secure_pad": True},
     {"pad_to_size": "4KB", "flash_freq": "26m"}, {"append_digest": False}, {"use_segments": True}, {"elf_sha256_offset": 0x40}],
    ids=["default", "secure-pad-v2", "secure-pad", "pad-to-size", "no-digest", "use-segments", "sha-offset"],
)
def test_hand_made_elfs_match_esptool(name, options):
    sections, chip = CASES[name]
    elf = make_elf(sections, program_headers=True)
    expected = oracle(elf, chip, **options)
    assert ours(elf, chip, **options) == expected
    if name == "two-in-one-page":
        assert expected is None  # both refuse: two flash segments in one MMU page


def test_pad_to_size_without_digest_is_refused():
    """esptool overwrites the header with 0xFF in this case; we refuse instead of copying that."""
    elf = make_elf(CASES["app"][0])
    broken = oracle(elf, "esp32", pad_to_size="4KB", append_digest=False)
    assert broken[2:24] == b"\xff" * 22
    assert ours(elf, "esp32", pad_to_size="4KB", append_digest=False) is None


def test_hand_made_layouts_exercise_the_rules():
    """The cases above really contain what they are named after (so the cross-test means something)."""
    app = elf2image(ElfFile(make_elf(CASES["app"][0])), chip_by_name("esp32"))
    addrs = [struct.unpack_from("<I", app, off)[0] for off in _segment_offsets(app)]
    assert addrs[0] == 0x3F400020 and 0x3FFB0000 in addrs and 0x400D0020 in addrs
    assert app[1] == len(addrs) and len(addrs) < 10  # merged: vectors+text, data+init_array
    flash_only = elf2image(ElfFile(make_elf(CASES["flash-only"][0])), chip_by_name("esp32"))
    assert 0 in [struct.unpack_from("<I", flash_only, off)[0] for off in _segment_offsets(flash_only)]
    stretched = elf2image(ElfFile(make_elf(CASES["esp32-0x24"][0])), chip_by_name("esp32"))
    (length,) = struct.unpack_from("<I", stretched, 28)
    assert (24 + 8 + length) % 0x10000 == 0x24


def _segment_offsets(image: bytes) -> list[int]:
    offsets, pos = [], 24
    for _ in range(image[1]):
        offsets.append(pos)
        pos += 8 + struct.unpack_from("<I", image, pos + 4)[0]
    return offsets


REGIONS = {  # chip -> region name -> (start, end) for random sections
    "esp32": {
        "dram": (0x3FFB0000, 0x3FFC0000),
        "iram": (0x40080000, 0x40090000),
        "rtc": (0x400C0000, 0x400C1000),
        "drom": (0x3F400000, 0x3F480000),
        "irom": (0x400D0000, 0x40150000),
    },
    "esp32c3": {
        "dram": (0x3FC80000, 0x3FCC0000),
        "iram": (0x40380000, 0x403A0000),
        "drom": (0x3C000000, 0x3C080000),
        "irom": (0x42000000, 0x42080000),
    },
    "esp32c6": {  # one shared flash window: IROM and DROM kinds overlap
        "ram": (0x40800000, 0x40840000),
        "irom": (0x42000000, 0x42080000),
        "drom": (0x42800000, 0x42880000),
    },
}


@st.composite
def random_layouts(draw, chip: str = "esp32"):
    sections = []
    regions = REGIONS[chip]
    for index in range(draw(st.integers(1, 6))):
        region = draw(st.sampled_from(list(regions)))
        start, end = regions[region]
        addr = start + 4 * draw(st.integers(0, (end - start) // 8))
        size = draw(st.integers(1, 0x2400))
        sections.append((f".{region}.s{index}", addr, pattern(size, index)))
    if draw(st.booleans()):  # a section right after another one
        name, addr, data = sections[-1]
        sections.append((name + ".next", addr + len(data) + (-len(data) % 4), pattern(draw(st.integers(1, 64)))))
    if draw(st.booleans()):  # one flash section is the app descriptor: it goes first
        flash = [i for i, (name, *_) in enumerate(sections) if "rom" in name]
        if flash:
            i = draw(st.sampled_from(flash))
            sections[i] = (".flash.appdesc", sections[i][1], app_desc() + sections[i][2])
    return sections


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_layouts(), st.sampled_from([{}, {"secure_pad_v2": True}, {"secure_pad": True}]))
def test_random_esp32_layouts_match_esptool(sections, options):
    elf = make_elf(sections)
    assert ours(elf, "esp32", **options) == oracle(elf, "esp32", **options)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(["esp32c3", "esp32c6"]), st.sampled_from([{}, {"secure_pad_v2": True}, {"flash_mmu_page_size": "16KB"}]))
def test_random_riscv_layouts_match_esptool(data, chip, options):
    elf = make_elf(data.draw(random_layouts(chip)), machine=0xF3, entry=0x42000020)
    mine = dict(options)
    if "flash_mmu_page_size" in mine:
        mine["flash_mmu_page_size"] = 0x4000
    assert ours(elf, chip, **mine) == oracle(elf, chip, **options)


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not an elf at all" * 4, "not an ELF"),
        (make_elf([(".text", 0x40080000, b"1234")], machine=0x28), "e_machine"),
        (make_elf([(".text", 0x40080000, b"1234")])[:-40], "past the end"),
    ],
)
def test_bad_elf_is_an_input_error(tmp_path, data, message):
    elf = tmp_path / "bad.elf"
    elf.write_bytes(data)
    result = CliRunner().invoke(cli, ["mkimage", str(elf), "-o", str(tmp_path / "out.bin")])
    assert result.exit_code == EXIT_BAD_INPUT
    assert message in result.output and "Traceback" not in result.output


def test_unsupported_flash_freq_and_refused_layout(tmp_path):
    elf = tmp_path / "app.elf"
    elf.write_bytes(make_elf(CASES["two-in-one-page"][0]))
    result = CliRunner().invoke(cli, ["mkimage", str(elf), "-o", str(tmp_path / "a.bin")])
    assert result.exit_code == EXIT_BAD_INPUT and "same 64 KB flash mapping" in result.output
    elf.write_bytes(make_elf(CASES["app"][0]))
    result = CliRunner().invoke(cli, ["mkimage", str(elf), "-o", str(tmp_path / "b.bin"), "--flash-freq", "48m"])
    assert result.exit_code == EXIT_BAD_INPUT and "not supported by ESP32" in result.output
