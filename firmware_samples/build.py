"""Build the sample ESP32 applications from source, reproducibly.

    python firmware_samples/build.py [--out DIR]

Assembles src/*.s with binutils-xtensa-lx106 (base Xtensa ISA, which the ESP32's LX6 runs), links
with esp32_app.ld, turns each ELF into an esp_image with esp-ota-emu's own elf2image and writes
``elf/sample_*.elf``, ``sample_*.bin`` and ``SHA256SUMS`` under DIR (default: this directory).
Nothing depends on time or on where the tree lives, so every build gives the same bytes.
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
from esp_ota_emu.image.builder import elf2image
from esp_ota_emu.image.elf import ElfFile

HERE = Path(__file__).resolve().parent
AS = "xtensa-lx106-elf-as"
LD = "xtensa-lx106-elf-ld"

# name -> SAMPLE number given to src/app_desc.s (which picks version and secure_version).
SAMPLES = {"sample_v1": 1, "sample_v2": 2, "sample_v3": 3}
# The broken sample: sample_v2 with the last byte of its appended SHA-256 digest inverted.
BROKEN = ("sample_broken", "sample_v2")
# Header flash parameters: what a 4 MB DIO module (and QEMU's 4 MB flash) uses.
IMAGE_OPTIONS = dict(flash_mode="dio", flash_freq="40m", flash_size="4MB")


def run(*command: str, cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def build_elf(name: str, sample: int, work: Path) -> bytes:
    """Assemble and link one sample; paths are relative so none ends up in the ELF."""
    desc = work / f"app_desc_{sample}.o"
    main = work / "main.o"
    run(AS, "--defsym", f"SAMPLE={sample}", "-o", str(desc), "src/app_desc.s", cwd=HERE)
    run(AS, "-o", str(main), "src/main.s", cwd=HERE)
    elf = work / f"{name}.elf"
    run(LD, "-T", "esp32_app.ld", "-o", str(elf), str(main), str(desc), cwd=HERE)
    return elf.read_bytes()


def break_image(image: bytes) -> bytes:
    """Invert the last byte of the appended SHA-256: the header and checksum stay valid."""
    return image[:-1] + bytes([image[-1] ^ 0xFF])


def build(out: Path) -> dict[str, bytes]:
    """Build every sample into ``out``; returns the files written, by name relative to ``out``."""
    for tool in (AS, LD):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install binutils-xtensa-lx106 (apt-get install binutils-xtensa-lx106)")
    chip = chip_by_name("esp32")
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sample in SAMPLES.items():
            elf = build_elf(name, sample, Path(tmp))
            files[f"elf/{name}.elf"] = elf
            files[f"{name}.bin"] = elf2image(ElfFile(elf, f"{name}.elf"), chip, **IMAGE_OPTIONS)
    broken, source = BROKEN
    files[f"{broken}.bin"] = break_image(files[f"{source}.bin"])

    (out / "elf").mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        (out / relative).write_bytes(data)
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {relative}\n" for relative, data in sorted(files.items()))
    (out / "SHA256SUMS").write_text(sums)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: %(default)s)")
    args = parser.parse_args()
    for relative in build(args.out):
        print(args.out / relative)


if __name__ == "__main__":
    main()
