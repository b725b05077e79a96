"""``esp-ota-emu image-info IMAGE [--json]``: what esptool's ``image-info`` prints, plus validity.

The text report repeats esptool 5.6.0's ``image-info`` lines (same labels, same values) and adds a
"Validity" section: ESP-IDF's image length, what ``esp_image_verify`` says when the image is verified as
an application, and the Secure Boot signature sector or block when one follows the image. Unlike esptool
the exit code tells the answer: 0 valid, 1 invalid checksum or SHA-256, 3 not readable as an image.
"""

from __future__ import annotations

import json
import mmap
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from ..errors import EXIT_INVALID, InputError
from ..formats.app_desc import c_text, spi_flash_mode_name
from ..formats.image import SPI_MODES, WP_PIN_DISABLED
from ..formats.signature import SIG_BLOCK_MAGIC, SIG_BLOCK_V1_SIZE, SignatureBlockV1, parse_signature_sector
from ..formats.bootloader_desc import BOOTLOADER_DESC_SIZE
from ..image import EspImage, parse_image, verify_image
from ..image.reader import as_view, read_app_desc, read_bootloader_desc
from .main import cli


@contextmanager
def open_image_file(path: str):
    """The file's bytes as a read-only buffer (memory-mapped, not read into memory)."""
    try:
        with open(path, "rb") as fh:
            if Path(path).stat().st_size == 0:
                yield b""
                return
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    yield view
                finally:
                    view.release()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None


def signature_blocks(image: EspImage, view) -> list[dict]:
    """The Secure Boot signature after the image: a V2 sector at the next 4 KiB boundary, or (ESP32) a
    68-byte V1 block right after the image."""
    sector = image.signature_sector_offset
    if sector < len(view) and view[sector] == SIG_BLOCK_MAGIC:
        return [dict(block, offset=sector + 1216 * block["index"]) for block in parse_signature_sector(view[sector:])]
    end = image.end
    if image.chip and image.chip.name == "esp32" and len(view) >= end + SIG_BLOCK_V1_SIZE:
        raw = bytes(view[end : end + SIG_BLOCK_V1_SIZE])
        if raw[:4] == b"\0\0\0\0":
            block = SignatureBlockV1.parse(raw)
            return [{"index": 0, "offset": end, "scheme": "SBv1-ECDSA", "signature": block.signature.hex()}]
    return []


def app_desc_dict(desc) -> dict | None:
    if desc is None:
        return None
    return {
        "magic_word": desc.magic_word,
        "secure_version": desc.secure_version,
        "version": c_text(desc.version),
        "project_name": c_text(desc.project_name),
        "time": c_text(desc.time),
        "date": c_text(desc.date),
        "idf_ver": c_text(desc.idf_ver),
        "app_elf_sha256": desc.app_elf_sha256.hex(),
        "min_efuse_blk_rev_full": desc.min_efuse_blk_rev_full,
        "max_efuse_blk_rev_full": desc.max_efuse_blk_rev_full,
        "mmu_page_size": 1 << desc.mmu_page_size if desc.mmu_page_size else None,
        # not printed by esptool: the flash mode the app was built for (ESP-IDF v6.1+), None when not recorded
        "spi_flash_mode": spi_flash_mode_name(desc.spi_flash_mode) if desc.spi_flash_mode else None,
    }


def bootloader_desc_dict(desc) -> dict | None:
    if desc is None:
        return None
    return {
        "magic_byte": desc.magic_byte,
        "version": desc.version,
        "idf_ver": c_text(desc.idf_ver),
        "date_time": c_text(desc.date_time),
    }


def _rev(value: int, prefix: str = "v") -> str:
    """A major*100+minor revision as esptool prints it."""
    return f"{prefix}{value // 100}.{value % 100}"


def _title(lines: list[str], title: str) -> None:
    lines += [title, "=" * len(title)]


def esptool_descriptors(image: EspImage, view):
    """The descriptors esptool shows: the app description at the start of the first DROM segment, else
    the bootloader description at the start of the last DRAM segment of at least 80 bytes. (ESP-IDF
    reads both at image offset 0x20 instead: ``EspImage.app_desc`` / ``bootloader_desc``.)"""
    app_seg = boot_seg = None
    for seg in image.segments:
        if "DROM" in seg.kinds and app_seg is None:
            app_seg = seg
        elif "DRAM" in seg.kinds and seg.length >= BOOTLOADER_DESC_SIZE:
            boot_seg = seg
    if app_seg is not None:
        return read_app_desc(view, app_seg.data_offset, app_seg.length), None
    if boot_seg is not None:
        return None, read_bootloader_desc(view, boot_seg.data_offset, boot_seg.length)
    return None, None


