"""The NOR flash model: erase sets 0xFF, program only clears bits, every operation is observable."""

from __future__ import annotations

import hashlib
import os
import random
import select
import threading
from contextlib import contextmanager
from types import SimpleNamespace
from unittest import mock

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from esp_ota_emu.errors import InputError
from esp_ota_emu.flash import SECTOR_SIZE, SHA256_STEP, Flash, FlashError, parse_size, qemu_size_warning


@pytest.fixture
def flash(tmp_path):
    with Flash.create(tmp_path / "f.bin", 64 * 1024) as f:
        yield f


def test_new_flash_is_erased(flash):
    assert flash.size == 64 * 1024
    assert flash.is_erased(0, flash.size)


def test_program_only_clears_bits(flash):
    flash.program(0x100, b"\x0f\xf0")
    flash.program(0x100, b"\xf0\xff")  # 1 over 0 keeps the 0: 0x0f & 0xf0 = 0x00
    assert flash.read(0x100, 2) == b"\x00\xf0"


def test_strict_mode_reports_programming_unerased_bytes(tmp_path):
    with Flash.create(tmp_path / "s.bin", SECTOR_SIZE, strict=True) as f:
        f.program(0x10, b"\x00")
        f.program(0x10, b"\x00")  # no bit goes from 0 to 1: allowed
        with pytest.raises(FlashError, match="0x10"):
            f.program(0x10, b"\x01")
        assert f.read(0x10, 1) == b"\x00"


def test_erase_is_sector_aligned_and_sets_ff(flash):
    flash.program(0x1000, b"\x00" * 0x2000)
    flash.erase_range(0x1000, 0x1000)
    assert flash.is_erased(0x1000, 0x1000)
    assert flash.read(0x2000, 4) == b"\x00" * 4
    with pytest.raises(FlashError, match="aligned"):
        flash.erase_range(0x1800, 0x1000)
    with pytest.raises(FlashError, match="outside"):
        flash.program(flash.size - 1, b"ab")


def test_counters_and_hooks_see_every_operation(flash):
    seen = []
    flash.hooks.append(seen.append)
    flash.erase_range(0, 2 * SECTOR_SIZE)
    flash.program(SECTOR_SIZE - 2, b"abcd")  # spans sectors 0 and 1
    assert [(op.index, op.kind, op.addr, op.length) for op in seen] == [
        (0, "erase", 0, 0x2000),
        (1, "program", 0xFFE, 4),
    ]
    assert list(flash.erase_count[:3]) == [1, 1, 0]
    assert list(flash.program_count[:3]) == [1, 1, 0]


def test_a_hook_can_cut_the_power_before_an_operation(flash):
    class PowerCut(Exception):
        pass

    def cut(op):
        if op.index == 1:
            raise PowerCut

    flash.hooks.append(cut)
    flash.program(0, b"\x00")
    with pytest.raises(PowerCut):
        flash.program(1, b"\x00")
    assert flash.read(0, 2) == b"\x00\xff"


def test_contents_persist_in_the_file(tmp_path):
    path = tmp_path / "p.bin"
    with Flash.create(path, SECTOR_SIZE) as f:
        f.program(0, b"hello")
    assert path.read_bytes()[:6] == b"hello\xff"


def test_view_is_zero_copy_and_read_only(flash):
    flash.program(0, b"xy")
    v = flash.view(0, 4)
    assert bytes(v) == b"xy\xff\xff"
    flash.program(2, b"z")
    assert bytes(v) == b"xyz\xff"
    with pytest.raises(TypeError):
        v[0] = 0


def test_empty_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        Flash.open(tmp_path / "empty.bin")
    with pytest.raises(InputError, match="cannot open"):
        Flash.open(tmp_path / "missing.bin")


def test_sizes_and_qemu_warning():
    assert parse_size("4MB") == 4 << 20
    assert parse_size("512KB") == 512 << 10
    assert parse_size("0x200000") == 2 << 20
    assert qemu_size_warning(4 << 20) is None
    assert "QEMU" in qemu_size_warning(3 << 20)
    assert "QEMU" in qemu_size_warning(32 << 20)
    with pytest.raises(InputError):
        parse_size("four megs")


