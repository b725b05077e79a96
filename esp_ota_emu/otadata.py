"""The otadata partition: its two ``esp_ota_select_entry_t`` copies and the shared selection rules.

Reproduces bootloader_common_ota_select_valid/_invalid, bootloader_common_select_otadata and
bootloader_common_get_active_otadata, used alike by the 2nd-stage bootloader and by esp_ota_ops.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .esp_partition import PartitionIO
from .flash import SECTOR_SIZE
from .formats.otadata import (
    OTADATA_ENTRY_SIZE,
    SEQ_BLANK,
    OtaSelectEntry,
    OtaState,
    build_entry,
    ota_seq_crc,
    state_name,
)
from .interrupts import interrupts_deferred
from .partitions import Partition


@dataclass(frozen=True)
class OtaEntry:
    """One otadata copy as read from sector ``sector`` (0 or 1) of the otadata partition."""

    sector: int
    seq: int
    seq_label: bytes
    state: int
    crc: int

    @classmethod
    def parse(cls, sector: int, raw: bytes) -> OtaEntry:
        e = OtaSelectEntry.parse(raw)
        return cls(sector, e.ota_seq, e.seq_label, e.ota_state, e.crc)

    def to_bytes(self) -> bytes:
        return build_entry(self.seq, self.state, seq_label=self.seq_label, crc=self.crc)

    @property
    def crc_ok(self) -> bool:
        return self.crc == ota_seq_crc(self.seq)

    @property
    def invalid(self) -> bool:
        """bootloader_common_ota_select_invalid(): blank seq or an INVALID / ABORTED state (no CRC check)."""
        return self.seq == SEQ_BLANK or self.state in (OtaState.INVALID, OtaState.ABORTED)

    @property
    def valid(self) -> bool:
        """bootloader_common_ota_select_valid(): not invalid and the CRC matches."""
        return not self.invalid and self.crc_ok

    @property
    def blank_or_bad_crc(self) -> bool:
        """The "initial contents" test of the bootloader: seq 0xFFFFFFFF or a wrong CRC."""
        return self.seq == SEQ_BLANK or not self.crc_ok

    def slot(self, ota_app_count: int) -> int:
        """``(ota_seq - 1) % ota_app_count`` in uint32 arithmetic, as ESP-IDF computes it."""
        return ((self.seq - 1) & 0xFFFFFFFF) % ota_app_count

    def with_seq(self, seq: int, state: int) -> OtaEntry:
        """rewrite_ota_seq(): new seq and state, CRC recomputed, the label kept as read."""
        return replace(self, seq=seq, state=state, crc=ota_seq_crc(seq))

    def with_state(self, state: int) -> OtaEntry:
        return replace(self, state=state)

    def to_json(self) -> dict:
        return {
            "sector": self.sector,
            "seq": self.seq,
            "state": state_name(self.state),
            "crc": self.crc,
            "crc_ok": self.crc_ok,
            "valid": self.valid,
        }

    def describe(self) -> str:
        seq = "blank" if self.seq == SEQ_BLANK else str(self.seq)
        return f"entry {self.sector}: seq {seq}, state {state_name(self.state)}, crc {'ok' if self.crc_ok else 'bad'}"


def select_otadata(entries: list[OtaEntry], usable: list[bool], use_max: bool = True) -> int:
    """bootloader_common_select_otadata(): the index of the usable entry with the max (or min) seq.

    Ties go to entry 0; with one usable entry that one; none -> -1.
    """
    if usable[0] and usable[1]:
        pick = max if use_max else min
        target = pick(entries[0].seq, entries[1].seq)
        return 0 if entries[0].seq == target else 1
    if usable[0]:
        return 0
    if usable[1]:
        return 1
    return -1


def get_active_otadata(entries: list[OtaEntry]) -> int:
    """bootloader_common_get_active_otadata()."""
    return select_otadata(entries, [e.valid for e in entries], True)


class OtaData:
    """Reading and rewriting the two otadata sectors of a device."""

    def __init__(self, io: PartitionIO, partition: Partition):
        self.io = io
        self.partition = partition

    def read(self) -> list[OtaEntry]:
        return [
            OtaEntry.parse(i, self.io.read(self.partition, i * SECTOR_SIZE, OTADATA_ENTRY_SIZE)) for i in (0, 1)
        ]

    def write(self, entry: OtaEntry) -> None:
        """Erase the entry's sector, then program its 32 bytes (the rest of the sector stays 0xFF); Ctrl-C
        waits until both are done."""
        data = entry.to_bytes()
        if self.io.encrypted(self.partition):
            data = data.ljust(OTADATA_ENTRY_SIZE, b"\xff")
        with interrupts_deferred():
            self.io.erase_range(self.partition, entry.sector * SECTOR_SIZE, SECTOR_SIZE)
            self.io.write(self.partition, entry.sector * SECTOR_SIZE, data)

    def erase_sector(self, sector: int) -> None:
        self.io.erase_range(self.partition, sector * SECTOR_SIZE, SECTOR_SIZE)

    def erase(self) -> None:
        self.io.erase_range(self.partition, 0, self.partition.size)
