"""One fleet device's whole path: OTA, reset, the new app's verdict, reset again.

What a device does in a rollout, as ESP-IDF's OTA examples do it: ``esp_https_ota()`` into the
passive slot (devices start running: :func:`power_on_template`), ``esp_restart()`` so the bootloader
picks the new slot (with its otadata writes), then the new app either confirms itself
(``esp_ota_mark_app_valid_cancel_rollback()`` when its state is PENDING_VERIFY, as the
native_ota_example does) or crashes before that, and the device resets once more. The outcome is
the slot and version the bootloader boots at that last reset, or the OTA's ESP-IDF error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from ..device import Device, DeviceSettings, DeviceState
from ..errors import EXIT_NO_BOOTABLE, EspError
from ..formats.app_desc import c_text
from ..formats.otadata import OtaState
from .cow import FlashTemplate, private_bytes
from .timing import DeviceClock, TimingModel

# The outcome of one device, in the order reports list them.
UPDATED = "updated"  # boots the new app, which confirmed itself
ROLLED_BACK = "rolled_back"  # the new app crashed before confirming; the bootloader went back to the old one
CRASH_LOOP = "crash_loop"  # the new app crashed and still boots (no rollback in this bootloader)
FELL_BACK = "fell_back"  # the bootloader refused the new image at the first reset and booted another app
OTA_FAILED = "ota_failed"  # esp_https_ota failed: the device keeps running the old app
NO_BOOTABLE = "no_bootable"  # after a reset the bootloader found nothing to boot
OUTCOMES = (UPDATED, ROLLED_BACK, CRASH_LOOP, FELL_BACK, OTA_FAILED, NO_BOOTABLE)


class FleetDevice(Device):
    """A device whose settings and state live in memory only: fleet devices have no sidecar files."""

    def save(self) -> None:
        pass


def clone_device(template: FlashTemplate, settings: DeviceSettings, state: DeviceState) -> FleetDevice:
    """A new device: a copy-on-write clone of the template flash with its own copy of settings and state."""
    return FleetDevice(template.clone(), DeviceSettings(**asdict(settings)), _copy_state(state))


def _copy_state(state: DeviceState) -> DeviceState:
    return DeviceState(state.running, state.boots, dict(state.resume))


def power_on_template(template: FlashTemplate, settings: DeviceSettings, state: DeviceState) -> DeviceState:
    """Power the template on once, before any clone exists, if it never ran: the bootloader pass (and its
    otadata writes) every device would make at its first power-on goes into the shared template, so each
    device starts with its app running. Raises EspError when nothing boots."""
    dev = FleetDevice(template.open_for_setup(), DeviceSettings(**asdict(settings)), _copy_state(state))
    with dev:
        try:
            dev.power_on_if_needed()
        except EspError as err:
            err.exit_code = EXIT_NO_BOOTABLE
            raise
    return dev.state


@dataclass
class DeviceOutcome:
    """What happened to one device."""

    index: int
    outcome: str
    booted: str | None = None  # the slot the last reset booted (or, after a failed OTA, the running one)
    version: str | None = None  # its esp_app_desc_t version
    ota_slot: str | None = None  # the slot the OTA wrote
    crashed: bool = False  # the new app was made to crash before confirming
    esp_err: str | None = None
    message: str | None = None
    http_status: list[int] = field(default_factory=list)  # status of every HTTP response, in order
    bytes_written: int = 0
    download_s: float | None = None  # ESP_HTTPS_OTA_START to the last flash write of the image
    start: float = 0.0  # time.monotonic() when the device started / ended
    end: float = 0.0
    private_bytes: int = 0  # flash sectors this device holds of its own

    @property
    def ok(self) -> bool:
        return self.outcome in (UPDATED, ROLLED_BACK)

    def to_json(self, t0: float = 0.0) -> dict[str, Any]:
        data = asdict(self)
        data["start"], data["end"] = round(self.start - t0, 6), round(self.end - t0, 6)
        return data


class _Watch:
    """Per-device observer of the HTTP responses its client receives (status codes, link round trips)."""

    def __init__(self, clock: DeviceClock | None):
        self.clock = clock
        self.statuses: list[int] = []


class _HttpxResponses(logging.Handler):
    """httpx logs every response it receives (``HTTP Request: GET url "HTTP/1.1 200 OK"``, INFO, logger
    ``httpx``): this handler hands the status to the watch of the thread that received it."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        watch = getattr(self.local, "watch", None)
        if watch is None or not isinstance(record.args, tuple) or len(record.args) < 4:
            return
        status = record.args[3]
        if isinstance(status, int):
            watch.statuses.append(status)
            if watch.clock is not None:
                watch.clock.response()