def esptool_lines(image: EspImage, view, file_size: int) -> list[str]:
    """esptool 5.6.0 ``image-info`` output (after its version banner), line for line."""
    chip, hdr = image.chip, image.header
    lines = [f"Image size: {file_size} bytes", f"Detected image type: {chip.display}", ""]
    _title(lines, f"{chip.display} Image Header")
    lines.append("Image version: 1")
    lines.append(f"Entry point: {hdr.entry_addr:#8x}" if hdr.entry_addr else "Entry point not set")
    lines.append(f"Segments: {len(image.segments)}")
    size_bits = hdr.spi_size_speed.spi_size << 4
    size = chip.flash_size_name(size_bits)
    lines.append(f"Flash size: {size}" if size else f"WARNING: Invalid flash size ({size_bits:#02x})")
    freq_bits = hdr.spi_size_speed.spi_speed
    freq = chip.flash_freq_name(freq_bits)
    lines.append(f"Flash freq: {freq}" if freq else f"WARNING: Invalid flash frequency ({freq_bits:#02x})")
    mode = SPI_MODES[hdr.spi_mode] if hdr.spi_mode < 4 else None
    lines.append(f"Flash mode: {mode}" if mode else f"WARNING: Invalid flash mode ({hdr.spi_mode})")
    if not image.esp8266:
        lines.append("")
        _title(lines, f"{chip.display} Extended Image Header")
        lines.append(f"WP pin: {hdr.wp_pin:#02x}" + (" (disabled)" if hdr.wp_pin == WP_PIN_DISABLED else ""))
        drv = hdr.spi_pin_drv
        lines.append(
            f"Flash pins drive settings: clk_drv: {drv.clk_q.clk_drv:#02x}, q_drv: {drv.clk_q.q_drv:#02x}, "
            f"d_drv: {drv.d_cs.d_drv:#02x}, cs0_drv: {drv.d_cs.cs_drv:#02x}, "
            f"hd_drv: {drv.hd_wp.hd_drv:#02x}, wp_drv: {drv.hd_wp.wp_drv:#02x}"
        )
        lines.append(f"Chip ID: {hdr.chip_id} ({chip.display})")
        lines.append(f"Minimal chip revision: {_rev(hdr.min_chip_rev_full)}, (legacy min_rev = {hdr.min_chip_rev})")
        lines.append(f"Maximal chip revision: {_rev(hdr.max_chip_rev_full)}")
    lines.append("")
    _title(lines, "Segments Information")
    lines.append(f"{'Segment':>7}  {'Length':>7}  {'Load addr':>10}  {'File offs':>10}  {'Memory types':10}")
    lines.append(f"{'-' * 7}  {'-' * 7}  {'-' * 10}  {'-' * 10}  {'-' * 12}")
    for seg in image.segments:
        offs = seg.file_offset - image.offset
        lines.append(f"{seg.index:7}  {seg.length:#07x}  {seg.load_addr:#010x}  {offs:#010x}  {', '.join(seg.kinds)}")
    lines.append("")
    _title(lines, f"{chip.display} Image Footer")
    verdict = "valid" if image.checksum_ok else f"invalid - calculated {image.checksum_computed:#04x}"
    lines.append(f"Checksum: {image.checksum_stored:#04x} ({verdict})")
    if image.hash_appended:
        lines.append(f"Validation hash: {image.hash_computed.hex()} ({'valid' if image.hash_ok else 'invalid'})")
    app_desc, boot_desc = esptool_descriptors(image, view)
    app, boot = app_desc_dict(app_desc), bootloader_desc_dict(boot_desc)
    if app:
        lines.append("")
        _title(lines, "Application Information")
        lines += [
            f"Project name: {app['project_name']}",
            f"App version: {app['version']}",
            f"Compile time: {app['date']} {app['time']}",
            f"ELF file SHA256: {app['app_elf_sha256']}",
            f"ESP-IDF: {app['idf_ver']}",
            f"Minimal eFuse block revision: {_rev(app['min_efuse_blk_rev_full'], '')}",
            f"Maximal eFuse block revision: {_rev(app['max_efuse_blk_rev_full'], '')}",
        ]
        if app["mmu_page_size"]:
            lines.append(f"MMU page size: {app['mmu_page_size'] // 1024} KB")
        lines.append(f"Secure version: {app['secure_version']}")
    elif boot:
        lines.append("")
        _title(lines, "Bootloader Information")
        lines += [
            f"Bootloader version: {boot['version']}",
            f"ESP-IDF: {boot['idf_ver']}",
            f"Compile time: {boot['date_time']}",
        ]
    return lines


