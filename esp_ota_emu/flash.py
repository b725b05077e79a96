"""The NOR flash model: a file-backed, memory-mapped SPI flash with 4 KiB sectors.

Reproduces what an ESP32's SPI NOR flash does to the bytes that ESP-IDF's ``esp_flash`` /
``esp_partition`` layer writes: an erase sets a whole sector to 0xFF, a program can only clear bits
(``old AND new``), reads see exactly what is stored. Every erase and program goes through
:meth:`Flash._execute`, the one place that hooks (counters, power-cut injection, undo logs, recorders)
observe and may interrupt.

A running SHA-256 (:meth:`Flash.follow_sha256`) lets a writer hash a range while it is being written,
on a background thread; any erase or program inside what it has taken drops it (after the piece in
hand is done), so :meth:`Flash.sha256` is always the digest of the bytes stored now.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from array import array
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from .errors import InputError

SECTOR_SIZE = 0x1000
SHA256_STEP = 512 * 1024  # the running SHA-256 takes stored bytes in pieces of at least this size
QEMU_FLASH_SIZES = (2 << 20, 4 << 20, 8 << 20, 16 << 20)


class FlashError(Exception):
    """A flash operation that the hardware (or ESP-IDF's esp_flash layer) would refuse."""


@dataclass(frozen=True)
class FlashOp:
    """One erase or program operation, as seen by hooks. ``index`` counts operations from 0."""

    index: int
    kind: Literal["erase", "program"]
    addr: int
    length: int
    data: bytes | None = None  # the bytes being programmed (None for an erase)

    @property
    def end(self) -> int:
        return self.addr + self.length


Hook = Callable[[FlashOp], None]


@dataclass
class _RunningSha256:
    """The SHA-256 of the stored bytes ``[start, end)``. Its last piece may still be hashing on the
    background thread of process ``pid`` (``pending``)."""

    start: int
    end: int
    sha: "hashlib._Hash"
    pending: Future | None = None
    pid: int = 0


_hasher_pool: ThreadPoolExecutor | None = None


def _hasher() -> ThreadPoolExecutor:
    """The one thread per process that hashes running SHA-256 pieces. hashlib lets go of the GIL while
    it hashes, so an OTA's next network reads and flash writes go on meanwhile (~5% of a fast
    loopback OTA; the pieces are large because every hand-over between threads costs)."""
    global _hasher_pool
    if _hasher_pool is None:
        _hasher_pool = ThreadPoolExecutor(1, thread_name_prefix="flash-sha256")
    return _hasher_pool


def _forget_hasher() -> None:
    """A forked child has none of its parent's threads: it starts its own hasher when it needs one."""
    global _hasher_pool
    _hasher_pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_hasher)


def _all_erased(data: bytes) -> bool:
    """True if every byte is 0xFF (a comparison, so that it runs at memcmp speed)."""
    return data == b"\xff" * len(data)


def parse_size(text: str | int) -> int:
    """Parse a flash size such as ``4MB``, ``16M``, ``512KB``, ``0x400000`` or ``4194304``."""
    if isinstance(text, int):
        return text
    value = text.strip().upper().removesuffix("B")
    scale = 1
    if value.endswith("M"):
        scale, value = 1 << 20, value[:-1]
    elif value.endswith("K"):
        scale, value = 1 << 10, value[:-1]
    try:
        return int(value, 0) * scale
    except ValueError:
        raise InputError(f"not a size: {text!r} (use e.g. 4MB, 512KB or 0x400000)") from None


def format_size(size: int) -> str:
    """``4194304`` -> ``4MB`` (as esptool names flash sizes), other sizes in bytes."""
    if size % (1 << 20) == 0:
        return f"{size >> 20}MB"
    if size % (1 << 10) == 0:
        return f"{size >> 10}KB"
    return f"{size}B"


def qemu_size_warning(size: int) -> str | None:
    """Espressif's QEMU accepts only 2, 4, 8 or 16 MB flash images; say so for any other size."""
    if size in QEMU_FLASH_SIZES:
        return None
    return f"flash size {format_size(size)} is not 2, 4, 8 or 16 MB: QEMU-esp32 will refuse this image"


