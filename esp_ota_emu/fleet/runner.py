"""The fleet run: N devices cloned from one template flash, C at a time, against one OTA server.

Each device runs on its own thread (the OTA engine is synchronous, as a device's OTA task is), from a
copy-on-write clone of the template, through :func:`~esp_ota_emu.fleet.lifecycle.run_device`. Starts
are spread evenly over the ramp time. Memory stays flat: images are streamed to the devices' flash
and a device's flash is released when it finishes (after ``on_device_done`` saw it).
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..device import DeviceSettings, DeviceState
from .cow import FlashTemplate
from .lifecycle import DeviceOutcome, FleetDevice, clone_device, power_on_template, run_device
from .report import FleetReport
from .timing import TimingModel

SAMPLE_INTERVAL = 0.1  # seconds between progress reports and memory samples


@dataclass
class FleetConfig:
    """What to run: ``devices`` devices updating from ``url``, ``concurrency`` at a time."""

    url: str
    devices: int
    concurrency: int = 10
    ramp: float = 0.0  # seconds over which device starts are spread
    crash_share: float = 0.0  # share of devices whose new app crashes before confirming itself
    seed: int = 0
    timing: TimingModel | None = None
    ota_options: Mapping[str, Any] = field(default_factory=dict)  # https_ota() options (cert_pem, timeout_ms, ...)

    def __post_init__(self):
        if self.devices < 1:
            raise ValueError("a fleet needs at least one device")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0.0 <= self.crash_share <= 1.0:
            raise ValueError("crash_share is a share between 0 and 1")
        if self.ramp < 0:
            raise ValueError("ramp is a number of seconds, at least 0")


def crashing_devices(devices: int, share: float, seed: int) -> frozenset[int]:
    """Which devices' new app crashes: exactly round(devices * share) of them, chosen by ``seed``."""
    return frozenset(random.Random(seed).sample(range(devices), round(devices * share)))


@dataclass(frozen=True)
class Progress:
    """A snapshot of a run, for a live display."""

    devices: int
    started: int
    done: int
    in_flight: int
    outcomes: Mapping[str, int]
    elapsed: float


def rss_anon() -> int | None:
    """This process's resident anonymous memory (heap, thread stacks, copied flash pages), Linux only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _raise_fd_limit(concurrency: int) -> None:
    """Each device in flight holds its flash mapping and its connection: make room for them."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 64 + 6 * concurrency
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


class _Run:
    """The shared state of one fleet run."""

    def __init__(self, config: FleetConfig):
        self.config = config
        self.lock = threading.Lock()
        self.next_index = 0
        self.started = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.outcomes: Counter[str] = Counter()
        self.results: list[DeviceOutcome | None] = [None] * config.devices
        self.fatal: BaseException | None = None
        self.finished = threading.Event()
        self.t0 = time.monotonic()

    def take(self) -> int | None:
        with self.lock:
            if self.fatal is not None or self.next_index >= self.config.devices:
                return None
            index, self.next_index = self.next_index, self.next_index + 1
            return index

    def begin(self) -> None:
        with self.lock:
            self.started += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def end(self, outcome: DeviceOutcome | None, error: BaseException | None = None) -> None:
        with self.lock:
            self.in_flight -= 1
            if outcome is not None:
                self.results[outcome.index] = outcome
                self.outcomes[outcome.outcome] += 1
            if error is not None and self.fatal is None:
                self.fatal = error

    def progress(self) -> Progress:
        with self.lock:
            return Progress(
                self.config.devices,
                self.started,
                sum(self.outcomes.values()),
                self.in_flight,
                dict(self.outcomes),
                time.monotonic() - self.t0,
            )


def run_fleet(
    template: FlashTemplate,
    settings: DeviceSettings,
    state: DeviceState,
    config: FleetConfig,
    *,
    on_device_done: Callable[[FleetDevice, DeviceOutcome], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> FleetReport:
    """Run the fleet; every device starts from ``template`` with ``settings`` and ``state``, running its
    app (a template that never ran is powered on once first, see :func:`power_on_template`).

    ``on_device_done(device, outcome)`` is called on the device's thread before its flash is released
    (to keep or write out a device's final flash); ``on_progress`` every 0.1 s from a monitor thread.
    An error that is not a device's own OTA failure (unreadable template, a bug) stops the run and is
    raised once the devices in flight have finished.
    """
    state = power_on_template(template, settings, state)
    _raise_fd_limit(min(config.concurrency, config.devices))
    crashing = crashing_devices(config.devices, config.crash_share, config.seed)
    run = _Run(config)
    memory_before = rss_anon()
    memory_peak = [memory_before, 0]  # the highest sample, and the devices in flight at that moment

    def worker() -> None:
        while (index := run.take()) is not None:
            delay = run.t0 + config.ramp * index / config.devices - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            run.begin()
            outcome, error = None, None
            try:
                dev = clone_device(template, settings, state)
                try:
                    outcome = run_device(
                        dev, config.url, index=index, crash=index in crashing,
                        timing=config.timing, ota_options=config.ota_options,
                    )
                    if on_device_done is not None:
                        on_device_done(dev, outcome)
                finally:
                    dev.close()
            except BaseException as err:  # noqa: BLE001 - handed to the caller after the run
                error = err
            run.end(outcome, error)

    def monitor() -> None:
        while not run.finished.wait(SAMPLE_INTERVAL):
            rss = rss_anon()
            if rss is not None and memory_peak[0] is not None and rss > memory_peak[0]:
                memory_peak[:] = [rss, run.progress().in_flight]
            if on_progress is not None:
                on_progress(run.progress())

    threads = [
        threading.Thread(target=worker, name=f"fleet-device-{i}", daemon=True)
        for i in range(min(config.concurrency, config.devices))
    ]
    watcher = threading.Thread(target=monitor, name="fleet-monitor", daemon=True)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - run.t0
    run.finished.set()
    watcher.join()
    if on_progress is not None:
        on_progress(run.progress())
    if run.fatal is not None:
        raise run.fatal
    devices = [r for r in run.results if r is not None]
    report = FleetReport(
        config.url, devices, wall, config.concurrency, t0=run.t0,
        timing=config.timing.to_json() if config.timing is not None and config.timing.active else None,
    )
    private = [d.private_bytes for d in devices]
    report.memory = {
        "peak_in_flight": run.peak_in_flight,
        "flash_private_bytes_per_device": round(sum(private) / len(private)) if private else 0,
    }
    if memory_before is not None and memory_peak[0] is not None:
        delta, in_flight = max(memory_peak[0] - memory_before, 0), memory_peak[1]
        report.memory["rss_anon_peak_delta_bytes"] = delta
        report.memory["in_flight_at_peak"] = in_flight
        report.memory["rss_anon_per_device_in_flight_bytes"] = round(delta / in_flight) if in_flight else None
    elif sys.platform != "linux":
        report.memory["note"] = "process memory is measured on Linux only"
    return report
