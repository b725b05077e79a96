"""``esp_partition_read`` / ``esp_partition_write`` / ``esp_partition_erase_range`` over the flash model.

Reproduces the app-side bounds rules of ESP-IDF's partition_target.c (error names included) and the
transparent flash encryption of partitions that are encrypted: with flash encryption on, writes to
such partitions go through the encryption engine and reads are decrypted, as through the cache.
"""

from __future__ import annotations

from typing import Callable, Protocol

from .errors import EspError
from .flash import SECTOR_SIZE, Flash
from .formats.partition_table import APP, BOOTLOADER, DATA, PARTITION_TABLE
from .interrupts import interrupts_deferred
from .partitions import Partition

_COPY_PIECE = 0x10000  # one MMU page


class FlashCrypt(Protocol):
    """What the flash-encryption engine offers: en/decrypt bytes stored at a flash address."""

    def encrypt(self, addr: int, data: bytes) -> bytes: ...

    def decrypt(self, addr: int, data: bytes) -> bytes: ...


def forced_encrypted(p: Partition) -> bool:
    """With flash encryption on, ESP-IDF treats app, bootloader, partition table, otadata and nvs_keys
    partitions as encrypted."""
    return p.type in (APP, BOOTLOADER, PARTITION_TABLE) or (p.type == DATA and p.subtype in (0x00, 0x04)) or p.encrypted


class PartitionIO:
    """Partition-relative flash access with ESP-IDF's checks; ``crypt`` is set when flash encryption is on.

    ``protect(addr, length)``, when set, is esp_flash's check of every erase and write against the
    regions it deems dangerous (see :meth:`Device.check_dangerous_write`); it raises to refuse.
    """

    def __init__(self, flash: Flash, crypt: FlashCrypt | None = None,
                 protect: Callable[[int, int], None] | None = None):
        self.flash = flash
        self.crypt = crypt
        self.protect = protect

    def encrypted(self, p: Partition) -> bool:
        return self.crypt is not None and forced_encrypted(p)

    @staticmethod
    def _check(p: Partition, offset: int, length: int) -> None:
        if offset > p.size:
            raise EspError("ESP_ERR_INVALID_ARG", f"offset 0x{offset:x} is past the end of partition '{p.label}'")
        if length > p.size - offset:
            raise EspError(
                "ESP_ERR_INVALID_SIZE",
                f"0x{length:x} bytes at 0x{offset:x} do not fit partition '{p.label}' (size 0x{p.size:x})",
            )

    def read(self, p: Partition, offset: int, length: int) -> bytes:
        self._check(p, offset, length)
        data = self.flash.read(p.offset + offset, length)
        if self.encrypted(p):
            start = (p.offset + offset) & ~0xF
            pad = (p.offset + offset) - start
            whole = self.flash.read(start, (pad + length + 15) & ~0xF)
            data = self.crypt.decrypt(start, whole)[pad : pad + length]
        return data

    def write(self, p: Partition, offset: int, data: bytes) -> None:
        self._check(p, offset, len(data))
        if p.readonly:
            raise EspError("ESP_ERR_NOT_ALLOWED", f"partition '{p.label}' is read-only")
        if self.protect is not None:
            self.protect(p.offset + offset, len(data))
        if self.encrypted(p):
            if offset % 16 or len(data) % 16:
                raise EspError("ESP_ERR_INVALID_SIZE", "encrypted writes must be 16-byte aligned")
            data = self.crypt.encrypt(p.offset + offset, bytes(data))
        self.flash.program(p.offset + offset, data)

    def erase_range(self, p: Partition, offset: int, length: int) -> None:
        if offset % SECTOR_SIZE:
            raise EspError("ESP_ERR_INVALID_ARG", f"erase offset 0x{offset:x} is not sector aligned")
        if length % SECTOR_SIZE:
            raise EspError("ESP_ERR_INVALID_SIZE", f"erase size 0x{length:x} is not a multiple of 4 KiB")
        self._check(p, offset, length)
        if p.readonly:
            raise EspError("ESP_ERR_NOT_ALLOWED", f"partition '{p.label}' is read-only")
        if self.protect is not None:
            self.protect(p.offset + offset, length)
        self.flash.erase_range(p.offset + offset, length)

    def copy(self, dest: Partition, dest_offset: int, src: Partition, src_offset: int, size: int) -> None:
        """``esp_partition_copy``: erase ``ALIGN_UP(size)`` bytes of ``dest``, then write ``src``'s bytes
        there as read through the cache (decrypted, re-encrypted for an encrypted ``dest``). Written in
        64 KiB pieces (ESP-IDF writes as much as its free MMU pages map at once). Ctrl-C waits until the
        copy is done: a half-copied bootloader or partition table boots nothing."""
        if src == dest:
            raise EspError("ESP_ERR_INVALID_ARG", "esp_partition_copy: source and destination are the same partition")
        if src_offset + size > src.size or dest_offset + size > dest.size:
            raise EspError(
                "ESP_ERR_INVALID_SIZE",
                f"cannot copy 0x{size:x} bytes from '{src.label}' (0x{src.size:x} bytes) to '{dest.label}' "
                f"(0x{dest.size:x} bytes)",
            )
        with interrupts_deferred():
            self.erase_range(dest, dest_offset, -(-size // SECTOR_SIZE) * SECTOR_SIZE)
            for done in range(0, size, _COPY_PIECE):
                n = min(_COPY_PIECE, size - done)
                self.write(dest, dest_offset + done, self.read(src, src_offset + done, n))
