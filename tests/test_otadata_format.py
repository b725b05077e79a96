"""esp_ota_select_entry_t and its CRC, against the spec's vectors and arduino's real boot_app0.bin."""

from __future__ import annotations

import zlib
import struct

import pytest

from esp_ota_emu.formats.otadata import OtaSelectEntry, OtaState, build_entry, ota_seq_crc
from esp_ota_emu.otadata import OtaEntry, get_active_otadata, select_otadata


@pytest.mark.parametrize(
    "seq,crc",
    [(0, 0xFFFFFFFF), (1, 0x4743989A), (2, 0x55F63774), (3, 0xED4A5011), (4, 0x709D68A8), (5, 0xC8210FCD), (0xFFFFFFFF, 0x2144DF1C)],
)
def test_crc_vectors(seq, crc):
    assert ota_seq_crc(seq) == crc
    # and it is not the plain CRC-32 of the 4 bytes (a classic mistake)
    assert ota_seq_crc(seq) != zlib.crc32(struct.pack("<I", seq)) or seq == 0xFFFFFFFF


def test_entry_bytes_match_the_spec():
    assert build_entry(1, OtaState.NEW).hex() == "01000000" + "ff" * 20 + "00000000" + "9a984347"
    assert build_entry(2).hex() == "02000000" + "ff" * 20 + "ffffffff" + "7437f655"


def test_round_trip_keeps_every_byte():
    raw = bytes(range(32))
    assert OtaSelectEntry.build(OtaSelectEntry.parse(raw)) == raw
    assert OtaEntry.parse(1, raw).to_bytes() == raw


def test_arduino_boot_app0_selects_ota_0(realdata):
    data = (realdata / "arduino-esp32/v1.0.6_idf-v3.3.5/boot_app0.bin").read_bytes()
    e = [OtaEntry.parse(i, data[i * 0x1000 : i * 0x1000 + 32]) for i in (0, 1)]
    assert (e[0].seq, e[0].crc, e[0].crc_ok) == (1, 0x4743989A, True)
    # sector 1 holds seq 0 with crc 0xFFFFFFFF: a CRC-valid entry whose slot is 0xFFFFFFFF % n
    assert (e[1].seq, e[1].crc_ok, e[1].valid) == (0, True, True)
    assert get_active_otadata(e) == 0
    assert e[0].slot(2) == 0 and e[1].slot(2) == 0xFFFFFFFF % 2


def test_select_otadata_ties_go_to_entry_0_and_min_mode():
    e = [OtaEntry(0, 3, b"\xff" * 20, 2, ota_seq_crc(3)), OtaEntry(1, 3, b"\xff" * 20, 2, ota_seq_crc(3))]
    assert select_otadata(e, [True, True]) == 0
    e[1] = e[1].with_seq(5, 2)
    assert select_otadata(e, [True, True]) == 1
    assert select_otadata(e, [True, True], use_max=False) == 0
    assert select_otadata(e, [False, True]) == 1
    assert select_otadata(e, [False, False]) == -1


def test_invalid_ignores_crc_but_valid_needs_it():
    bad_crc = OtaEntry(0, 2, b"\xff" * 20, OtaState.NEW, 0x12345678)
    assert not bad_crc.invalid and not bad_crc.valid
    aborted = OtaEntry(0, 2, b"\xff" * 20, OtaState.ABORTED, ota_seq_crc(2))
    assert aborted.invalid and not aborted.valid
