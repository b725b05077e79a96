"""Build the sample ESP32 applications from source, reproducibly.

    python firmware_samples/build.py [--out DIR]

Assembles src/*.s with binutils-xtensa-lx106 (base Xtensa ISA, which the ESP32's LX6 runs), links
with esp32_app.ld (the samples) or esp32_bootloader.ld (the stub bootloader), turns each ELF into an
esp_image with esp-ota-emu's own elf2image and writes ``elf/*.elf``, ``sample_*.bin``,
``bootloader_stub.bin`` and ``SHA256SUMS`` under DIR (default: this directory).
Nothing depends on time or on where the tree lives, so every build gives the same bytes.

The Secure Boot V2 signatures (RSA-PSS) and pre-encrypted images (esp_encrypted_img) contain random
salt, key and IV by design. So that a rebuild still reproduces the committed files, an existing
signed or encrypted file in this directory is kept when it is equivalent to the new one (same
signed contents and a signature that verifies, or the same plaintext when decrypted); ``--fresh``
ignores them.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from esp_ota_emu.chips import chip_by_name
from esp_ota_emu.errors import EspError, InputError
from esp_ota_emu.image.builder import elf2image
from esp_ota_emu.image.elf import ElfFile
from esp_ota_emu.security import sbv2
from esp_ota_emu.security.encrypted_img import decrypt_image, encrypt_image
from esp_ota_emu.security.keys import load_private_key

HERE = Path(__file__).resolve().parent
AS = "xtensa-lx106-elf-as"
LD = "xtensa-lx106-elf-ld"

# name -> SAMPLE number given to src/app_desc.s (which picks version and secure_version).
SAMPLES = {"sample_v1": 1, "sample_v2": 2, "sample_v3": 3}
# A stand-in 2nd-stage bootloader (RAM segments and esp_bootloader_desc_t like ESP-IDF's; esp32_bootloader.ld),
# so that a flash can be made without a real one.
BOOTLOADER_STUB = "bootloader_stub"
# The broken sample: sample_v2 with the last byte of its appended SHA-256 digest inverted.
BROKEN = ("sample_broken", "sample_v2")
# Test keys (RSA-3072, made for these samples only; never use them on a real device).
SIGNING_KEY = "keys/secure_boot_signing_key.pem"
OTHER_KEY = "keys/secure_boot_other_key.pem"
ENCRYPTION_KEY = "keys/pre_encryption_key.pem"
# Secure Boot V2 signed samples: name -> (unsigned sample, key). Built with --secure-pad-v2 as ESP-IDF
# builds signed apps; the last is signed with a key the device does not trust.
SIGNED = {
    "sample_v1_signed": ("sample_v1", SIGNING_KEY),
    "sample_v2_signed": ("sample_v2", SIGNING_KEY),
    "sample_v3_signed": ("sample_v3", SIGNING_KEY),
    "sample_v2_signed_other_key": ("sample_v2", OTHER_KEY),
}
# Pre-encrypted (esp_encrypted_img, RSA-3072 scheme) samples: name -> plaintext sample.
ENCRYPTED = {"sample_v2_encrypted": "sample_v2.bin", "sample_v3_signed_encrypted": "sample_v3_signed.bin"}
# Header flash parameters: what a 4 MB DIO module (and QEMU's 4 MB flash) uses.
IMAGE_OPTIONS = dict(flash_mode="dio", flash_freq="40m", flash_size="4MB")


def run(*command: str, cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def assemble(source: str, obj: Path, *options: str) -> Path:
    """Assemble one source (its includes are in src/); paths are relative so none ends up in the output."""
    run(AS, "-I", "src", *options, "-o", str(obj), source, cwd=HERE)
    return obj


def link(script: str, objects: list[Path], elf: Path) -> bytes:
    run(LD, "-T", script, "-o", str(elf), *map(str, objects), cwd=HERE)
    return elf.read_bytes()


def build_sample_elf(name: str, sample: int, work: Path) -> bytes:
    version = ("--defsym", f"SAMPLE={sample}")
    desc = assemble("src/app_desc.s", work / f"app_desc_{sample}.o", *version)
    main = assemble("src/main.s", work / "main.o")
    payload = assemble("src/payload.s", work / f"payload_{sample}.o", *version)
    return link("esp32_app.ld", [main, desc, payload], work / f"{name}.elf")


def build_bootloader_stub_elf(work: Path) -> bytes:
    stub = assemble(f"src/{BOOTLOADER_STUB}.s", work / f"{BOOTLOADER_STUB}.o")
    return link("esp32_bootloader.ld", [stub], work / f"{BOOTLOADER_STUB}.elf")


def break_image(image: bytes) -> bytes:
    """Invert the last byte of the appended SHA-256: the header and checksum stay valid."""
    return image[:-1] + bytes([image[-1] ^ 0xFF])


def key(relative: str):
    return load_private_key((HERE / relative).read_bytes())


def signed(image: bytes, key_file: str, previous: bytes | None) -> bytes:
    """``image`` signed with Secure Boot V2, or ``previous`` when it is that image, validly signed."""
    private = key(key_file)
    new = sbv2.sign_image(image, [private])
    if previous is not None and previous[: -sbv2.SIG_SECTOR_SIZE] == new[: -sbv2.SIG_SECTOR_SIZE]:
        if sbv2.verify_signed_file(previous, private.public_key()).ok:
            return previous
    return new


def encrypted(plaintext: bytes, previous: bytes | None) -> bytes:
    """``plaintext`` pre-encrypted, or ``previous`` when it decrypts to the same plaintext."""
    private = key(ENCRYPTION_KEY)
    if previous is not None:
        try:
            if decrypt_image(previous, private) == plaintext:
                return previous
        except (EspError, InputError):
            pass
    return encrypt_image(plaintext, private.public_key())


def build(out: Path, previous: Path | None = HERE) -> dict[str, bytes]:
    """Build every sample into ``out``; returns the files written, by name relative to ``out``.

    ``previous``: a directory whose equivalent signed/encrypted files are kept (None: sign/encrypt anew).
    """

    def earlier(name: str) -> bytes | None:
        path = None if previous is None else previous / name
        return path.read_bytes() if path is not None and path.is_file() else None

    for tool in (AS, LD):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install binutils-xtensa-lx106 (apt-get install binutils-xtensa-lx106)")
    chip = chip_by_name("esp32")
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sample in SAMPLES.items():
            elf = build_sample_elf(name, sample, Path(tmp))
            files[f"elf/{name}.elf"] = elf
            files[f"{name}.bin"] = elf2image(ElfFile(elf, f"{name}.elf"), chip, **IMAGE_OPTIONS)
        elf = build_bootloader_stub_elf(Path(tmp))
        files[f"elf/{BOOTLOADER_STUB}.elf"] = elf
        files[f"{BOOTLOADER_STUB}.bin"] = elf2image(ElfFile(elf, f"{BOOTLOADER_STUB}.elf"), chip, **IMAGE_OPTIONS)
    broken, source = BROKEN
    files[f"{broken}.bin"] = break_image(files[f"{source}.bin"])
    for name, (source, key_file) in SIGNED.items():
        elf = ElfFile(files[f"elf/{source}.elf"], f"{source}.elf")
        padded = elf2image(elf, chip, secure_pad="v2", **IMAGE_OPTIONS)
        files[f"{name}.bin"] = signed(padded, key_file, earlier(f"{name}.bin"))
    for name, source in ENCRYPTED.items():
        files[f"{name}.bin"] = encrypted(files[source], earlier(f"{name}.bin"))

    (out / "elf").mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        (out / relative).write_bytes(data)
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {relative}\n" for relative, data in sorted(files.items()))
    (out / "SHA256SUMS").write_text(sums)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="sign and encrypt anew even if equivalent files exist")
    args = parser.parse_args()
    for relative in build(args.out, None if args.fresh else HERE):
        print(args.out / relative)


if __name__ == "__main__":
    main()
