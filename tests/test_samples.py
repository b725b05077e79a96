"""The committed firmware samples: checksums, contents, verification, and that they rebuild identically."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from esp_ota_emu.chips import chip_by_name
from esp_ota_emu.formats.app_desc import c_text
from esp_ota_emu.image import parse_image, verify_image
from esp_ota_emu.image.builder import elf2image
from esp_ota_emu.image.elf import ElfFile

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


def sha256sums() -> dict[str, str]:
    lines = (SAMPLES / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}


def test_committed_files_match_sha256sums():
    sums = sha256sums()
    built = {p.relative_to(SAMPLES).as_posix() for p in [*SAMPLES.glob("*.bin"), *SAMPLES.glob("elf/*.elf")]}
    names = [*EXPECTED, "sample_broken", *SIGNED, *ENCRYPTED]
    assert set(sums) == built == {f"{n}.bin" for n in names} | {f"elf/{n}.elf" for n in EXPECTED}
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
    # The layout the README promises: descriptor in DROM at 0x3F400020, code in IROM, entry in the code.
    drom, irom = image.segments
    assert (drom.load_addr, drom.data_offset) == (0x3F400020, 0x20)
    assert irom.load_addr % 0x10000 == irom.data_offset and 0x400D0000 <= irom.load_addr < 0x400E0000
    assert irom.load_addr <= image.header.entry_addr < irom.load_addr + irom.length
    result = verify_image(data, 0, 0x100000, chip="esp32", chip_rev=300)
    assert result.esp_err == "ESP_OK", result.reason
    assert result.image_len == len(data)


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


@pytest.mark.parametrize("name", list(EXPECTED))
def test_sample_image_is_what_both_elf2images_make_of_its_elf(name, tmp_path):
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
    assert len(data) == 0x10000 + SIG_SECTOR
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
    from esp_ota_emu.security.encrypted_img import decrypt_image
    from esp_ota_emu.security.keys import load_private_key

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