class Flash:
    """A NOR flash backed by a file (memory-mapped; nothing is read into memory as a whole).

    ``strict=True`` makes programming a bit from 0 back to 1 an error (ESP-IDF's host partition
    emulation does this check with ``CONFIG_ESP_PARTITION_ERASE_CHECK``); otherwise the result is
    ``old AND new``, as on real hardware.

    ``copy_on_write=True`` maps the file privately: changes stay in this process's memory and never
    reach the file, and only the pages actually written are copied (the fleet's per-device flashes).
    """

    def __init__(
        self, path: str | os.PathLike, *, strict: bool = False, readonly: bool = False, copy_on_write: bool = False
    ):
        self.path = Path(path)
        self.strict = strict
        self.readonly = readonly
        try:
            self._file = open(self.path, "rb" if readonly or copy_on_write else "r+b")
        except OSError as err:
            raise InputError(f"cannot open flash file {self.path}: {err.strerror}") from None
        self.size = os.fstat(self._file.fileno()).st_size
        if self.size == 0:
            self._file.close()
            raise InputError(f"{self.path} is empty")
        access = mmap.ACCESS_READ if readonly else mmap.ACCESS_COPY if copy_on_write else mmap.ACCESS_WRITE
        self._mm = mmap.mmap(self._file.fileno(), 0, access=access)
        sectors = (self.size + SECTOR_SIZE - 1) // SECTOR_SIZE
        self.erase_count = array("I", bytes(4 * sectors))
        self.program_count = array("I", bytes(4 * sectors))
        self.op_count = 0
        self.generation = 0  # changes whenever the stored bytes may have changed (for caches of readers)
        self.hooks: list[Hook] = []
        self._array = None  # see _cells
        self._running_sha: _RunningSha256 | None = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, **kwargs) -> Flash:
        return cls(path, **kwargs)

    @classmethod
    def create(cls, path: str | os.PathLike, size: int, **kwargs) -> Flash:
        """Create a new, fully erased (0xFF) flash file of ``size`` bytes."""
        if size <= 0:
            raise InputError(f"flash size must be positive, not {size}")
        chunk = b"\xff" * (1 << 20)
        with open(path, "wb") as f:
            remaining = size
            while remaining:
                n = min(remaining, len(chunk))
                f.write(chunk[:n])
                remaining -= n
        return cls(path, **kwargs)

    def close(self) -> None:
        self._settle_running_sha()  # its piece in hand reads the mapping
        if not self._mm.closed:
            # No msync: the mapping is shared, so the page cache (what every reader of the file sees)
            # already holds the writes; forcing them to the disk here would cost more than the OTA.
            self._array = None
            try:
                self._mm.close()
            except BufferError:
                # A view is still alive (e.g. in the traceback of an error being raised): the contents are
                # already in the file; the mapping closes when the last view goes away.
                return
            self._file.close()

    def __enter__(self) -> Flash:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------------
    def _check_range(self, addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise FlashError(
                f"range 0x{addr:x}..0x{addr + length:x} is outside the {format_size(self.size)} flash"
            )

    def read(self, addr: int, length: int) -> bytes:
        """Read ``length`` bytes at ``addr`` (a copy)."""
        self._check_range(addr, length)
        return self._mm[addr : addr + length]

    def view(self, addr: int = 0, length: int | None = None) -> memoryview:
        """A read-only, zero-copy view of the flash contents (valid until the flash is closed)."""
        if length is None:
            length = self.size - addr
        self._check_range(addr, length)
        return memoryview(self._mm).toreadonly()[addr : addr + length]

    def is_erased(self, addr: int, length: int) -> bool:
        self._check_range(addr, length)
        return _all_erased(self._mm[addr : addr + length])

    def sha256(self, addr: int, length: int) -> bytes:
        """SHA-256 of ``length`` stored bytes at ``addr``; a running SHA-256 that started at ``addr``
        and has not gone past the range is continued (a copy of it) instead of hashing from scratch."""
        self._check_range(addr, length)
        run = self._settle_running_sha()
        if run is not None and run.start == addr and run.end <= addr + length:
            sha, start = run.sha.copy(), run.end
        else:
            sha, start = hashlib.sha256(), addr
        self._hash_into(sha, start, addr + length)
        return sha.digest()

    def follow_sha256(self, addr: int) -> None:
        """Start a running SHA-256 of the stored bytes from ``addr`` on (replacing any other one).

        The OTA advances it behind its writes (:meth:`advance_sha256`), so that esp_ota_end's SHA-256
        of the new image finds most of it hashed, in the background, while the download went on.
        """
        self._settle_running_sha()
        self._running_sha = _RunningSha256(addr, addr, hashlib.sha256())

    def advance_sha256(self, addr: int, upto: int) -> None:
        """Hand the stored bytes up to ``upto`` to the background hashing of the running SHA-256 that
        started at ``addr``, if there is one: in pieces of at least 512 KiB, and only when its last
        piece is done (a busy hasher takes a larger piece at a later call instead of holding the
        writer up). The bytes handed over must not change until the hash is settled: any operation on
        them settles and drops it."""
        run = self._running_sha
        if run is None or run.start != addr or upto - run.end < SHA256_STEP:
            return
        if run.pending is not None:
            if run.pid != os.getpid() or not run.pending.done():
                return  # (in a forked child, sha256 drops it)
            run.pending.result()  # raises what the hashing raised
        self._check_range(run.end, upto - run.end)
        run.pending, run.pid = _hasher().submit(self._hash_into, run.sha, run.end, upto), os.getpid()
        run.end = upto

    def _hash_into(self, sha, start: int, end: int) -> None:
        with memoryview(self._mm)[start:end] as stored:
            sha.update(stored)

    def _settle_running_sha(self) -> _RunningSha256 | None:
        """The running SHA-256 once its piece in hand is hashed. In a forked child that piece is lost
        with its thread (and its future is not touched: its lock may have been held at the fork), so
        the running hash is dropped there."""
        run = self._running_sha
        if run is not None and run.pending is not None:
            if run.pid != os.getpid():
                self._running_sha = None
                return None
            run.pending.result()
            run.pending = None
        return run

    def _drop_running_sha(self, addr: int, end: int) -> None:
        """Bytes in ``[addr, end)`` change: a running SHA-256 that has taken any of them is dropped
        (after the hashing of its piece in hand, which may be reading them, is done)."""
        run = self._running_sha
        if run is not None and addr < run.end and end > run.start:
            self._settle_running_sha()
            self._running_sha = None

    # -- writing: every change goes through _execute -------------------------------------------
    def erase_range(self, addr: int, length: int) -> None:
        """Erase whole sectors (``esp_flash_erase_region``): both ends must be 4 KiB aligned."""
        if addr % SECTOR_SIZE or length % SECTOR_SIZE:
            raise FlashError(f"erase of 0x{addr:x}+0x{length:x} is not aligned to the 4 KiB sector size")
        self._check_range(addr, length)
        if length:
            self._execute("erase", addr, length, None)

    def erase_sector(self, addr: int) -> None:
        self.erase_range(addr - addr % SECTOR_SIZE, SECTOR_SIZE)

    def program(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Program bytes (``esp_flash_write``): bits can only go from 1 to 0."""
        data = bytes(data)
        self._check_range(addr, len(data))
        if data:
            self._execute("program", addr, len(data), data)

    def _execute(self, kind: Literal["erase", "program"], addr: int, length: int, data: bytes | None) -> None:
        if self.readonly:
            raise FlashError(f"{self.path} is opened read-only")
        op = FlashOp(self.op_count, kind, addr, length, data)
        for hook in self.hooks:
            hook(op)  # a hook may raise to stop the operation (power cut) before it happens
        self.op_count += 1
        self.apply(op)

    def apply(self, op: FlashOp) -> None:
        """Carry out an operation on the stored bytes and count it, bypassing hooks.

        Hooks use this to leave a torn operation behind (for example a prefix of a program) before
        they cut the power. Both operations run in place on the mapped file, in one pass.
        """
        first, last = op.addr // SECTOR_SIZE, (op.end - 1) // SECTOR_SIZE
        self.generation += 1
        self._drop_running_sha(op.addr, op.end)
        cells = self._cells()[op.addr : op.end]
        if op.kind == "erase":
            cells.fill(0xFF)
            counts = self.erase_count
        else:
            assert op.data is not None
            import numpy

            data = numpy.frombuffer(op.data, dtype=numpy.uint8)
            if self.strict:
                bad = numpy.flatnonzero(cells & data != data)
                if bad.size:
                    at = int(bad[0])
                    raise FlashError(
                        f"programming unerased flash at 0x{op.addr + at:x}: "
                        f"0x{cells[at]:02x} cannot become 0x{data[at]:02x} without an erase"
                    )
            numpy.bitwise_and(cells, data, out=cells)
            counts = self.program_count
        for s in range(first, last + 1):
            counts[s] += 1

    def _cells(self):
        """The mapped bytes as a writable numpy array (made at the first write; numpy is imported then)."""
        if self._array is None:
            import numpy

            self._array = numpy.frombuffer(self._mm, dtype=numpy.uint8)
        return self._array

    def write_raw(self, addr: int, data: bytes) -> None:
        """Put bytes into the flash file as a flash programmer (esptool write-flash) would.

        Not a NOR operation: used to assemble images and to restore snapshots. Hooks do not see it.
        """
        self._check_range(addr, len(data))
        self.generation += 1
        self._drop_running_sha(addr, addr + len(data))
        self._mm[addr : addr + len(data)] = data
