"""The committed firmware samples and stub bootloader: checksums, contents, verification, and that they
rebuild identically."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from click.testing import CliRunner

from esp_ota_emu.chips import chip_by_name
from esp_ota_emu.cli.main import cli
from esp_ota_emu.formats.app_desc import c_text
from esp_ota_emu.formats.bootloader_desc import ESP_BOOTLOADER_DESC_MAGIC_BYTE
from esp_ota_emu.image import parse_image, verify_image
from esp_ota_emu.image.builder import elf2image
from esp_ota_emu.image.elf import ElfFile
from esp_ota_emu.security.encrypted_img import decrypt_image
from esp_ota_emu.security.keys import load_private_key

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "firmware_samples"
ESPTOOL = Path(sys.executable).with_name("esptool")
ESPSECURE = Path(sys.executable).with_name("espsecure")
SIGNING_KEY = SAMPLES / "keys" / "secure_boot_signing_key.pem"
OTHER_KEY = SAMPLES / "keys" / "secure_boot_other_key.pem"
SIGNED = {  # signed sample -> (unsigned sample, key it is signed with)
    "sample_v1_signed": ("sample_v1", SIGNING_KEY),
    "sample_v2_signed": ("sample_v2", SIGNING_KEY),
    "sample_v3_signed": ("sample_v3", SIGNING_KEY),
    "sample_v2_signed_other_key": ("sample_v2", OTHER_KEY),
}
ENCRYPTED = {"sample_v2_encrypted": "sample_v2", "sample_v3_signed_encrypted": "sample_v3_signed"}
SIG_SECTOR = 4096
# The header options build.py uses, as esptool spells them.
IMAGE_OPTIONS = ["--flash-mode", "dio", "--flash-freq", "40m", "--flash-size", "4MB"]

EXPECTED = {  # sample -> (version, secure_version)
    "sample_v1": ("1.0.0", 0),
    "sample_v2": ("2.0.0", 0),
    "sample_v3": ("3.0.0", 2),
}
PAYLOAD_WORDS = 0x4000
STUB = "bootloader_stub"
STUB_LINE = (
    "esp-ota-emu stub bootloader: not a real 2nd-stage bootloader, use mkflash --bootloader with ESP-IDF's for QEMU\r\n"
)


def payload(name: str) -> bytes:
    """The 64 KiB table of src/payload.s: word i is (i * 0x9E3779B1 + n * 0x7F4A7C15) mod 2**32 for sample v<n>."""
    n = int(EXPECTED[name][0][0])
    return b"".join(((i * 0x9E3779B1 + n * 0x7F4A7C15) & 0xFFFFFFFF).to_bytes(4, "little") for i in range(PAYLOAD_WORDS))


def sha256sums() -> dict[str, str]:
    lines = (SAMPLES / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}


def test_committed_files_match_sha256sums():
    sums = sha256sums()
    built = {p.relative_to(SAMPLES).as_posix() for p in [*SAMPLES.glob("*.bin"), *SAMPLES.glob("elf/*.elf")]}
    names = [*EXPECTED, STUB, "sample_broken", *SIGNED, *ENCRYPTED]
    assert set(sums) == built == {f"{n}.bin" for n in names} | {f"elf/{n}.elf" for n in [*EXPECTED, STUB]}
    for name, digest in sums.items():
        assert hashlib.sha256((SAMPLES / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("name", list(EXPECTED))
def test_sample_is_a_valid_app_with_its_descriptor(name):
    data = (SAMPLES / f"{name}.bin").read_bytes()
    version, secure_version = EXPECTED[name]
    image = parse_image(data)
    desc = image.app_desc
    assert c_text(desc.project_name) == "esp-ota-emu-sample"
    assert c_text(desc.version) == version
    assert desc.secure_version == secure_version
    assert desc.app_elf_sha256 == hashlib.sha256((SAMPLES / "elf" / f"{name}.elf").read_bytes()).digest()
    # The layout the README promises: descriptor and payload in DROM at 0x3F400020, code in IROM in the
    # flash page after the first, entry in the code.
    drom, irom = image.segments
    assert (drom.load_addr, drom.data_offset) == (0x3F400020, 0x20)
    at = data.index(payload(name), drom.data_offset)
    assert drom.data_offset + 256 < at and at + 4 * PAYLOAD_WORDS <= drom.end  # after the descriptor and strings
    assert irom.load_addr == 0x400D0000 + irom.data_offset and irom.data_offset >> 16 == 1
    assert irom.load_addr <= image.header.entry_addr < irom.load_addr + irom.length
    result = verify_image(data, 0, 0x100000, chip="esp32", chip_rev=300)
    assert result.esp_err == "ESP_OK", result.reason
    assert result.image_len == len(data)


B4CONST = (-1, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 32, 64, 128, 256)
B4CONSTU = (32768, 65536, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 32, 64, 128, 256)
UART0_FIFO, UART0_STATUS = 0x3FF40000, 0x3FF4001C


def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


class SampleRun:
    """Runs an image's code the way the CPU would once its segments are in place: the samples' after an
    ESP-IDF bootloader maps their flash segments, the stub bootloader's after the ROM loads it into RAM.

    QEMU-esp32 is not available here, so this executes the (small) subset of the base Xtensa ISA the
    samples use, with each flash-mapped segment's 64 KiB pages mapped as set_cache_and_start_app()
    maps them and each RAM segment at its load address, and records what is written to peripherals.
    Any other instruction fails the test.
    """

    def __init__(self, data: bytes):
        image = parse_image(data)
        esp32 = chip_by_name("esp32")
        self.pages = {}  # virtual 64 KiB page -> image offset of the flash page mapped there
        self.ram = []  # (load address, end, image offset) of each RAM segment
        for segment in image.segments:
            if not esp32.should_map(segment.load_addr):
                self.ram.append((segment.load_addr, segment.load_addr + segment.length, segment.data_offset))
                continue
            first, last = segment.load_addr >> 16, (segment.load_addr + segment.length - 1) >> 16
            for n, page in enumerate(range(first, last + 1)):
                self.pages[page] = (segment.data_offset & ~0xFFFF) + (n << 16)
        self.flash = data
        self.regs = [0] * 16
        self.pc = image.header.entry_addr
        self.uart = bytearray()
        self.writes: list[tuple[int, int]] = []  # (register address, value) of every peripheral store

    def load(self, addr: int, size: int) -> int:
        if addr == UART0_STATUS:
            return 0  # TX FIFO empty
        ram = [offset + addr - start for start, end, offset in self.ram if start <= addr and addr + size <= end]
        offset = ram[0] if ram else self.pages[addr >> 16] + (addr & 0xFFFF)
        return int.from_bytes(self.flash[offset : offset + size], "little")

    def store(self, addr: int, value: int) -> None:
        assert 0x3FF00000 <= addr < 0x3FF80000, f"store outside the peripherals at {addr:#x}"
        self.writes.append((addr, value))
        if addr == UART0_FIFO:
            self.uart.append(value & 0xFF)

    def run(self, max_steps: int = 20000) -> None:
        a = self.regs
        for _ in range(max_steps):
            pc = self.pc
            word = self.load(pc, 3)
            op0, t, s, r = word & 0xF, (word >> 4) & 0xF, (word >> 8) & 0xF, (word >> 12) & 0xF
            if op0 >= 8:  # 16-bit (code density) instructions
                self.pc = pc + 2
                if op0 == 8:
                    a[t] = self.load(a[s] + 4 * r, 4)
                elif op0 == 9:
                    self.store(a[s] + 4 * r, a[t])
                elif op0 == 0xB:
                    a[r] = (a[s] + (t or -1)) & 0xFFFFFFFF
                elif op0 == 0xC and t < 8:
                    imm = ((t & 7) << 4) | r
                    a[s] = (imm - 128 if imm >= 96 else imm) & 0xFFFFFFFF
                elif op0 == 0xC:
                    if (a[s] == 0) == (t < 0xC):
                        self.pc = pc + 4 + (((t & 3) << 4) | r)
                elif op0 == 0xD and r == 0xF and t == 0:
                    self.pc = a[0]
                else:
                    raise AssertionError(f"unexpected instruction {word & 0xFFFF:04x} at {pc:#x}")
                continue
            self.pc = pc + 3
            op1, op2, imm8 = (word >> 16) & 0xF, word >> 20, word >> 16
            if word == 0x0020C0:  # memw
                pass
            elif op0 == 0 and op1 == 0 and op2 == 0xC:
                a[r] = (a[s] - a[t]) & 0xFFFFFFFF
            elif op0 == 0 and op1 in (4, 5):
                a[r] = (a[t] >> (s | (op1 & 1) << 4)) & ((1 << (op2 + 1)) - 1)
            elif op0 == 1:
                a[t] = self.load(((pc + 3) & ~3) + ((word >> 8) - 0x10000) * 4, 4)
            elif op0 == 2 and r == 0:
                a[t] = self.load(a[s] + imm8, 1)
            elif op0 == 2 and r == 2:
                a[t] = self.load(a[s] + 4 * imm8, 4)
            elif op0 == 2 and r == 6:
                self.store(a[s] + 4 * imm8, a[t])
            elif op0 == 2 and r == 0xA:
                a[t] = _sext(s << 8 | imm8, 12) & 0xFFFFFFFF
            elif op0 == 2 and r == 0xC:
                a[t] = (a[s] + _sext(imm8, 8)) & 0xFFFFFFFF
            elif op0 == 5 and t & 3 == 0:  # call0
                a[0] = pc + 3
                self.pc = (pc & ~3) + _sext(word >> 6, 18) * 4 + 4
            elif op0 == 6 and t & 3 == 0:  # j
                target = pc + 4 + _sext(word >> 6, 18)
                if target == pc:
                    return  # the idle loop
                self.pc = target
            elif op0 == 6 and t & 3 == 1 and t >> 2 < 2:  # beqz / bnez
                if (a[s] == 0) == (t >> 2 == 0):
                    self.pc = pc + 4 + _sext(word >> 12, 12)
            elif op0 == 6 and t & 3 == 2 and t >> 2 < 2:  # beqi / bnei
                if (_sext(a[s], 32) == B4CONST[r]) == (t >> 2 == 0):
                    self.pc = pc + 4 + _sext(imm8, 8)
            elif op0 == 6 and t == 0xF:  # bgeui
                if a[s] >= B4CONSTU[r]:
                    self.pc = pc + 4 + _sext(imm8, 8)
            elif op0 == 7 and r in (3, 9):  # bltu / bne
                if (a[s] < a[t]) if r == 3 else (a[s] != a[t]):
                    self.pc = pc + 4 + _sext(imm8, 8)
            else:
                raise AssertionError(f"unexpected instruction {word:06x} at {pc:#x}")
        raise AssertionError("the sample did not reach its idle loop")


def _expected_line(name: str) -> str:
    if name == STUB:
        return STUB_LINE
    version, secure_version = EXPECTED[name.removesuffix("_signed")]
    return f"esp-ota-emu-sample {version} secure_version={secure_version} running\r\n"


@pytest.mark.parametrize("name", [*EXPECTED, "sample_v3_signed", STUB])
def test_program_disables_watchdogs_and_prints_its_line(name):
    run = SampleRun((SAMPLES / f"{name}.bin").read_bytes())
    run.run()
    assert run.uart.decode() == _expected_line(name)
    key = 0x50D83AA1
    for config0, wprotect in ((0x3FF4808C, 0x3FF480A4), (0x3FF5F048, 0x3FF5F064), (0x3FF60048, 0x3FF60064)):
        stores = [w for w in run.writes if w[0] in (config0, wprotect)]
        assert stores == [(wprotect, key), (config0, 0), (wprotect, 0)]
    assert run.writes.index((0x3FF60064, 0)) < min(i for i, w in enumerate(run.writes) if w[0] == UART0_FIFO)


def test_secure_version_printing_counts_in_decimal():
    """The digit loop of the program: a descriptor patched to secure_version 1204 prints 1204."""
    data = bytearray((SAMPLES / "sample_v1.bin").read_bytes())
    data[0x24:0x28] = (1204).to_bytes(4, "little")
    run = SampleRun(bytes(data))
    run.run()
    assert run.uart.endswith(b" secure_version=1204 running\r\n")


def test_versions_differ_in_every_flash_sector():
    """The payload makes the samples span two 64 KiB flash pages, and any two versions differ in each of
    their 4 KiB sectors, so an OTA between them rewrites the whole image."""
    images = [(SAMPLES / f"{name}.bin").read_bytes() for name in EXPECTED]
    assert {len(image) for image in images} == {len(images[0])} and len(images[0]) > 0x10000
    for i, a in enumerate(images):
        for b in images[i + 1 :]:
            assert all(a[at : at + 0x1000] != b[at : at + 0x1000] for at in range(0, len(a), 0x1000))


def test_broken_sample_fails_verification_on_its_hash():
    data = (SAMPLES / "sample_broken.bin").read_bytes()
    image = parse_image(data)
    assert image.checksum_ok and image.hash_ok is False
    assert c_text(image.app_desc.version) == "2.0.0"
    result = verify_image(data, 0, 0x100000, chip="esp32")
    assert result.esp_err == "ESP_ERR_IMAGE_INVALID"
    assert "hash" in result.reason.lower()
    # Only the last digest byte differs from sample_v2.
    good = (SAMPLES / "sample_v2.bin").read_bytes()
    assert [i for i in range(len(good)) if good[i] != data[i]] == [len(good) - 1]
    info = subprocess.run([str(ESPTOOL), "image-info", str(SAMPLES / "sample_broken.bin")], capture_output=True, text=True)
    assert "(invalid)" in info.stdout and "Checksum: " in info.stdout


def test_bootloader_stub_is_laid_out_like_an_esp_idf_bootloader():
    """RAM segments only, the esp_bootloader_desc_t at image offset 0x20 in DRAM, code in the IRAM regions
    of ESP-IDF's bootloader.ld, DIO / 40m / 4MB, and ESP-IDF's bootloader-slot verification accepts it."""
    data = (SAMPLES / f"{STUB}.bin").read_bytes()
    image = parse_image(data)
    assert image.chip.name == "esp32" and image.app_desc is None
    desc = image.bootloader_desc
    assert desc.magic_byte == ESP_BOOTLOADER_DESC_MAGIC_BYTE and desc.reserved == bytes(3)
    assert (desc.version, c_text(desc.idf_ver), desc.date_time, desc.reserved2) == (
        1, "esp-ota-emu-stub", bytes(24), bytes(16)
    )
    dram, loader, iram = image.segments
    assert (dram.load_addr, dram.data_offset) == (0x3FFF0000, 0x20) and "DRAM" in dram.kinds
    assert loader.load_addr == 0x40078000 and iram.load_addr == 0x40080400
    assert iram.load_addr <= image.header.entry_addr < iram.load_addr + iram.length
    esp32 = chip_by_name("esp32")
    assert not any(esp32.should_map(segment.load_addr) for segment in image.segments)
    header = image.header
    assert (header.spi_mode, esp32.flash_freq_name(header.spi_size_speed.spi_speed)) == (2, "40m")
    assert esp32.flash_size_name(header.spi_size_speed.spi_size << 4) == "4MB"
    assert image.checksum_ok and image.hash_ok
    result = verify_image(data, 0, 0x7000, chip="esp32", chip_rev=300, is_bootloader=True)
    assert result.esp_err == "ESP_OK", result.reason
    assert result.image_len == len(data)


def test_bootloader_stub_image_info_is_esptools():
    """esptool image-info reads the same image (and the stub's Bootloader Information) as ours."""
    path = SAMPLES / f"{STUB}.bin"
    theirs = subprocess.run([str(ESPTOOL), "image-info", str(path)], capture_output=True, text=True, check=True)
    expected = theirs.stdout.splitlines()[1:]  # after esptool's version banner
    assert expected[-5:] == [
        "Bootloader Information", "======================", "Bootloader version: 1", "ESP-IDF: esp-ota-emu-stub",
        "Compile time: ",
    ]
    result = CliRunner().invoke(cli, ["image-info", str(path)])
    assert result.exit_code == 0, result.output
    ours = result.output.splitlines()
    assert ours[: len(expected)] == expected


@pytest.mark.parametrize("name", [*EXPECTED, STUB])
def test_image_is_what_both_elf2images_make_of_its_elf(name, tmp_path):
    elf = SAMPLES / "elf" / f"{name}.elf"
    committed = (SAMPLES / f"{name}.bin").read_bytes()
    mine = elf2image(ElfFile.open(elf), chip_by_name("esp32"), flash_mode="dio", flash_freq="40m", flash_size="4MB")
    subprocess.run(
        [str(ESPTOOL), "--chip", "esp32", "elf2image", *IMAGE_OPTIONS, "-o", str(tmp_path / "e.bin"), str(elf)],
        check=True, capture_output=True,
    )
    assert mine == committed == (tmp_path / "e.bin").read_bytes()


@pytest.mark.parametrize("name", list(SIGNED))
def test_signed_samples(name, tmp_path):
    """Secure Boot V2 (RSA-3072) signed, checked by espsecure: the image is the --secure-pad-v2 build of
    the unsigned sample's ELF, its signature verifies with its key and not with the other one."""
    source, key = SIGNED[name]
    path = SAMPLES / f"{name}.bin"
    data = path.read_bytes()
    assert len(data) == 0x20000 + SIG_SECTOR  # padded to the next 64 KiB boundary past the 66 KB image
    subprocess.run(
        [str(ESPTOOL), "--chip", "esp32", "elf2image", *IMAGE_OPTIONS, "--secure-pad-v2",
         "-o", str(tmp_path / "padded.bin"), str(SAMPLES / "elf" / f"{source}.elf")],
        check=True, capture_output=True,
    )
    assert data[:-SIG_SECTOR] == (tmp_path / "padded.bin").read_bytes()
    for candidate in (SIGNING_KEY, OTHER_KEY):
        check = subprocess.run(
            [str(ESPSECURE), "verify-signature", "--version", "2", "--keyfile", str(candidate), str(path)],
            capture_output=True, text=True,
        )
        assert (check.returncode == 0) == (candidate == key), check.stdout + check.stderr
    image = parse_image(data)
    assert c_text(image.app_desc.version) == EXPECTED[source][0]
    assert image.app_desc.secure_version == EXPECTED[source][1]


@pytest.mark.parametrize("name", list(ENCRYPTED))
def test_encrypted_samples_decrypt_to_their_plaintext(name):
    key = load_private_key((SAMPLES / "keys" / "pre_encryption_key.pem").read_bytes())
    data = (SAMPLES / f"{name}.bin").read_bytes()
    assert data[:4] == (0x0788B6CF).to_bytes(4, "little")  # esp_encrypted_img magic
    assert len(data) == 512 + len((SAMPLES / f"{ENCRYPTED[name]}.bin").read_bytes())  # 512-byte header
    assert decrypt_image(data, key) == (SAMPLES / f"{ENCRYPTED[name]}.bin").read_bytes()


def _assembler_or_skip() -> None:
    if shutil.which("xtensa-lx106-elf-as") is None or shutil.which("xtensa-lx106-elf-ld") is None:
        pytest.skip("the Xtensa assembler is missing (binutils-xtensa-lx106); `make samples` installs it")


def test_samples_rebuild_reproducibly(tmp_path):
    """A rebuild gives the committed files byte for byte (equivalent signed/encrypted files are kept)."""
    _assembler_or_skip()
    subprocess.run([sys.executable, str(SAMPLES / "build.py"), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in sha256sums():
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name
    assert (tmp_path / "SHA256SUMS").read_text() == (SAMPLES / "SHA256SUMS").read_text()


def test_fresh_rebuild_differs_only_in_random_parts(tmp_path):
    """Signing and encrypting anew changes only the signature sector and the encrypted file."""
    _assembler_or_skip()
    subprocess.run(
        [sys.executable, str(SAMPLES / "build.py"), "--out", str(tmp_path), "--fresh"], check=True, capture_output=True
    )
    for name in sha256sums():
        fresh, committed = (tmp_path / name).read_bytes(), (SAMPLES / name).read_bytes()
        stem = name.removesuffix(".bin")
        if stem in SIGNED:
            assert fresh[:-SIG_SECTOR] == committed[:-SIG_SECTOR] and fresh != committed, name
        elif stem in ENCRYPTED:
            assert len(fresh) == len(committed) and fresh != committed, name
        else:
            assert fresh == committed, name
