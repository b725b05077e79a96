"""The power-cut campaign: an OTA, the reset after it and the app's confirmation, cut at every flash operation.

ESP-IDF's OTA is meant to survive losing power at any moment. The campaign checks it for one device
and one update:

1. **Record.** The update is downloaded once: over HTTPS through the emulator's esp_https_ota (its
   flash operations recorded), or taken from a file. Then the same update is *replayed* from memory
   through :class:`~esp_ota_emu.ota_ops.OtaOps` exactly as esp_https_ota drives it (``esp_ota_begin``
   with sequential or bulk erase, ``esp_ota_write`` with the header first (1024 bytes; 289 before
   v5.0) and then ``buffer_size`` pieces, ``esp_ota_end``, ``esp_ota_set_boot_partition``), followed by a reset (the
   bootloader with its own otadata writes) and ``esp_ota_mark_app_valid_cancel_rollback`` in the new
   app. The replay must make the HTTPS run's flash operations one for one; the campaign refuses to
   run otherwise.
2. **Cut.** At each cut point (operation ``k``, cleanly before it or with it torn) the flash is
   exactly what a power cut there leaves. A device with fresh RAM (eFuses kept) powers on from it,
   and the invariants are checked: the bootloader boots an app whose image verifies and which is
   the old or the new one; otadata still selects an app; nothing outside the target slot and
   otadata was written; with ``resume``, continuing the interrupted download from the progress the
   app had saved gives a slot byte-identical to the image. When that power-on writes otadata itself
   (rollback transitions), the power is cut again before and during each of those writes, and the
   next power-on is checked the same way. Then the undo log rewinds the flash to
   the moment before ``k`` and the scenario goes on to the next cut point, so the scenario runs
   once, not once per cut point, and no flash is ever copied per cut point.

Cut points are shared out over worker processes, each running the scenario on its own flash copy.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

from .bootloader import BootResult
from .device import Device, DeviceSettings, DeviceState
from .errors import EspError, InputError
from .faults import CutInjector, OpRecorder, PowerCut, UndoLog, cut_rng, tear
from .flash import Flash, FlashOp
from .formats.partition_table import APP, BOOTLOADER
from .idf_release import RESUMPTION_CHECKED, IdfRelease
from .https_ota.api import https_ota
from .https_ota.config import image_header_size, ota_begin_size, read_size
from .otadata import OtaData, get_active_otadata
from .partitions import Partition, PartitionTableInvalid

PHASES = ("download", "copy", "otadata", "bootloader", "confirm")  # "copy" only with finalize_with_copy
AFTER = "after"  # the cut point after the last operation: the update ran to its end
PROGRESS_STEP = 64 * 1024  # the resumable OTA saves its progress (bytes written) every 64 KiB
MIN_CUTS_PER_WORKER = 64  # below this, starting another process costs more than it saves


class ScratchDevice(Device):
    """A device whose settings and state live only in memory (the campaign never writes a sidecar)."""

    def save(self) -> None:
        pass


@dataclass(frozen=True)
class OtaPlan:
    """One update as esp_https_ota writes it: the image, its read size and its erase mode, and (v5.5
    partition.staging/final) where it is staged, what it is for and whether esp_ota_end copies it."""

    image: bytes
    buffer_size: int = 0  # esp_http_client_config_t.buffer_size; each read is at least the header size
    bulk_flash_erase: bool = False
    staging: str | None = None  # None: the next OTA slot
    final: str | None = None  # None: the staging partition
    finalize_with_copy: bool = False

    def erase_size(self, idf: IdfRelease) -> int:
        """The ``image_size`` esp_https_ota of release ``idf`` gives esp_ota_begin."""
        return ota_begin_size(idf, self.bulk_flash_erase, len(self.image))

    def chunks(self, idf: IdfRelease, start: int = 0, *, header: bool = True) -> Iterator[memoryview]:
        """The esp_ota_write calls of release ``idf`` from byte ``start``: the header first (when
        starting at 0, for an app or a bootloader), then pieces of max(buffer_size, header size), as
        esp_http_client_read fills its buffer."""
        step = read_size(idf, self.buffer_size)
        view = memoryview(self.image)
        pos = start
        if pos == 0 and header:
            yield view[: image_header_size(idf)]
            pos = image_header_size(idf)
        while pos < len(view):
            yield view[pos : pos + step]
            pos += step


@dataclass
class ScenarioLog:
    """What one scenario run did so far: where each phase started, the app's saved progress."""

    base: int
    flash: Flash
    phase_starts: dict[str, int] = field(default_factory=dict)
    progress: int = 0  # bytes_written as last saved by the app (resumable OTA)

    def enter(self, phase: str) -> None:
        self.phase_starts[phase] = self.flash.op_count - self.base