_HANDLER = _HttpxResponses()
_HTTPX = logging.getLogger("httpx")
_users = 0
_users_lock = threading.Lock()
_saved_level = logging.NOTSET


@contextmanager
def _watching(watch: _Watch) -> Iterator[None]:
    """Route this thread's httpx responses to ``watch``; the httpx logger is set to INFO while any device runs."""
    global _users, _saved_level
    with _users_lock:
        if _users == 0:
            _saved_level = _HTTPX.level
            _HTTPX.addHandler(_HANDLER)
            if not _HTTPX.isEnabledFor(logging.INFO):
                _HTTPX.setLevel(logging.INFO)
        _users += 1
    _HANDLER.local.watch = watch
    try:
        yield
    finally:
        _HANDLER.local.watch = None
        with _users_lock:
            _users -= 1
            if _users == 0:
                _HTTPX.removeHandler(_HANDLER)
                _HTTPX.setLevel(_saved_level)


def _running_version(dev: Device) -> str | None:
    """The version in the running app's descriptor (after a failed OTA: the app that keeps running)."""
    p = dev.running
    if p is None:
        return None
    found = dev.verify_partition(p, validate=False)
    desc = found.image.app_desc if found.image is not None else None
    return c_text(desc.version) if desc is not None else None


def _confirm_if_pending(dev: Device) -> None:
    """The new app's start-up check of ESP-IDF's examples: confirm itself if it is PENDING_VERIFY."""
    running = dev.running
    if running is None or not running.is_ota_app:
        return
    try:
        state = dev.ota.get_state_partition(running)
    except EspError:
        return
    if state == OtaState.PENDING_VERIFY:
        dev.ota.mark_app_valid_cancel_rollback()


def run_device(
    dev: Device,
    url: str,
    *,
    index: int = 0,
    crash: bool = False,
    timing: TimingModel | None = None,
    ota_options: Mapping[str, Any] | None = None,
) -> DeviceOutcome:
    """Take one device through the rollout; ``ota_options`` go to :func:`esp_ota_emu.https_ota.api.https_ota`."""
    out = DeviceOutcome(index, OTA_FAILED, start=time.monotonic())
    clock = timing.device() if timing is not None and timing.active else None
    if clock is not None and timing.flash is not None:
        dev.flash.hooks.append(clock.flash_hook)
    watch = _Watch(clock)
    marks: dict[str, float] = {}

    def on_progress(written: int, _size: int) -> None:
        # between esp_https_ota_perform calls, so that releases without events (before v5.0.1) are paced too
        out.bytes_written = written
        if clock is not None:
            clock.received(written)
        marks["write"] = time.monotonic()

    try:
        with _watching(watch):
            try:
                marks["start"] = time.monotonic()
                result = dev.https_ota(url, on_progress=on_progress, **(ota_options or {}))
            except EspError as err:
                out.esp_err, out.message = err.esp_err, err.message
                out.booted = dev.state.running
                out.version = _running_version(dev)
                return out
        out.ota_slot, out.bytes_written = result.partition, result.bytes_written
        first = dev.boot()  # esp_restart() after the update
        if first.booted is not None and first.booted.label == result.partition:
            if crash:
                out.crashed = True
            else:
                _confirm_if_pending(dev)
            final = dev.boot()
        else:
            final = first
        out.booted = final.booted.label if final.booted is not None else None
        out.version = final.version
        if final.booted is None:
            out.outcome = NO_BOOTABLE
            out.message = "; ".join(final.trace[-2:])
        elif first.booted is None or first.booted.label != result.partition:
            out.outcome = FELL_BACK
            out.message = "; ".join(first.trace[-2:])
        elif out.booted == result.partition:
            out.outcome = CRASH_LOOP if crash else UPDATED
        else:
            out.outcome = ROLLED_BACK
        return out
    finally:
        out.http_status = watch.statuses
        if "start" in marks and "write" in marks:
            out.download_s = marks["write"] - marks["start"]
        out.private_bytes = private_bytes(dev.flash)
        out.end = time.monotonic()
