"""Test flashes assembled from real parts: a real bootloader, a table from CSV, sample or real apps.

Written with ``Flash.write_raw`` (as ``esptool write-flash`` would put them), so the tests start from
exactly the bytes a programmed device holds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from esp_ota_emu.flash import SECTOR_SIZE, Flash
from esp_ota_emu.formats.otadata import build_entry
from esp_ota_emu.image import parse_image
from esp_ota_emu.partitions import PartitionTable
from esp_ota_emu.security import sbv2
from esp_ota_emu.security.keys import load_private_key

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "firmware_samples"
# IDF 4.4.2 bootloader built with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE (booted in QEMU by the data set's authors)
ROLLBACK_BOOTLOADER = "arduino-esp32/v2.0.5_custom-logging-rollback_via_chegewara/bootloader_dio_40m.bin"
# IDF v5.2 bootloader, rollback off
V52_BOOTLOADER = "esptool/images/bootloader_esp32_v5_2.bin"
# IDF v4.4.3 bootloader (Tasmota's): small enough that, padded and with a signature sector, it fits before 0x8000
SMALL_BOOTLOADER = "arduino-esp32/v2.0.5_tasmota_idf-v4.4.3_via_KhitNay/esp32/bootloader_dio_40m.bin"
# Arduino-ESP32 v2.0.4's stock bootloader (IDF v4.4.2): also fits with a signature sector
STOCK_BOOTLOADER = "arduino-esp32/v2.0.4_stock_via_chegewara/esp32/bootloader_dio_40m.bin"
MERGED_4MB = "derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"
# A 1 MB layout for the samples: factory and two 192 KB OTA slots, otadata at 0xd000.
SMALL_LAYOUT = """\
nvs, data, nvs, 0x9000, 0x4000,
otadata, data, ota, 0xd000, 0x2000,
factory, app, factory, 0x10000, 0x30000,
ota_0, app, ota_0, 0x40000, 0x30000,
ota_1, app, ota_1, 0x70000, 0x30000,
"""
SMALL_OTADATA = 0xD000


def signed_bootloader(realdata: Path, key_file: Path, name: str = SMALL_BOOTLOADER) -> bytes:
    """A real ESP32 bootloader with a Secure Boot V2 signature sector, as a device with Secure Boot V2
    needs: its ROM checks the bootloader at every reset."""
    return sbv2.sign_image((realdata / name).read_bytes(), [load_private_key(key_file.read_bytes())])


def sample(name: str) -> bytes:
    """A firmware sample: ``v1``, ``v2``, ``v3`` (secure_version 2) or ``broken`` (bad SHA-256)."""
    return (SAMPLES / f"sample_{name}.bin").read_bytes()


def real_app(realdata: Path) -> bytes:
    """The Arduino (IDF 4.4.7) app at 0x10000 of the real merged 4 MB image, trimmed to its image length."""
    from esp_ota_emu.image import parse_image

    data = (realdata / MERGED_4MB).read_bytes()
    image = parse_image(memoryview(data), 0x10000, 0x140000, layout="esp32")
    return data[0x10000 : 0x10000 + image.image_len]


def make_flash(
    path: Path,
    realdata: Path,
    csv: str,
    apps: dict[str, bytes] | None = None,
    *,
    size: int = 4 << 20,
    bootloader: str | bytes = ROLLBACK_BOOTLOADER,
    otadata: tuple[bytes | None, bytes | None] | None = None,
) -> Path:
    """Create ``path``: bootloader (a file in realdata, or its bytes) at 0x1000, the CSV's table at 0x8000,
    ``apps`` by label, otadata entries."""
    table = PartitionTable.from_csv(csv)
    with Flash.create(path, size) as flash:
        flash.write_raw(0x1000, bootloader if isinstance(bootloader, bytes) else (realdata / bootloader).read_bytes())
        flash.write_raw(0x8000, table.to_binary())
        for label, image in (apps or {}).items():
            flash.write_raw(table.find(label).offset, image)
        if otadata is not None:
            write_otadata(flash, table.otadata().offset, *otadata)
    return path


def write_otadata(flash: Flash, offset: int, e0: bytes | None, e1: bytes | None) -> None:
    """Set both otadata sectors: each an entry (32 bytes) then 0xFF, or all 0xFF for None."""
    for i, entry in enumerate((e0, e1)):
        sector = (entry or b"").ljust(SECTOR_SIZE, b"\xff")
        flash.write_raw(offset + i * SECTOR_SIZE, sector)


def entry(seq: int, state: int = 0xFFFFFFFF, crc: int | None = None) -> bytes:
    return build_entry(seq, state, crc=crc)


def rehash(data: bytearray) -> None:
    """Recompute the appended SHA-256 (if the image has one) after an edit, as esptool does when it
    patches a header."""
    image = parse_image(bytes(data), layout="esp32")
    if image.hash_appended:
        end = image.checksum_offset + 1
        data[end : end + 32] = hashlib.sha256(bytes(data[:end])).digest()