def _begin(dev: Device, target: Partition, plan: OtaPlan, start: int = 0) -> tuple[int, Partition]:
    """esp_ota_begin (or esp_ota_resume at ``start``), then esp_ota_set_final_partition as esp_https_ota
    calls it; returns the handle and the final partition."""
    ota = dev.ota
    handle = ota.resume(target, plan.erase_size(dev.idf), start) if start else ota.begin(target, plan.erase_size(dev.idf))
    final = dev.find_partition(plan.final) if plan.final else target
    if final != target:
        ota.set_final_partition(handle, final, plan.finalize_with_copy)
    return handle, final


def _finish(dev: Device, target: Partition, final: Partition, handle: int, plan: OtaPlan,
            log: ScenarioLog | None = None) -> None:
    """esp_ota_end (which copies to the final partition), then esp_ota_set_boot_partition when the final
    partition is an OTA slot, as esp_https_ota_finish does."""
    if log is not None and final != target and plan.finalize_with_copy:
        log.enter("copy")
    dev.ota.end(handle)
    if log is not None:
        log.enter("otadata")
    if final.is_ota_app:
        dev.ota.set_boot_partition(target)


def run_scenario(dev: Device, target: Partition, plan: OtaPlan, log: ScenarioLog) -> None:
    """The update as an app runs it, the reset that follows and the new app's confirmation."""
    log.enter("download")
    handle, final = _begin(dev, target, plan)
    written = 0
    for chunk in plan.chunks(dev.idf, header=final.type in (APP, BOOTLOADER)):
        dev.ota.write(handle, chunk)
        written += len(chunk)
        if written - log.progress >= PROGRESS_STEP:
            log.progress = written
    _finish(dev, target, final, handle, plan, log)
    log.enter("bootloader")
    result = dev.boot()
    log.enter("confirm")
    if result.booted == target:
        dev.ota.mark_app_valid_cancel_rollback()
    log.enter(AFTER)


def resume_ota(dev: Device, target: Partition, plan: OtaPlan, progress: int) -> None:
    """The resumable esp_https_ota after a reboot: esp_ota_resume at the saved progress (from 0 when
    less than the header was saved), the rest of the image, esp_ota_end, set_boot_partition."""
    start = progress if progress >= image_header_size(dev.idf) else 0
    if dev.flash_encryption_enabled:
        start &= ~0xF
    handle, final = _begin(dev, target, plan, start)
    for chunk in plan.chunks(dev.idf, start, header=final.type in (APP, BOOTLOADER)):
        dev.ota.write(handle, chunk)
    _finish(dev, target, final, handle, plan)


@dataclass(frozen=True)
class CutPoint:
    index: int  # operation index from the start of the scenario; == operation count: after the end
    torn: bool


@dataclass
class CutResult:
    index: int
    torn: bool
    phase: str
    outcome: str  # "old", "new", "bricked" or "other"
    failures: list[str]
    left: str | None = None  # what a torn operation left behind
    resumed: bool | None = None  # with resume: whether the resumed OTA gave a byte-identical slot
    second_cuts: int = 0  # cuts tried inside the power-on's own flash writes (each again powered on)

    @property
    def bricked(self) -> bool:
        return self.outcome == "bricked"

    @property
    def variant(self) -> str:
        return "torn" if self.torn else "cut"


@dataclass
class Setup:
    """Everything a worker needs to run cut points (picklable)."""

    start_flash: str
    settings: DeviceSettings
    state: DeviceState
    plan: OtaPlan
    target: str
    old: str
    allowed: tuple[tuple[int, int], ...]  # flash ranges the scenario may change
    phase_starts: dict[str, int]
    op_count: int
    seed: int
    resume: bool
    start_active_ok: bool


class _Done(Exception):
    """Raised by a worker's hook once its last cut point is checked: the rest of the scenario is not needed."""


