"""``esp_ota_select_entry_t``: one 32-byte entry at the start of each otadata sector.

Layout and CRC as in ESP-IDF's esp_flash_partitions.h and bootloader_common_ota_select_crc():
the CRC covers ``ota_seq`` only and is ``esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4)``, which is
``zlib.crc32(le32(seq), 0xFFFFFFFF)``.
"""

from __future__ import annotations

import struct
import zlib
from enum import IntEnum

from construct import Bytes, Int32ul, Struct

OTADATA_ENTRY_SIZE = 32
OTADATA_SECTORS = 2
SEQ_BLANK = 0xFFFFFFFF


class OtaState(IntEnum):
    """``esp_ota_img_states_t``."""

    NEW = 0x0
    PENDING_VERIFY = 0x1
    VALID = 0x2
    INVALID = 0x3
    ABORTED = 0x4
    UNDEFINED = 0xFFFFFFFF


OtaSelectEntry = Struct(
    "ota_seq" / Int32ul,
    "seq_label" / Bytes(20),
    "ota_state" / Int32ul,
    "crc" / Int32ul,
)


def ota_seq_crc(seq: int) -> int:
    """bootloader_common_ota_select_crc(): CRC-32 of the little-endian seq with init 0xFFFFFFFF."""
    return zlib.crc32(struct.pack("<I", seq & 0xFFFFFFFF), 0xFFFFFFFF) & 0xFFFFFFFF


def state_name(state: int) -> str | int:
    """The ESP-IDF name of an ota_state, or the number when it has none."""
    try:
        return OtaState(state).name
    except ValueError:
        return state



def build_entry(seq: int, state: int = OtaState.UNDEFINED, *, seq_label: bytes = b"\xff" * 20, crc: int | None = None) -> bytes:
    """The 32 bytes of an otadata entry (CRC computed unless given)."""
    return OtaSelectEntry.build(
        dict(ota_seq=seq, seq_label=seq_label, ota_state=state, crc=ota_seq_crc(seq) if crc is None else crc)
    )