def test_close_with_a_live_view_keeps_the_written_bytes(tmp_path):
    path = tmp_path / "v.bin"
    f = Flash.create(path, SECTOR_SIZE)
    f.program(0, b"ok")
    view = f.view(0, 2)  # e.g. held by the traceback of an error raised while verifying
    f.close()
    assert path.read_bytes()[:2] == b"ok" and bytes(view) == b"ok"


SMALL = 4 * SECTOR_SIZE  # small, so that random operations overlap often


def _random_operations(rng, count: int):
    """Erases of whole sectors, programs and raw writes at any offset, of random bytes or of runs of one
    value (runs make AND and copy differ visibly)."""
    for _ in range(count):
        kind = rng.choice(("erase", "program", "raw"))
        if kind == "erase":
            first = rng.randrange(4)
            yield kind, first * SECTOR_SIZE, rng.randrange(1, 5 - first) * SECTOR_SIZE
        else:
            where, n = rng.randrange(SMALL), rng.randrange(1, 2 * SECTOR_SIZE)
            data = rng.randbytes(n) if rng.random() < 0.3 else bytes([rng.randrange(256)]) * n
            yield kind, where, data[: SMALL - where]


def _apply(flash: Flash, model: bytearray, kind: str, where: int, what) -> None:
    """One operation on the flash and on the plain model (erase sets 0xFF, program ANDs, raw overwrites)."""
    if kind == "erase":
        flash.erase_range(where, what)
        model[where : where + what] = b"\xff" * what
    elif kind == "program":
        old = model[where : where + len(what)]
        flash.program(where, what)
        model[where : where + len(what)] = bytes(o & d for o, d in zip(old, what))
    else:
        flash.write_raw(where, what)
        model[where : where + len(what)] = what


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False), st.booleans())
def test_every_sequence_of_operations_matches_a_plain_nor_model(tmp_path_factory, rng, strict):
    """Erase sets 0xFF, program ANDs, write_raw overwrites: checked after every operation against a
    bytearray doing exactly that, in both the lenient and the strict mode."""
    path = tmp_path_factory.mktemp("nor") / "f.bin"
    model = bytearray(b"\xff" * SMALL)
    with Flash.create(path, SMALL, strict=strict) as flash:
        for kind, where, what in _random_operations(rng, 12):
            note(f"{kind} 0x{where:x} {what if kind == 'erase' else (len(what), what[:4].hex())}")
            if kind == "program" and strict:
                old = model[where : where + len(what)]
                if any(o & d != d for o, d in zip(old, what)):
                    with pytest.raises(FlashError, match="unerased"):
                        flash.program(where, what)
                    continue
            _apply(flash, model, kind, where, what)
            assert flash.read(0, SMALL) == bytes(model)


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False))
def test_sha256_is_the_digest_of_the_stored_bytes_with_a_running_hash_in_between(tmp_path_factory, rng):
    """A running SHA-256 is started and advanced between random operations (pieces of any size here);
    every ``sha256`` answer, from its start (where the running hash is continued) or from anywhere
    else, equals hashlib over a plain model of the stored bytes: an operation on bytes it has taken
    must never leave it behind."""
    path = tmp_path_factory.mktemp("sha") / "f.bin"
    model = bytearray(b"\xff" * SMALL)
    start = 0
    with mock.patch("esp_ota_emu.flash.SHA256_STEP", 1), Flash.create(path, SMALL) as flash:
        for kind, where, what in _random_operations(rng, 12):
            if rng.random() < 0.3:
                start = rng.randrange(SMALL)
                flash.follow_sha256(start)
            flash.advance_sha256(start, rng.randrange(start, SMALL + 1))
            note(f"running from 0x{start:x}; {kind} 0x{where:x}")
            _apply(flash, model, kind, where, what)
            length = rng.randrange(SMALL - start + 1)
            assert flash.sha256(start, length) == hashlib.sha256(model[start : start + length]).digest()
            other = rng.randrange(SMALL)
            assert flash.sha256(other, SMALL - other) == hashlib.sha256(model[other:]).digest()