class Worker:
    """Runs the scenario once on its own flash copy and checks the device at each of its cut points.

    At cut point ``k`` a hook, called before operation ``k`` (after the undo log saved what ``k`` will
    change), tears ``k`` if asked, powers a fresh device on from that flash, checks the invariants,
    and rewinds the flash by undo log to where the scenario stood. The scenario then carries on as
    if nothing had happened, to the next cut point: every cut point sees exactly the flash a real
    power cut there would leave, and the scenario runs once per worker, not once per cut point.
    """

    def __init__(self, setup: Setup, folder: Path, points: Sequence[CutPoint]):
        self.setup = setup
        path = folder / f"worker-{os.getpid()}.bin"
        shutil.copyfile(setup.start_flash, path)
        self.flash = Flash.open(path)
        self.undo = UndoLog(self.flash)
        self.flash.hooks.append(self._before_operation)
        self.second = CutInjector(self.flash)  # cuts inside the power-on after a cut
        self.points: dict[int, list[bool]] = {}
        for p in points:
            self.points.setdefault(p.index, []).append(p.torn)
        self.last = max(self.points, default=-1)
        self.count = 0  # operations of the scenario itself (not those of the checks)
        self.checking = False
        self.stray: str | None = None  # the first scenario write outside the allowed ranges
        self.results: list[CutResult] = []

    def close(self) -> None:
        self.flash.close()

    def phase_of(self, index: int) -> str:
        current = PHASES[0]
        for phase in (*PHASES, AFTER):
            start = self.setup.phase_starts.get(phase)
            if start is not None and start <= index:
                current = phase
        return current

    def run(self) -> list[CutResult]:
        s = self.setup
        self.dev = ScratchDevice(self.flash, copy.deepcopy(s.settings), copy.deepcopy(s.state))
        self.target = self.dev.find_partition(s.target)
        self.log = ScenarioLog(self.flash.op_count, self.flash)
        try:
            run_scenario(self.dev, self.target, s.plan, self.log)
        except _Done:
            pass
        for torn in self.points.get(s.op_count, ()):
            self._cut(s.op_count, None, torn)
        return self.results

    def _before_operation(self, op: FlashOp) -> None:
        if self.checking:
            return
        k = self.count
        self.count += 1
        if self.stray is None and not self._allowed(op.addr, op.end):
            self.stray = f"wrote 0x{op.addr:x}..0x{op.end:x}, outside the target slot and otadata"
        for torn in self.points.get(k, ()):
            self._cut(k, op, torn)
        if k >= self.last:
            raise _Done

    def _allowed(self, start: int, end: int) -> bool:
        return any(lo <= start and end <= hi for lo, hi in self.setup.allowed)

    def _cut(self, k: int, op: FlashOp | None, torn: bool) -> None:
        """Power cut before operation ``k`` (or during it), power on, check, rewind."""
        mark = self.undo.mark()
        self.checking = True
        try:
            left = None
            if torn and op is not None:
                self.undo(op)  # logged again, so that the rewind also undoes the tear
                left = tear(self.flash, op, cut_rng(self.setup.seed, k))
            self.results.append(self._power_on(k, torn, left, mark))
        finally:
            self.undo.restore(mark)
            self.checking = False

    def _power_on(self, k: int, torn: bool, left: str | None, mark: int) -> CutResult:
        # RAM (the device's state) is gone; the eFuses (in the settings) keep what was burned so far.
        settings = copy.deepcopy(self.dev.settings)
        efuses = copy.deepcopy(settings)  # as they were when the power came back
        boot_mark = self.undo.mark()
        dev = ScratchDevice(self.flash, settings, DeviceState())
        boot = dev.boot(power_on=True)
        power_on_ops = self.undo.mark() - boot_mark
        failures: list[str] = []
        outcome = self._check_boot(dev, boot, failures)
        self._check_otadata(dev, failures)
        if self.stray is not None:
            failures.append(self.stray)
        for start, end in self.undo.ranges(mark):
            if not self._allowed(start, end):
                failures.append(f"the bootloader wrote 0x{start:x}..0x{end:x}, outside otadata")
                break
        result = CutResult(k, torn, self.phase_of(k), outcome, failures, left)
        if self.setup.resume and outcome == "old" and result.phase in ("download", "otadata"):
            result.resumed = self._check_resume(dev, self.log.progress, failures)
        if power_on_ops and outcome != "bricked":
            result.second_cuts = self._cut_the_power_on(result, boot_mark, efuses, power_on_ops)
        return result

    def _cut_the_power_on(self, result: CutResult, boot_mark: int, efuses: DeviceSettings, ops: int) -> int:
        """The power goes again during the bootloader's own writes of that power-on (the rollback
        transitions, the initial otadata entry): before or during each of them, then the next power-on
        must still boot a verified old or new app."""
        tried = 0
        for j in range(ops):
            for torn in (False, True):
                self.undo.restore(boot_mark)
                settings = copy.deepcopy(efuses)
                self.second.arm(j, torn=torn, seed=f"{self.setup.seed}/{result.index}")
                try:
                    ScratchDevice(self.flash, settings, DeviceState()).boot(power_on=True)
                except PowerCut:
                    pass
                finally:
                    self.second.disarm()
                dev = ScratchDevice(self.flash, settings, DeviceState())
                again: list[str] = []
                if self._check_boot(dev, dev.boot(power_on=True), again) == "bricked":
                    result.outcome = "bricked"
                self._check_otadata(dev, again)
                where = "during" if torn else "before"
                result.failures += [f"after a second cut {where} the power-on's flash operation {j}: {f}" for f in again]
                tried += 1
        return tried

    def _check_boot(self, dev: Device, boot: BootResult, failures: list[str]) -> str:
        booted = boot.booted
        if booted is None:
            why = boot.trace[-1] if boot.trace else "the bootloader found nothing to boot"
            failures.append(f"no bootable app: {why}")
            return "bricked"
        settings = dev.settings
        validated = not (settings.skip_validation_always or settings.skip_validation_on_power_on)
        verified = boot.image if validated else dev.verify_partition(booted)
        if not verified.ok:
            failures.append(f"boots '{booted.label}' whose image does not verify: {verified.reason}")
            return "bricked"
        if booted.label == self.setup.target:
            return "new"
        if booted.label == self.setup.old:
            return "old"
        failures.append(f"boots '{booted.label}', neither the old app ('{self.setup.old}') nor the new one")
        return "other"

    def _check_otadata(self, dev: Device, failures: list[str]) -> None:
        try:
            part = dev.partitions.otadata()
        except PartitionTableInvalid:
            return  # no table, no otadata to check: the boot check has said the device is bricked
        if part is None:
            return
        entries = OtaData(dev.io, part).read()
        if self.setup.start_active_ok and get_active_otadata(entries) == -1:
            failures.append("otadata has no valid entry any more: " + "; ".join(e.describe() for e in entries))

    def _check_resume(self, dev: Device, progress: int, failures: list[str]) -> bool:
        image, target = self.setup.plan.image, self.target
        try:
            resume_ota(dev, target, self.setup.plan, progress)
        except EspError as err:
            failures.append(f"the resumed OTA (from byte {progress}) failed: {err}")
            return False
        if dev.io.read(target, 0, len(image)) != image:
            failures.append(f"the resumed OTA (from byte {progress}) left a slot that differs from the image")
            return False
        return True