def image_report(buf, file_size: int) -> dict:
    """Everything image-info reports, as one JSON-ready dict (``lines`` holds the text report)."""
    buf = as_view(buf)
    image = parse_image(buf)
    valid = image.checksum_ok and image.hash_ok is not False
    report = {
        "chip": image.chip.name,
        "chip_display": image.chip.display,
        "chip_id": None if image.esp8266 else image.header.chip_id,
        "entry": image.header.entry_addr,
        "segment_count": len(image.segments),
        "segments": [
            {
                "index": seg.index,
                "load_addr": seg.load_addr,
                "length": seg.length,
                "file_offset": seg.file_offset,
                "data_offset": seg.data_offset,
                "kind": ", ".join(seg.kinds),
                "memory_types": list(seg.kinds),
            }
            for seg in image.segments
        ],
        "checksum": image.checksum_stored,
        "checksum_computed": image.checksum_computed,
        "checksum_ok": image.checksum_ok,
        "hash_appended": image.hash_appended,
        "sha256": None if image.hash_computed is None else image.hash_computed.hex(),
        "sha256_stored": None if image.hash_stored is None else image.hash_stored.hex(),
        "sha256_ok": image.hash_ok,
        "image_len": image.image_len,
        "app_desc": app_desc_dict(image.app_desc),
        "bootloader_desc": bootloader_desc_dict(image.bootloader_desc),
        "signature_sector_offset": image.signature_sector_offset,
        "signature_blocks": signature_blocks(image, buf),
        "valid": valid,
    }
    if not image.esp8266:
        hdr = image.header
        report.update(
            spi_mode=hdr.spi_mode,
            flash_size=image.chip.flash_size_name(hdr.spi_size_speed.spi_size << 4),
            flash_freq=image.chip.flash_freq_name(hdr.spi_size_speed.spi_speed),
            wp_pin=hdr.wp_pin,
            min_chip_rev_full=hdr.min_chip_rev_full,
            max_chip_rev_full=hdr.max_chip_rev_full,
        )
        # ESP-IDF apps always have flash-mapped segments; an image without any is checked as a bootloader.
        role = "app" if any(image.chip.should_map(seg.load_addr) for seg in image.segments) else "bootloader"
        result = verify_image(buf, 0, min(file_size, 0x1000000), is_bootloader=role == "bootloader")
        report["esp_image_verify"] = {"as": role, "esp_err": result.esp_err, "reason": result.reason}
    lines = esptool_lines(image, buf, file_size)
    lines.append("")
    _title(lines, "Validity")
    lines.append(f"Image length: {image.image_len} bytes")
    if "esp_image_verify" in report:
        verify = report["esp_image_verify"]
        lines.append(f"ESP-IDF esp_image_verify (as {verify['as']}): {verify['esp_err']} ({verify['reason']})")
    blocks = report["signature_blocks"]
    if not blocks:
        lines.append("Signature: none")
    for block in blocks:
        if block["scheme"] == "SBv1-ECDSA":
            lines.append(f"Signature: Secure Boot V1 ECDSA block at {block['offset']:#x}")
        else:
            lines.append(
                f"Signature block {block['index']} at {block['offset']:#x}: {block['scheme'] or 'unknown'}"
                + (f" {block['curve']}" if block["curve"] else "")
                + f", {'valid' if block['valid'] else 'invalid'} (CRC {'ok' if block['crc_ok'] else 'bad'})"
                + (f", key digest {block['key_digest']}" if block["key_digest"] else "")
            )
    lines.append(f"Image valid: {'yes' if valid else 'no'}")
    report["lines"] = lines
    return report


@cli.command("image-info")
@click.argument("image_path", metavar="IMAGE", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def image_info(image_path: str, as_json: bool) -> None:
    """Show an app or bootloader image: header, segments, checksum, SHA-256, descriptors, signature.

    Exit code 0 when the image is valid, 1 when its checksum or SHA-256 is wrong, 3 when the file is not
    an ESP image.
    """
    with open_image_file(image_path) as buf:
        report = image_report(buf, len(buf))
    lines = report.pop("lines")
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo("\n".join(lines))
    if not report["valid"]:
        sys.exit(EXIT_INVALID)
