"""A Locust user that is an emulated ESP32: ``locust -f`` with it runs a fleet across machines.

Each Locust user is one device slot: every task iteration clones a new device from the template
flash (copy-on-write) and takes it through the rollout of :mod:`esp_ota_emu.fleet.lifecycle`
(esp_https_ota, reset, the new app's verdict, reset). Locust then does what it is good at: users
spread over worker machines (``--master`` / ``--worker``), spawn rates, its web UI and statistics.

Two entries per device go into Locust's statistics:

* ``OTA <url path>``: the download (START to the last flash write); a failure carries the ESP-IDF
  error name, so Locust's failure table groups devices by ESP-IDF error.
* ``BOOT <slot> <version>``: the app the device boots at the end, so the statistics show which
  version the fleet runs. Crash loops, images the bootloader refused, and bricked devices are failures.

Options come from Locust's command line (``--esp-template FLASH`` and the others below, also settable
in a locust.conf) or from class attributes of a subclass. Every worker needs the template flash at
the same path.
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import dataclass

try:
    import gevent
    from locust import User, events, task
    from locust.exception import StopUser
    from locust.runners import STATE_RUNNING, LocalRunner
except ImportError as err:  # the package itself works without Locust
    raise ImportError("esp_ota_emu.locust_user needs Locust: pip install 'esp-ota-emu[fleet]'") from err

from .device import Device, DeviceSettings, DeviceState
from .errors import EspError, InputError
from .fleet.cow import FlashTemplate
from .fleet.lifecycle import CRASH_LOOP, FELL_BACK, NO_BOOTABLE, clone_device, power_on_template, run_device
from .fleet.timing import FLASH_TIMINGS, TimingModel, parse_bandwidth
from .https_ota.api import pem_text

FAILED_BOOTS = (CRASH_LOOP, FELL_BACK, NO_BOOTABLE)


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    group = parser.add_argument_group("esp-ota-emu", "Emulated ESP32 devices (esp_ota_emu.locust_user)")
    group.add_argument("--esp-template", default="", help="Template flash every device starts from")
    group.add_argument("--esp-path", default="/", help="URL path of the app image on --host")
    group.add_argument("--esp-cert-pem", default="", help="Root CA (PEM file) the devices trust")
    group.add_argument("--esp-rollback", action="store_true", help="Bootloader with app rollback")
    group.add_argument("--esp-idf-release", default="", help="ESP-IDF release to follow (e.g. v5.5.2, or v4, v5, newest)")
    group.add_argument("--esp-crash-share", type=float, default=0.0,
                       help="Share of devices whose new app crashes before confirming itself")
    group.add_argument("--esp-seed", type=int, default=0, help="Chooses which devices crash")
    group.add_argument("--esp-timeout-ms", type=int, default=5000, help="Devices' network timeout")
    group.add_argument("--esp-bandwidth", default="", help="Timing model: link speed, e.g. 1Mbit")
    group.add_argument("--esp-rtt-ms", type=float, default=0.0, help="Timing model: round-trip time")
    group.add_argument("--esp-flash-timing", default="none", choices=["none", *FLASH_TIMINGS],
                       help="Timing model: datasheet flash erase/program times")
    group.add_argument("--esp-devices-per-user", type=int, default=0,
                       help="Each user stops after updating this many devices (0: until the run ends)")


_templates: dict[str, tuple[FlashTemplate, DeviceSettings, DeviceState]] = {}
_templates_lock = threading.Lock()
_device_numbers = itertools.count()


def _template(path: str, options) -> tuple[FlashTemplate, DeviceSettings, DeviceState]:
    """One shared copy-on-write template per flash file and process, powered on once, with the settings of
    its sidecar and the --esp-* options."""
    with _templates_lock:
        if path not in _templates:
            template = FlashTemplate(path)
            with Device.open(template.path, readonly=True) as dev:
                settings, state = dev.settings, dev.state
            settings.rollback = settings.rollback or getattr(options, "esp_rollback", False)
            settings.idf_release = getattr(options, "esp_idf_release", "") or settings.idf_release
            _templates[path] = (template, settings, power_on_template(template, settings, state))
        return _templates[path]


@events.quitting.add_listener
def _close_templates(**_kwargs) -> None:
    with _templates_lock:
        for template, _, _ in _templates.values():
            template.close()
        _templates.clear()


_watching_runners: set[int] = set()


def _end_run_when_all_users_stopped(runner) -> None:
    """With ``--esp-devices-per-user``, a standalone run ends once every user has updated its devices
    (instead of idling until ``--run-time``); distributed runs end by the master's run time."""
    if not isinstance(runner, LocalRunner) or runner.state != STATE_RUNNING or id(runner) in _watching_runners:
        return
    _watching_runners.add(id(runner))

    def quit_when_done() -> None:
        runner.user_greenlets.join()
        runner.quit()

    gevent.spawn(quit_when_done)