def _run_shard(setup: Setup, points: Sequence[CutPoint], folder: str) -> list[CutResult]:
    worker = Worker(setup, Path(folder), points)
    try:
        return worker.run()
    finally:
        worker.close()


@dataclass
class Report:
    """The campaign's results: cut points by phase and outcome, failures with their reproduction."""

    image_size: int
    target: str
    old: str
    operations: int
    phase_operations: dict[str, int]
    seed: int
    results: list[CutResult]
    seconds: float
    replay_checked_against_https: bool
    final: str | None = None  # the partition esp_ota_end copied the image to (finalize_with_copy)

    @property
    def bricked(self) -> int:
        return sum(r.bricked for r in self.results)

    @property
    def failed(self) -> list[CutResult]:
        return [r for r in self.results if r.failures]

    def by_phase(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for phase in (*PHASES, AFTER):
            rows = [r for r in self.results if r.phase == phase]
            if not rows and phase not in self.phase_operations:
                continue
            table[phase] = {
                "operations": self.phase_operations.get(phase, 0),
                "cut_points": len(rows),
                "old": sum(r.outcome == "old" for r in rows),
                "new": sum(r.outcome == "new" for r in rows),
                "bricked": sum(r.bricked for r in rows),
                "failed": sum(bool(r.failures) for r in rows),
            }
        return table

    @property
    def second_cuts(self) -> int:
        return sum(r.second_cuts for r in self.results)

    def resume_counts(self) -> dict[str, int]:
        tried = [r for r in self.results if r.resumed is not None]
        return {"tried": len(tried), "identical": sum(bool(r.resumed) for r in tried)}

    def to_json(self) -> dict:
        return {
            "image_size": self.image_size,
            "target": self.target,
            "final": self.final,
            "old": self.old,
            "operations": self.operations,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "replay_checked_against_https": self.replay_checked_against_https,
            "phases": self.by_phase(),
            "resume": self.resume_counts(),
            "second_cuts": self.second_cuts,
            "failures": [
                {**asdict(r), "variant": r.variant, "seed": self.seed} for r in self.failed
            ],
            "cut_points": len(self.results),
            "bricked": self.bricked,
            "failed": len(self.failed),
        }


class Campaign:
    """Prepare once (start state, recorded operations), then run any set of cut points."""

    def __init__(self, device: Device, plan: OtaPlan, *, seed: int = 0, resume: bool = False,
                 https_ops: list[FlashOp] | None = None):
        if resume and not device.idf.has(RESUMPTION_CHECKED):
            raise InputError(f"the power-cut replay resumes as ESP-IDF v5.5.4 and newer do (ESP-IDF {device.idf} has "
                             "no ota_resumption, or an earlier form of it): use --idf-release v5.5.4 or newer, or newest")
        header = image_header_size(device.idf)
        if len(plan.image) < header:
            raise InputError(
                f"the image is {len(plan.image)} bytes; esp_https_ota needs at least the {header}-byte header"
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="esp-ota-emu-powercut-")
        self.folder = Path(self._tmp.name)
        self.plan = plan
        self.seed = seed
        start = self.folder / "start.bin"
        dev = _scratch_copy(device, start)
        try:
            dev.power_on_if_needed()
            old = dev.running
            target = dev.staging_partition(plan.staging)
            if target is None:
                raise EspError("ESP_ERR_NOT_FOUND", "the partition table has no OTA slot to update")
            otadata = dev.partitions.otadata()
            allowed = [(target.offset, target.end)]
            if plan.final and plan.finalize_with_copy:
                final = dev.find_partition(plan.final)
                allowed.append((final.offset, final.end))
            if otadata is not None:
                allowed.append((otadata.offset, otadata.end))
            start_active_ok = otadata is not None and get_active_otadata(OtaData(dev.io, otadata).read()) != -1
            settings, state = copy.deepcopy(dev.settings), copy.deepcopy(dev.state)
            # The dry run: the whole scenario once, recorded, then undone.
            recorder, undo = OpRecorder(), UndoLog(dev.flash)
            dev.flash.hooks.append(recorder)
            log = ScenarioLog(dev.flash.op_count, dev.flash)
            try:
                run_scenario(dev, target, plan, log)
            except EspError as err:
                raise EspError(err.esp_err, f"the update fails even without a power cut: {err.message}") from None
            undo.restore(0)
        finally:
            dev.close()
        self.ops = recorder.ops
        self.phase_starts = log.phase_starts
        if https_ops is not None:
            _compare_with_https(self.ops[: log.phase_starts["bootloader"]], https_ops)
        self.replay_checked = https_ops is not None
        self.setup = Setup(
            str(start), settings, state, plan, target.label, old.label, tuple(allowed), log.phase_starts,
            len(self.ops), seed, resume, start_active_ok,
        )

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def op_count(self) -> int:
        return len(self.ops)

    def every_point(self) -> list[CutPoint]:
        """Every operation cut cleanly and torn, and the cut after the last operation."""
        points = [CutPoint(k, torn) for k in range(self.op_count) for torn in (False, True)]
        return points + [CutPoint(self.op_count, False)]

    def sample_points(self, n: int) -> list[CutPoint]:
        """``n`` cut points (seeded), in operation order: the few after the download first (otadata,
        bootloader and confirmation writes are where an OTA is most fragile), the rest drawn from it."""
        every = self.every_point()
        download_end = self.phase_starts.get("copy", self.phase_starts["otadata"])
        rest = [p for p in every if p.index >= download_end][:n]
        download = [p for p in every if p.index < download_end]
        rng = random.Random(f"esp-ota-emu/sample/{self.seed}")
        drawn = rng.sample(download, min(n - len(rest), len(download)))
        return sorted(drawn + rest, key=lambda p: (p.index, p.torn))

    def phase_operations(self) -> dict[str, int]:
        phases = [p for p in PHASES if p in self.phase_starts]
        bounds = [self.phase_starts[p] for p in phases] + [self.op_count]
        return {p: bounds[i + 1] - bounds[i] for i, p in enumerate(phases)}

    def run(self, points: Sequence[CutPoint], *, jobs: int = 1) -> Report:
        started = time.perf_counter()
        jobs = max(1, min(jobs, len(points) // MIN_CUTS_PER_WORKER))
        if jobs == 1:
            results = _run_shard(self.setup, points, str(self.folder))
        else:
            shards = [points[i::jobs] for i in range(jobs)]
            # fork where there is one: workers then need no re-import (and no ``__main__`` guard in scripts)
            method = "fork" if "fork" in get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(jobs, mp_context=get_context(method)) as pool:
                futures = [pool.submit(_run_shard, self.setup, shard, str(self.folder)) for shard in shards]
                results = [r for f in futures for r in f.result()]
        results.sort(key=lambda r: (r.index, r.torn))
        return Report(
            len(self.plan.image), self.setup.target, self.setup.old, self.op_count, self.phase_operations(),
            self.seed, results, time.perf_counter() - started, self.replay_checked,
            self.plan.final if self.plan.finalize_with_copy else None,
        )


def _scratch_copy(device: Device, path: Path) -> ScratchDevice:
    """Copy a device's flash into ``path`` (streamed) and open it as a scratch device with the same settings."""
    size, step = device.flash.size, 1 << 20
    with open(path, "wb") as out:
        for addr in range(0, size, step):
            out.write(device.flash.view(addr, min(step, size - addr)))
    return ScratchDevice(Flash.open(path), copy.deepcopy(device.settings), copy.deepcopy(device.state))


def _op_key(op: FlashOp) -> tuple:
    return (op.kind, op.addr, op.length, op.data)


def _compare_with_https(replayed: list[FlashOp], https: list[FlashOp]) -> None:
    """The replay must erase and program exactly what the HTTPS run did, in the same order."""
    for i, (a, b) in enumerate(zip(replayed, https)):
        if _op_key(a) != _op_key(b):
            raise EspError(
                "ESP_FAIL",
                f"the replayed OTA differs from the HTTPS run at flash operation {i}: "
                f"{a.kind} 0x{a.addr:x}+{a.length} instead of {b.kind} 0x{b.addr:x}+{b.length}",
            )
    if len(replayed) != len(https):
        raise EspError(
            "ESP_FAIL",
            f"the replayed OTA makes {len(replayed)} flash operations, the HTTPS run made {len(https)}",
        )


def record_https_ota(device: Device, url: str, **https_options) -> tuple[OtaPlan, list[FlashOp]]:
    """Run the real HTTPS OTA once on a scratch copy of ``device``: the image it wrote and its flash operations.

    ``https_options`` go to :func:`esp_ota_emu.https_ota.api.https_ota` (``cert_pem``,
    ``bulk_flash_erase``, ``buffer_size``, ...). Flash operations of the power-on that precedes the
    update (when the emulator never booted this flash) are not part of the list.
    """
    with tempfile.TemporaryDirectory(prefix="esp-ota-emu-record-") as tmp:
        dev = _scratch_copy(device, Path(tmp) / "record.bin")
        try:
            dev.power_on_if_needed()
            recorder = OpRecorder()
            dev.flash.hooks.append(recorder)
            result = https_ota(dev, url, **https_options)
            slot = dev.find_partition(result.partition)
            image = dev.io.read(slot, 0, result.bytes_written)
        finally:
            dev.close()
    plan = OtaPlan(
        image,
        buffer_size=https_options.get("buffer_size", 0),
        bulk_flash_erase=bool(https_options.get("bulk_flash_erase", False)),
        staging=https_options.get("staging"),
        final=https_options.get("final"),
        finalize_with_copy=bool(https_options.get("finalize_with_copy", False)),
    )
    return plan, recorder.ops
