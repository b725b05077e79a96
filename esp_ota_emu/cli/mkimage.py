"""``esp-ota-emu mkimage``: an esp_image from an ELF file, byte for byte as ``esptool elf2image``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click

from ..chips import CHIPS, chip_by_name
from ..errors import InputError
from ..image.builder import FLASH_MODES, elf2image, size_bytes
from ..image.elf import ElfFile
from .main import cli

_FLASH_FREQS = sorted({name for chip in CHIPS for name, _ in chip.flash_freqs}, key=lambda f: -int(f[:-1]))
_FLASH_SIZES = [name for name, _ in CHIPS[0].flash_sizes]
_MMU_PAGE_SIZES = {"64KB": 0x10000, "32KB": 0x8000, "16KB": 0x4000, "8KB": 0x2000}


@cli.command("mkimage")
@click.argument("elf", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Image file to write.")
@click.option("--chip", default="esp32", show_default=True, type=click.Choice([c.name for c in CHIPS]), help="Target chip.")
@click.option("--flash-mode", "-fm", default="qio", show_default=True, type=click.Choice(list(FLASH_MODES)), help="SPI flash mode in the header.")
@click.option("--flash-freq", "-ff", default=None, type=click.Choice(_FLASH_FREQS), help="SPI flash frequency in the header (default: the chip's nibble 0).")
@click.option("--flash-size", "-fs", default="1MB", show_default=True, type=click.Choice(_FLASH_SIZES), help="Flash size in the header.")
@click.option("--min-rev", "-r", default=0, type=click.IntRange(0, 255), hidden=True, help="Legacy minimum chip revision byte.")
@click.option("--min-rev-full", default=0, show_default=True, type=click.IntRange(0, 65535), help="Minimum chip revision (major*100+minor).")
@click.option("--max-rev-full", default=65535, show_default=True, type=click.IntRange(0, 65535), help="Maximum chip revision (major*100+minor).")
@click.option("--secure-pad", "secure_pad", flag_value="v1", default=None, help="ESP32 Secure Boot V1: pad so the signed image ends on a 64 KB boundary.")
@click.option("--secure-pad-v2", "secure_pad", flag_value="v2", help="Secure Boot V2: pad so the signature sector starts on the next 64 KB boundary.")
@click.option("--elf-sha256-offset", default=None, type=lambda v: int(v, 0), help="Put the ELF's SHA-256 at this image offset.")
@click.option("--dont-append-digest", is_flag=True, help="Don't append the SHA-256 of the image.")
@click.option("--use-segments", is_flag=True, help="Use the ELF program headers instead of its sections.")
@click.option("--flash-mmu-page-size", default=None, type=click.Choice(list(_MMU_PAGE_SIZES)), help="MMU page size (chips where it is configurable).")
@click.option("--pad-to-size", default=None, help="Pad the image with 0xFF to a multiple of this size (e.g. 64KB, 1MB).")
@click.option("--json", "as_json", is_flag=True, help="Report as one JSON object.")
def mkimage(
    elf: Path,
    output: Path,
    chip: str,
    flash_mode: str,
    flash_freq: str | None,
    flash_size: str,
    min_rev: int,
    min_rev_full: int,
    max_rev_full: int,
    secure_pad: str | None,
    elf_sha256_offset: int | None,
    dont_append_digest: bool,
    use_segments: bool,
    flash_mmu_page_size: str | None,
    pad_to_size: str | None,
    as_json: bool,
) -> None:
    """Build an app or bootloader image from ELF, as `esptool --chip CHIP elf2image` does."""
    image = elf2image(
        ElfFile.open(elf),
        chip_by_name(chip),
        flash_mode=flash_mode,
        flash_freq=flash_freq,
        flash_size=flash_size,
        min_rev=min_rev,
        min_rev_full=min_rev_full,
        max_rev_full=max_rev_full,
        secure_pad=secure_pad,
        elf_sha256_offset=elf_sha256_offset,
        append_digest=not dont_append_digest,
        use_segments=use_segments,
        flash_mmu_page_size=_MMU_PAGE_SIZES[flash_mmu_page_size] if flash_mmu_page_size else None,
        pad_to_size=size_bytes(pad_to_size) if pad_to_size else 0,
    )
    try:
        output.write_bytes(image)
    except OSError as err:
        raise InputError(f"cannot write {output}: {err.strerror}") from None
    if as_json:
        report = {
            "output": str(output),
            "chip": chip,
            "size": len(image),
            "segments": image[1],
            "sha256": hashlib.sha256(image).hexdigest(),
        }
        click.echo(json.dumps(report))
    else:
        click.echo(f"Wrote {output}: {chip} image, {image[1]} segments, {len(image)} bytes")
