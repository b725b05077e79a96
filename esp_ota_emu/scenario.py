"""Scenarios: a written sequence of device events with the app expected to run after each one.

A scenario file (JSON always; TOML on Python 3.11+, or 3.10 with the ``tomli`` package) names a flash
image, the device settings, and steps. Each step is one event and optional expectations::

    flash = "merged.bin"              # relative to the scenario file; the run works on a copy
    [device]
    rollback = true                   # any device setting, as the command-line options
    [[step]]
    do = "ota"                        # ota (file = ... or url = ...), reset, power-cycle, power-cut,
    file = "app_v2.bin"               # confirm, crash, mark-invalid, set-boot (partition = ..., skip_validate = true)
    [[step]]
    do = "reset"
    expect = { booted = "ota_1", version = "2.0.0", state = "PENDING_VERIFY" }
    [[step]]
    do = "power-cut"                  # the app did not confirm itself
    expect = { booted = "ota_0" }

``expect.error`` names the ESP-IDF error the step must fail with. ``booted`` is the partition whose
app runs after the step (null: no bootable app), ``version`` its esp_app_desc_t version, ``state``
esp_ota_get_state_partition() of it. A step that fails without an expected error ends the run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from .device import Device, DeviceSettings, sidecar_path
from .errors import EspError, InputError
from .formats.app_desc import c_text
from .formats.otadata import state_name
from .local_ota import ota_from_file

ACTIONS = ("ota", "reset", "power-cycle", "power-cut", "confirm", "crash", "mark-invalid", "set-boot")
EXPECT_KEYS = {"booted", "version", "state", "error"}
OTA_URL_KEYS = {"cert_pem", "allow_http", "verify_spi_mode", "skip_cert_common_name_check", "crt_bundle",
                "common_name", "username", "password", "auth_type", "basic_auth", "digest_auth", "client_cert",
                "client_key", "timeout_ms", "stall_limit_s", "buffer_size_tx", "tls13", "cert_expiry_check",
                "staging", "final", "finalize_with_copy"}
_MISSING = object()


def load_scenario_file(path: Path) -> dict[str, Any]:
    """Read a scenario: JSON by content or ``.json`` suffix, else TOML."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read scenario {path}: {getattr(err, 'strerror', None) or err}") from None
    if path.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as err:
            raise InputError(f"{path} is not valid JSON: {err}") from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise InputError(f"{path}: TOML needs Python 3.11+ or the tomli package; write the scenario as JSON") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{path} is not valid TOML: {err}") from None


@dataclass
class Step:
    number: int
    action: str
    args: dict[str, Any]
    expect: dict[str, Any]

    @property
    def name(self) -> str:
        what = self.args.get("file") or self.args.get("url") or self.args.get("partition")
        return f"step {self.number} ({self.action}{' ' + str(what) if what else ''})"


@dataclass
class StepResult:
    step: Step
    booted: str | None
    version: str | None
    state: str | int | None
    error: str | None
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        return {"step": self.step.number, "do": self.step.action, "ok": self.ok, "booted": self.booted,
                "version": self.version, "state": self.state, "error": self.error, "failures": self.failures}


@dataclass
class Scenario:
    """A parsed scenario file: where the flash is, the device settings, the steps."""

    path: Path
    flash: Path | None
    settings: dict[str, Any]
    steps: list[Step]

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        path = Path(path)
        data = load_scenario_file(path)
        if not isinstance(data, dict):
            raise InputError(f"{path}: a scenario is a table / object with 'flash', 'device' and 'step'")
        unknown = set(data) - {"flash", "device", "step", "steps", "description"}
        if unknown:
            raise InputError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
        settings = data.get("device", {})
        names = {f.name for f in fields(DeviceSettings)}
        bad = set(settings) - names
        if bad:
            raise InputError(f"{path}: unknown device setting(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(names))})")
        defaults = DeviceSettings()
        for key, value in settings.items():
            default = getattr(defaults, key)
            want = type(default) if default is not None else {"chip": str, "chip_rev": int}[key]
            if type(value) is not want:
                raise InputError(f"{path}: device setting {key} must be a {want.__name__}, not {value!r}")
        raw_steps = data.get("step", data.get("steps", []))
        if not isinstance(raw_steps, list) or not raw_steps:
            raise InputError(f"{path}: no steps (a [[step]] table array / a 'steps' list)")
        steps = [cls._step(path, i, raw) for i, raw in enumerate(raw_steps, 1)]
        flash = data.get("flash")
        return cls(path, (path.parent / flash) if flash else None, settings, steps)

    @staticmethod
    def _step(path: Path, number: int, raw: Any) -> Step:
        if not isinstance(raw, dict) or "do" not in raw:
            raise InputError(f"{path}: step {number} needs 'do' (one of {', '.join(ACTIONS)})")
        raw = dict(raw)
        action = raw.pop("do")
        if action not in ACTIONS:
            raise InputError(f"{path}: step {number}: unknown action {action!r} (one of {', '.join(ACTIONS)})")
        expect = raw.pop("expect", {})
        if not isinstance(expect, dict) or set(expect) - EXPECT_KEYS:
            raise InputError(f"{path}: step {number}: 'expect' takes {', '.join(sorted(EXPECT_KEYS))}")
        allowed = {"ota": {"file", "url", *OTA_URL_KEYS}, "set-boot": {"partition", "skip_validate"}}.get(action, set())
        if set(raw) - allowed:
            raise InputError(f"{path}: step {number} ({action}): unknown key(s) {', '.join(sorted(set(raw) - allowed))}")
        if action == "ota" and ("file" in raw) == ("url" in raw):
            raise InputError(f"{path}: step {number}: an OTA takes either 'file' or 'url'")
        if action == "set-boot" and "partition" not in raw:
            raise InputError(f"{path}: step {number}: set-boot needs 'partition'")
        return Step(number, action, raw, expect)


