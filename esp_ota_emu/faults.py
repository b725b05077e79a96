"""Fault injection in the flash model: power cuts at an operation index, torn operations, an undo log.

A power cut on an ESP32 stops the SPI flash in the middle of whatever it was doing. This module
reproduces that at the one place every erase and program passes (the flash's hooks):

* :class:`UndoLog` records, before each operation, the bytes it is about to change, so that a test
  campaign can put the flash back to where it started by replaying the log backwards (no copy of
  the whole flash per cut point).
* :class:`CutInjector` raises :class:`PowerCut` before operation ``k`` (counted from when it was
  armed). With ``torn=True`` it first leaves operation ``k`` half done, the way an interrupted NOR
  operation leaves a sector: an erase with only a prefix of its range erased or with random bits
  set, a program with only a prefix of its data written (bits still only cleared).
* :class:`OpRecorder` keeps the list of operations of a run (a dry run gives the campaign its N).

Everything random is drawn from :func:`cut_rng` (seed, operation index), so a failure is reproduced
from those two numbers alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .flash import SECTOR_SIZE, Flash, FlashOp

TORN_ERASE_MODES = ("prefix", "bits")


class PowerCut(Exception):
    """The power went off before (or during, when ``torn``) flash operation ``index``."""

    def __init__(self, index: int, torn: str | None = None):
        where = f"during operation {index} ({torn})" if torn else f"before operation {index}"
        super().__init__(f"power cut {where}")
        self.index = index
        self.torn = torn


def cut_rng(seed: int | str, index: int) -> random.Random:
    """The random source of one cut point: the same (seed, index) always tears the same way.

    A cut inside the consequences of another cut (the power-on after it) uses the seed ``"S/k"``."""
    return random.Random(f"esp-ota-emu/{seed}/{index}")


@dataclass
class UndoEntry:
    addr: int
    old: bytes


class UndoLog:
    """A flash hook that saves the old bytes of every range an operation is about to change.

    Erases are saved whole (they are sector-granular), programs for the bytes they cover.
    :meth:`restore` writes the saved bytes back newest first, leaving the flash byte-identical to
    what it held when the log was started (or at a :meth:`mark`).
    """

    def __init__(self, flash: Flash):
        self.flash = flash
        self.entries: list[UndoEntry] = []
        flash.hooks.insert(0, self)  # first: it must see the bytes before a torn operation changes them

    def __call__(self, op: FlashOp) -> None:
        self.entries.append(UndoEntry(op.addr, self.flash.read(op.addr, op.length)))

    def detach(self) -> None:
        self.flash.hooks.remove(self)

    def mark(self) -> int:
        return len(self.entries)

    def ranges(self, since: int = 0) -> list[tuple[int, int]]:
        """The (start, end) flash ranges changed since ``since`` (a :meth:`mark`)."""
        return [(e.addr, e.addr + len(e.old)) for e in self.entries[since:]]

    def restore(self, to: int = 0) -> None:
        """Undo every change logged after mark ``to``, newest first."""
        for entry in reversed(self.entries[to:]):
            self.flash.write_raw(entry.addr, entry.old)
        del self.entries[to:]


@dataclass
class OpRecorder:
    """A flash hook that keeps every operation (with the bytes programmed) in order."""

    ops: list[FlashOp] = field(default_factory=list)

    def __call__(self, op: FlashOp) -> None:
        self.ops.append(op)


def torn_erase(flash: Flash, op: FlashOp, rng: random.Random) -> str:
    """Leave an erase interrupted: sectors before a random one erased, that one torn, the rest untouched.

    The torn sector either has a random prefix erased (``prefix``) or random bits set to 1
    (``bits``: erasing raises bits, an interrupted erase raises some of them).
    """
    sectors = op.length // SECTOR_SIZE
    cut_sector = rng.randrange(sectors)
    if cut_sector:
        flash.apply(FlashOp(op.index, "erase", op.addr, cut_sector * SECTOR_SIZE))
    addr = op.addr + cut_sector * SECTOR_SIZE
    mode = rng.choice(TORN_ERASE_MODES)
    if mode == "prefix":
        n = rng.randrange(SECTOR_SIZE)
        if n:
            flash.apply(FlashOp(op.index, "erase", addr, n))
        return f"erase torn in sector 0x{addr:x}: first {n} bytes erased"
    old = flash.read(addr, SECTOR_SIZE)
    mask = rng.getrandbits(8 * SECTOR_SIZE)
    flash.write_raw(addr, (int.from_bytes(old, "little") | mask).to_bytes(SECTOR_SIZE, "little"))
    return f"erase torn in sector 0x{addr:x}: random bits set"


def torn_program(flash: Flash, op: FlashOp, rng: random.Random) -> str:
    """Leave a program interrupted: only a random prefix of its data written (AND semantics kept)."""
    assert op.data is not None
    n = rng.randrange(op.length)
    if n:
        flash.apply(FlashOp(op.index, "program", op.addr, n, op.data[:n]))
    return f"program torn at 0x{op.addr:x}: {n} of {op.length} bytes written"


def tear(flash: Flash, op: FlashOp, rng: random.Random) -> str:
    """Apply ``op`` partly, as a power cut in its middle would; returns what was left behind."""
    return torn_erase(flash, op, rng) if op.kind == "erase" else torn_program(flash, op, rng)


class CutInjector:
    """A flash hook that cuts the power before operation ``k`` counted from :meth:`arm`.

    ``torn=True`` tears operation ``k`` first (see :func:`tear`), with the randomness of
    ``cut_rng(seed, k)``. Disarmed, it does nothing.
    """

    def __init__(self, flash: Flash):
        self.flash = flash
        self.armed = False
        self.base = 0
        self.k = 0
        self.torn = False
        self.seed: int | str = 0
        self.left: str | None = None  # what the torn operation left behind
        flash.hooks.append(self)

    def arm(self, k: int, *, torn: bool = False, seed: int | str = 0) -> None:
        self.base, self.k, self.torn, self.seed = self.flash.op_count, k, torn, seed
        self.left = None
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def detach(self) -> None:
        self.flash.hooks.remove(self)

    def __call__(self, op: FlashOp) -> None:
        if not self.armed or op.index - self.base != self.k:
            return
        self.armed = False
        if self.torn:
            self.left = tear(self.flash, op, cut_rng(self.seed, self.k))
            raise PowerCut(self.k, self.left)
        raise PowerCut(self.k)
