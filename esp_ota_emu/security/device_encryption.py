"""Flash encryption as the device applies it: the crypt its partition I/O runs through (configured
by the eFuses), how much of an encrypted app partition to decrypt for verification, and the
bootloader's first-boot encryption of a plaintext flash (``esp_flash_encrypt_contents``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..flash import SECTOR_SIZE
from ..image import verify_image
from ..image.reader import align_up
from .flash_encryption import FlashEncryption
from .sbv2 import SIG_SECTOR_SIZE

if TYPE_CHECKING:
    from ..device import Device
    from ..efuse import Efuses
    from ..partitions import Partition

PARTITION_TABLE_SECTOR = SECTOR_SIZE  # encrypt_and_load_partition_table encrypts one sector


class DeviceCrypt:
    """The flash controller's encryption in the shape :class:`~esp_ota_emu.esp_partition.PartitionIO` uses."""

    def __init__(self, engine: FlashEncryption):
        self.engine = engine

    def encrypt(self, addr: int, data: bytes) -> bytes:
        return self.engine.encrypt(data, addr)

    def decrypt(self, addr: int, data: bytes) -> bytes:
        return self.engine.decrypt(data, addr)


def device_crypt(efuses: Efuses | None) -> DeviceCrypt | None:
    """``esp_flash_encryption_enabled()`` and the key the eFuses hold: the crypt for the device's I/O."""
    if efuses is None or not efuses.flash_encryption_enabled:
        return None
    engine = FlashEncryption.from_efuses(efuses)
    return DeviceCrypt(engine) if engine is not None else None


def plaintext_image_end(dev: Device, p: Partition) -> int:
    """How much of an encrypted app partition holds its image and signature sector: the segment
    headers are walked through decrypting reads, so that only that much needs decrypting."""
    head = dev.io.read(p, 0, 24)
    if head[0] != 0xE9:
        return min(p.size, SECTOR_SIZE)
    pos = 24
    for _ in range(min(head[1], 16)):
        if pos + 8 > p.size:
            return p.size
        seg = dev.io.read(p, pos, 8)
        pos += 8 + int.from_bytes(seg[4:8], "little")
        if pos > p.size:
            return p.size
    end = align_up(pos + 1, 16) + 32  # checksum padding, then the appended SHA-256
    return min(p.size, align_up(end, SECTOR_SIZE) + SIG_SECTOR_SIZE)


def encrypt_flash_in_place(dev: Device) -> list[str]:
    """What the bootloader does on the first boot with flash encryption enabled
    (``esp_flash_encrypt_contents``): encrypt the plaintext bootloader, the partition table and
    the partitions ESP-IDF encrypts, sector by sector (``esp_flash_encrypt_region``).
    Returns what it encrypted, for the log."""
    crypt = dev.io.crypt
    assert crypt is not None
    flash = dev.flash
    done = []

    def region(addr: int, length: int, what: str) -> None:
        length = align_up(length, SECTOR_SIZE)
        for sec in range(addr, addr + length, SECTOR_SIZE):
            plain = flash.read(sec, SECTOR_SIZE)
            flash.erase_range(sec, SECTOR_SIZE)
            flash.program(sec, crypt.encrypt(sec, plain))
        done.append(f"{what} at {addr:#x} ({length:#x} bytes)")

    chip = dev.chip
    table = dev.partitions  # read (plaintext) before the table is encrypted
    off = dev.settings.partition_table_offset
    if chip is not None:
        boot = chip.bootloader_offset
        result = verify_image(flash.view(), boot, off - boot, chip=chip, is_bootloader=True)
        if result.ok:
            length = result.image_len
            if dev.settings.secure_boot == "v2":  # then esp_image_verify_bootloader counts the signature sector
                length = min(align_up(length, SECTOR_SIZE) + SIG_SECTOR_SIZE, off - boot)
            region(boot, length, "bootloader")
            if dev.settings.secure_boot == "v1":
                digest = dev.secure_boot_digest_region()
                region(digest.offset, digest.size, "secure boot IV and digest")
    region(off, PARTITION_TABLE_SECTOR, "partition table")
    for p in table.entries:
        if p.end > flash.size:
            continue
        if p.is_app:
            if not verify_image(flash.view(), p.offset, p.size, chip=chip).ok:
                continue
        elif not (p.encrypted or (p.type == 0x01 and p.subtype in (0x00, 0x04))):
            continue
        region(p.offset, p.size, f"partition '{p.label}'")
    return done
