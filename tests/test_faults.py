"""Fault injection in the flash model: undo log, clean cuts before operation k, torn erases and programs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esp_ota_emu.faults import CutInjector, OpRecorder, PowerCut, UndoLog, cut_rng, tear
from esp_ota_emu.flash import SECTOR_SIZE, Flash, FlashOp

SIZE = 16 * SECTOR_SIZE
EXAMPLES = int(os.environ.get("ESP_OTA_EMU_FUZZ_EXAMPLES", "40"))


def new_flash(folder: Path, seed: int = 1) -> Flash:
    """A 64 KiB flash holding pseudo-random bytes (so erases and programs visibly change it)."""
    path = folder / "flash.bin"
    path.write_bytes(cut_rng(seed, 0).randbytes(SIZE))
    return Flash.open(path)


ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("erase"), st.integers(0, 15), st.integers(1, 3)),
        st.tuples(st.just("program"), st.integers(0, SIZE - 1), st.binary(min_size=1, max_size=600)),
    ),
    min_size=1,
    max_size=25,
)


def apply_ops(flash: Flash, ops) -> None:
    for kind, a, b in ops:
        if kind == "erase":
            count = min(b, 16 - a)
            flash.erase_range(a * SECTOR_SIZE, count * SECTOR_SIZE)
        else:
            data = b[: SIZE - a]
            flash.program(a, data)


@settings(max_examples=EXAMPLES, deadline=None)
@given(ops=ops_strategy, split=st.integers(0, 25))
def test_undo_log_restores_every_byte(ops, split):
    with tempfile.TemporaryDirectory() as tmp:
        with new_flash(Path(tmp)) as flash:
            original = flash.read(0, SIZE)
            undo = UndoLog(flash)
            apply_ops(flash, ops[:split])
            middle, mark = flash.read(0, SIZE), undo.mark()
            apply_ops(flash, ops[split:])
            undo.restore(mark)
            assert flash.read(0, SIZE) == middle
            undo.restore(0)
            assert flash.read(0, SIZE) == original
            assert undo.entries == []


@settings(max_examples=EXAMPLES, deadline=None)
@given(ops=ops_strategy, data=st.data())
def test_cut_before_k_leaves_exactly_the_first_k_operations(ops, data):
    with tempfile.TemporaryDirectory() as tmp:
        with new_flash(Path(tmp)) as flash:
            recorder = OpRecorder()
            flash.hooks.append(recorder)
            undo = UndoLog(flash)
            apply_ops(flash, ops)
            n = len(recorder.ops)
            k = data.draw(st.integers(0, n - 1))
            undo.restore(0)
            flash.hooks.remove(recorder)
            # Expected: the first k recorded operations applied, nothing else.
            for op in recorder.ops[:k]:
                flash.apply(op)
            expected = flash.read(0, SIZE)
            undo.restore(0)  # apply() bypasses hooks: the undo log did not see those; start again
            flash.write_raw(0, cut_rng(1, 0).randbytes(SIZE))
            cutter = CutInjector(flash)
            cutter.arm(k)
            with pytest.raises(PowerCut) as cut:
                apply_ops(flash, ops)
            assert cut.value.index == k and cut.value.torn is None
            assert flash.read(0, SIZE) == expected


def test_torn_program_writes_a_prefix_with_and_semantics(tmp_path):
    with new_flash(tmp_path) as flash:
        before = flash.read(0x1234, 500)
        data = bytes(range(250)) * 2
        op = FlashOp(7, "program", 0x1234, 500, data)
        left = tear(flash, op, cut_rng(42, 7))
        n = int(left.split(": ")[1].split(" of ")[0])
        assert 0 <= n < 500 and left.endswith("of 500 bytes written")
        after = flash.read(0x1234, 500)
        assert after[:n] == bytes(o & d for o, d in zip(before, data[:n]))
        assert after[n:] == before[n:]
        assert flash.read(0, 0x1234) == cut_rng(1, 0).randbytes(SIZE)[:0x1234]


@pytest.mark.parametrize("seed", range(12))
def test_torn_erase_is_partial_and_only_raises_bits(tmp_path, seed):
    with new_flash(tmp_path) as flash:
        before = flash.read(0, SIZE)
        op = FlashOp(3, "erase", 2 * SECTOR_SIZE, 4 * SECTOR_SIZE)
        left = tear(flash, op, cut_rng(seed, 3))
        after = flash.read(0, SIZE)
        torn = int(left.split("sector 0x")[1].split(":")[0], 16)
        assert 2 * SECTOR_SIZE <= torn < 6 * SECTOR_SIZE
        assert after[2 * SECTOR_SIZE : torn] == b"\xff" * (torn - 2 * SECTOR_SIZE)  # sectors before: erased
        assert after[torn + SECTOR_SIZE :] == before[torn + SECTOR_SIZE :]  # sectors after: untouched
        assert after[: 2 * SECTOR_SIZE] == before[: 2 * SECTOR_SIZE]
        sector, old = after[torn : torn + SECTOR_SIZE], before[torn : torn + SECTOR_SIZE]
        assert all(a | o == a for a, o in zip(sector, old))  # an erase only ever sets bits
        if "random bits" in left:
            assert sector != old and sector != b"\xff" * SECTOR_SIZE
        else:
            n = int(left.split("first ")[1].split(" ")[0])
            assert sector[:n] == b"\xff" * n and sector[n:] == old[n:]


def test_torn_operations_are_reproducible_from_seed_and_index(tmp_path):
    results = []
    for run in range(3):
        folder = tmp_path / str(run)
        folder.mkdir()
        with new_flash(folder) as flash:
            cutter = CutInjector(flash)
            undo = UndoLog(flash)
            seed = 5 if run < 2 else 6
            cutter.arm(2, torn=True, seed=seed)
            with pytest.raises(PowerCut) as cut:
                flash.program(0x100, b"\x00" * 64)
                flash.erase_range(0x2000, 0x3000)
                flash.erase_range(0x8000, 0x4000)  # operation 2: torn
            results.append((cut.value.torn, flash.read(0, SIZE)))
            # the undo log saw the torn operation's range before it was torn
            undo.restore(0)
            assert flash.read(0, SIZE) == cut_rng(1, 0).randbytes(SIZE)
    assert results[0] == results[1]
    assert results[0] != results[2]


def test_disarmed_injector_and_cut_after_the_last_operation(tmp_path):
    with new_flash(tmp_path) as flash:
        cutter = CutInjector(flash)
        cutter.arm(5)
        flash.erase_sector(0)
        flash.program(0, b"\x01")
        assert cutter.armed  # never reached operation 5: a cut "after the final op" changes nothing
        cutter.disarm()
        flash.erase_sector(0)
        assert flash.op_count == 3