@dataclass
class _Rollout:
    """What every device of this user does: template, settings, URL, OTA options, timing, crash share."""

    template: FlashTemplate
    settings: DeviceSettings
    state: DeviceState
    url_path: str
    ota_options: dict
    timing: TimingModel
    crash_share: float
    seed: int
    devices_per_user: int


class EspOtaUser(User):
    """One emulated ESP32 after another, each updating from ``host + path``."""

    abstract = True
    template: str | None = None  # class attributes override the --esp-* options
    path: str | None = None
    cert_pem: str | None = None

    def on_start(self) -> None:
        o = self.environment.parsed_options
        template = self.template or getattr(o, "esp_template", "")
        if not template:
            raise InputError("no template flash: give --esp-template FLASH (or set EspOtaUser.template)")
        shared, settings, state = _template(str(template), o)
        cert = self.cert_pem or getattr(o, "esp_cert_pem", "")
        bandwidth = getattr(o, "esp_bandwidth", "")
        self.rollout = _Rollout(
            template=shared,
            settings=settings,
            state=state,
            url_path=self.path or getattr(o, "esp_path", "/"),
            ota_options={"cert_pem": pem_text(cert) if cert else None, "timeout_ms": getattr(o, "esp_timeout_ms", 5000)},
            timing=TimingModel(
                bandwidth=parse_bandwidth(bandwidth) if bandwidth else None,
                rtt=getattr(o, "esp_rtt_ms", 0.0) / 1000,
                flash=FLASH_TIMINGS.get(getattr(o, "esp_flash_timing", "none")),
            ),
            crash_share=getattr(o, "esp_crash_share", 0.0),
            seed=getattr(o, "esp_seed", 0),
            devices_per_user=getattr(o, "esp_devices_per_user", 0),
        )
        self.devices_done = 0

    def _record(self, request_type: str, name: str, seconds: float, length: int, exception: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=request_type, name=name, response_time=seconds * 1000, response_length=length,
            exception=exception, context={},
        )

    @task
    def update_one_device(self) -> None:
        """A new device from the template takes the whole rollout; its results go to Locust's statistics."""
        r = self.rollout
        if r.devices_per_user and self.devices_done >= r.devices_per_user:
            _end_run_when_all_users_stopped(self.environment.runner)
            raise StopUser()
        worker = getattr(self.environment.runner, "worker_index", 0)
        number = next(_device_numbers)
        crash = random.Random(f"{r.seed}:{worker}:{number}").random() < r.crash_share
        url = f"{(self.host or '').rstrip('/')}/{r.url_path.lstrip('/')}"
        dev = clone_device(r.template, r.settings, r.state)
        try:
            out = run_device(dev, url, index=number, crash=crash, timing=r.timing, ota_options=r.ota_options)
        finally:
            dev.close()
        self.devices_done += 1
        failure = EspError(out.esp_err, out.message or "") if out.esp_err else None
        self._record("OTA", r.url_path, out.download_s or (out.end - out.start), out.bytes_written, failure)
        if failure is not None:
            return
        bad = out.outcome in FAILED_BOOTS
        reason = f"{out.outcome.replace('_', ' ')}: {out.message}" if out.message else out.outcome.replace("_", " ")
        self._record(
            "BOOT", f"{out.booted or 'nothing'} {out.version or ''}".rstrip(), out.end - out.start, 0,
            Exception(reason) if bad else None,
        )


__all__ = ["EspOtaUser"]
