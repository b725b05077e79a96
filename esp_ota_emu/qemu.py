"""Running a flash image in Espressif's QEMU, the way ``idf.py qemu`` starts it.

The command line follows ESP-IDF's ``tools/idf_py_actions/qemu_ext.py``: the chip's machine, the flash
as an MTD drive, the eFuse file as a raw drive bound to the chip's eFuse device, and the timer groups'
watchdogs disabled. Espressif's QEMU accepts only 2, 4, 8 or 16 MB flash images; Debian's
``qemu-system-xtensa`` has no ESP32 machine at all, so :func:`find_qemu` asks the binary.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .chips import Chip, chip_by_name
from .efuse import Efuses
from .errors import InputError
from .flash import qemu_size_warning

QEMU_ENV = "ESP_QEMU"


@dataclass(frozen=True)
class QemuTarget:
    """What idf.py passes for one chip: the binary and its machine options."""

    program: str
    machine_args: tuple[str, ...]


# idf.py QEMU_TARGETS: program and "-M <machine> [-m <PSRAM>]" per chip.
QEMU_TARGETS = {
    "esp32": QemuTarget("qemu-system-xtensa", ("-M", "esp32", "-m", "4M")),
    "esp32s3": QemuTarget("qemu-system-xtensa", ("-M", "esp32s3", "-m", "32M")),
    "esp32c3": QemuTarget("qemu-system-riscv32", ("-M", "esp32c3")),
}


class QemuNotFound(InputError):
    """No QEMU binary with the chip's machine was found."""


def qemu_target(chip: Chip | str) -> QemuTarget:
    chip = chip_by_name(chip) if isinstance(chip, str) else chip
    if chip.qemu_machine is None or chip.name not in QEMU_TARGETS:
        raise InputError(f"Espressif's QEMU has no {chip.display} machine (it emulates {', '.join(QEMU_TARGETS)})")
    return QEMU_TARGETS[chip.name]


def not_found_reason(chip: Chip | str = "esp32") -> str:
    chip = chip_by_name(chip) if isinstance(chip, str) else chip
    return f"{qemu_target(chip).program} with the {chip.qemu_machine} machine not found (PATH or ${QEMU_ENV})"


def has_machine(program: str | os.PathLike, machine: str) -> bool:
    """Does ``program -machine help`` list ``machine``?"""
    try:
        out = subprocess.run(
            [os.fspath(program), "-machine", "help"], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.split()[:1] == [machine] for line in out.splitlines())


def find_qemu(chip: Chip | str = "esp32") -> str:
    """The QEMU binary for ``chip``: ``$ESP_QEMU`` (the binary, or a directory holding it), else PATH.

    Raises :class:`QemuNotFound` saying why when no candidate offers the chip's machine.
    """
    chip = chip_by_name(chip) if isinstance(chip, str) else chip
    target = qemu_target(chip)
    candidates = []
    env = os.environ.get(QEMU_ENV)
    if env:
        path = Path(env)
        candidates.append(path / target.program if path.is_dir() else path)
    found = shutil.which(target.program)
    if found:
        candidates.append(Path(found))
    rejected = []
    for candidate in candidates:
        if has_machine(candidate, chip.qemu_machine):
            return str(candidate)
        rejected.append(str(candidate))
    reason = not_found_reason(chip)
    if rejected:
        reason += f": {', '.join(rejected)} has no {chip.qemu_machine} machine (Espressif's QEMU fork has it)"
    raise QemuNotFound(reason)


def _drive_path(path: str | os.PathLike) -> str:
    """A path inside a QEMU ``-drive`` option: commas are doubled."""
    return os.fspath(path).replace(",", ",,")


def qemu_command(
    flash_path: str | os.PathLike,
    efuse_path: str | os.PathLike | None = None,
    *,
    chip: Chip | str = "esp32",
    qemu: str | None = None,
    serial: str = "mon:stdio",
) -> list[str]:
    """The QEMU command line that boots ``flash_path`` (``idf.py qemu``'s, without networking).

    Refuses flash sizes QEMU does not accept. ``serial`` is UART0's backend: ``mon:stdio`` (UART0 and
    the monitor on stdio, as idf.py runs it) or ``file:PATH``; a plain ``stdio`` would clash with the
    monitor that ``-nographic`` puts there.
    """
    chip = chip_by_name(chip) if isinstance(chip, str) else chip
    target = qemu_target(chip)
    try:
        size = Path(flash_path).stat().st_size
    except OSError as err:
        raise InputError(f"cannot use flash image {flash_path}: {err.strerror}") from None
    problem = qemu_size_warning(size)
    if problem:
        raise InputError(problem)
    cmd = [qemu or target.program, "-nographic", *target.machine_args]
    cmd += ["-drive", f"file={_drive_path(flash_path)},if=mtd,format=raw"]
    if efuse_path is not None:
        cmd += [
            "-drive", f"file={_drive_path(efuse_path)},if=none,format=raw,id=efuse",
            "-global", f"driver=nvram.{chip.name}.efuse,property=drive,value=efuse",
        ]
    cmd += ["-global", f"driver=timer.{chip.name}.timg,property=wdt_disable,value=true"]
    cmd += ["-serial", serial]
    return cmd


def device_efuses(chip: Chip | str, *, chip_rev: int | None = None, secure_version: int = 0) -> Efuses:
    """The eFuses of a device with these settings: QEMU's defaults for the revision, plus the
    anti-rollback SECURE_VERSION bits burned."""
    name = chip.name if isinstance(chip, Chip) else chip_by_name(chip).name
    efuses = Efuses.default(name, chip_rev)
    efuses.burn_secure_version(secure_version)
    return efuses


def write_efuse_file(
    path: str | os.PathLike, chip: Chip | str, *, chip_rev: int | None = None, secure_version: int = 0
) -> Path:
    """Write QEMU's eFuse file for a device (ESP32: 124 bytes; C3/S3: 1024)."""
    out = Path(path)
    out.write_bytes(device_efuses(chip, chip_rev=chip_rev, secure_version=secure_version).to_qemu_file())
    return out


def read_efuse_file(path: str | os.PathLike, chip: Chip | str) -> Efuses:
    name = chip.name if isinstance(chip, Chip) else chip_by_name(chip).name
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read eFuse file {path}: {err.strerror}") from None
    return Efuses.from_qemu_file(name, data)


@dataclass(frozen=True)
class QemuRun:
    """What a bounded QEMU run printed on UART0 and how it ended."""

    output: str
    expected_seen: bool | None  # None: nothing was expected
    timed_out: bool
    returncode: int | None  # None: QEMU was stopped by us


def run_qemu(cmd: list[str], *, timeout: float, expect: str | None = None) -> QemuRun:
    """Run QEMU, collecting UART0 (its stdout) until ``expect`` appears, QEMU exits, or ``timeout`` passes;
    then stop it."""
    # stdin stays an open, silent pipe: UART0's receive side (and the monitor) see no input and no EOF
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None and proc.stdin is not None
    os.set_blocking(proc.stdout.fileno(), False)
    out = bytearray()
    seen = None if expect is None else False
    deadline = time.monotonic() + timeout
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if sel.select(min(left, 0.5)):
                chunk = proc.stdout.read()
                if not chunk:  # QEMU closed its output: it is exiting
                    try:
                        proc.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        timed_out = True
                    break
                out += chunk
                if expect is not None and expect.encode() in out:
                    seen = True
                    break
            elif proc.poll() is not None:
                break
    returncode = proc.poll()
    if returncode is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdin.close()
    proc.stdout.close()
    return QemuRun(out.decode("utf-8", "replace"), seen, timed_out, returncode)