@contextmanager
def _held_hasher():
    """SHA-256 objects whose updates on the flash's hasher thread wait, with the piece's bytes in hand,
    until the yielded event is set; the sizes of those pieces are recorded. Hashing on any other thread
    is neither held nor recorded."""
    release, pieces = threading.Event(), []
    real_sha256 = hashlib.sha256

    class HeldSha256:
        def __init__(self, real=None):
            self.real = real or real_sha256()

        def update(self, data):
            if threading.current_thread().name.startswith("flash-sha256"):
                pieces.append(len(data))
                assert release.wait(10), "the test never released the hasher"
            self.real.update(data)

        def copy(self):
            return HeldSha256(self.real.copy())

        def digest(self):
            return self.real.digest()

    with mock.patch("esp_ota_emu.flash.hashlib", SimpleNamespace(sha256=HeldSha256)):
        yield release, pieces
        release.set()


def test_running_sha256_is_hashed_in_the_background_without_holding_the_writer_up(tmp_path):
    """A piece goes to the hasher thread and the writer goes on; while that piece is still hashing,
    the next advance hands nothing over, and a later one hands over all that has come since. The digest
    waits for the piece in hand and is the stored bytes'."""
    step = SHA256_STEP
    data = random.Random(1).randbytes(4 * step)
    with _held_hasher() as (release, pieces), Flash.create(tmp_path / "f.bin", len(data)) as flash:
        flash.follow_sha256(0)
        for end in (step, 2 * step):
            flash.program(end - step, data[end - step : end])
            flash.advance_sha256(0, end)  # returns although the hasher is held
        release.set()
        assert flash.sha256(0, step) == hashlib.sha256(data[:step]).digest()
        flash.program(2 * step, data[2 * step :])
        flash.advance_sha256(0, 3 * step)
        assert flash.sha256(0, len(data)) == hashlib.sha256(data).digest()
    assert pieces == [step, 2 * step]


def test_close_waits_for_the_piece_being_hashed(tmp_path):
    """The hasher reads the mapping: closing the flash while it works on a piece waits for it, then
    closes the mapping (it is not left open as if a view were alive)."""
    with _held_hasher() as (release, _):
        flash = Flash.create(tmp_path / "f.bin", SHA256_STEP)
        flash.follow_sha256(0)
        flash.advance_sha256(0, SHA256_STEP)
        threading.Timer(0.05, release.set).start()
        flash.close()
    with pytest.raises(ValueError):
        flash.read(0, 1)


def test_a_forked_child_does_not_wait_for_its_parents_hasher(tmp_path):
    """A process forked while a piece is hashing (the power-cut campaign forks its workers) has no
    hasher thread: its flash drops the running hash and hashes from scratch, without waiting forever,
    and the parent's own digest is unaffected."""
    data = random.Random(2).randbytes(2 * SHA256_STEP)
    with _held_hasher() as (release, _), Flash.create(tmp_path / "f.bin", len(data)) as flash:
        flash.program(0, data)
        flash.follow_sha256(0)
        flash.advance_sha256(0, SHA256_STEP)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.write(write_end, flash.sha256(0, len(data)))
            finally:
                os._exit(0)
        os.close(write_end)
        ready = []
        try:
            ready, _, _ = select.select([read_end], [], [], 10)
            answer = os.read(read_end, 32) if ready else b""
        finally:
            if not ready:
                os.kill(child, 9)
            os.waitpid(child, 0)
            os.close(read_end)
        assert answer == hashlib.sha256(data).digest(), "the child waited for a hasher it does not have"
        release.set()
        assert flash.sha256(0, len(data)) == hashlib.sha256(data).digest()