def running_version(dev: Device) -> str | None:
    """The version string of the running app's esp_app_desc_t (None if it has none)."""
    desc = dev.running_app_desc()
    return None if desc is None else c_text(desc.version)


def _running_state(dev: Device) -> str | int | None:
    p = dev.running
    if p is None or not p.is_ota_app:
        return None
    try:
        return state_name(dev.ota.get_state_partition(p))
    except EspError:
        return None


class ScenarioRunner:
    """Runs the steps of a scenario on one device, checking the expectations after each."""

    def __init__(self, scenario: Scenario, device: Device):
        self.scenario = scenario
        self.dev = device

    def _do(self, step: Step) -> None:
        dev, a = self.dev, step.args
        if step.action == "ota":
            if "file" in a:
                ota_from_file(dev, self.scenario.path.parent / a["file"])
            else:
                options = {k: v for k, v in a.items() if k != "url"}
                for key in ("cert_pem", "client_cert", "client_key"):
                    if key in options:
                        options[key] = str(self.scenario.path.parent / options[key])
                dev.https_ota(a["url"], **options)
        elif step.action in ("reset", "crash"):
            dev.boot()  # a crash before esp_ota_mark_app_valid_cancel_rollback() is a panic reset
        elif step.action in ("power-cycle", "power-cut"):
            dev.boot(power_on=True)
        elif step.action == "confirm":
            dev.power_on_if_needed()
            dev.ota.mark_app_valid_cancel_rollback()
        elif step.action == "mark-invalid":
            dev.power_on_if_needed()
            dev.ota.mark_app_invalid_rollback()
            dev.boot()  # esp_ota_mark_app_invalid_rollback_and_reboot()
        elif step.action == "set-boot":
            dev.power_on_if_needed()
            p = dev.partitions.find(a["partition"])
            if p is None:
                raise InputError(f"{step.name}: no partition labelled {a['partition']!r}")
            if a.get("skip_validate"):
                dev.ota.set_boot_partition_skip_validate(p)
            else:
                dev.ota.set_boot_partition(p)

    def run_step(self, step: Step) -> StepResult:
        error = None
        try:
            self._do(step)
        except EspError as err:
            error = err
        result = StepResult(step, self.dev.state.running, running_version(self.dev), _running_state(self.dev),
                            str(error) if error else None)
        want_error = step.expect.get("error")
        if error is not None and want_error != error.esp_err:
            result.failures.append(f"failed: {error}" + (f" (expected {want_error})" if want_error else ""))
        elif error is None and want_error:
            result.failures.append(f"expected error {want_error}, but the step succeeded")
        for key, got in (("booted", result.booted), ("version", result.version), ("state", result.state)):
            want = step.expect.get(key, _MISSING)
            if want is not _MISSING and want != got:
                result.failures.append(f"expected {key} {want!r}, got {got!r}")
        return result

    def run(self, on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
        results = []
        for step in self.scenario.steps:
            result = self.run_step(step)
            results.append(result)
            if on_step:
                on_step(result)
            if not result.ok:
                break
        return results


def run_scenario(path: str | Path, *, flash: str | Path | None = None, in_place: bool = False,
                 on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
    """Load and run a scenario on a copy of its flash (``in_place``: on the flash itself); stops at the first failure."""
    scenario = Scenario.load(path)
    source = Path(flash) if flash else scenario.flash
    if source is None:
        raise InputError(f"{scenario.path}: no flash given (a 'flash' key or --flash)")
    if not source.is_file():
        raise InputError(f"flash image {source} not found")
    with tempfile.TemporaryDirectory(prefix="esp-ota-emu-scenario-") as tmp:
        target = source
        if not in_place:
            target = Path(tmp) / source.name
            shutil.copyfile(source, target)
            if sidecar_path(source).exists():
                shutil.copyfile(sidecar_path(source), sidecar_path(target))
        with Device.open(target, **scenario.settings) as dev:
            return ScenarioRunner(scenario, dev).run(on_step)
