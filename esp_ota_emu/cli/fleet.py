"""``esp-ota-emu fleet --from FLASH --url URL --devices N``: a rollout to many emulated devices at once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..device import Device
from ..errors import EXIT_NO_BOOTABLE, EXIT_OTA_FAILED, InputError
from ..flash import Flash
from ..fleet import FLASH_TIMINGS, FleetConfig, FlashTemplate, TimingModel, run_fleet, save_flash
from ..fleet.lifecycle import FELL_BACK, NO_BOOTABLE, OTA_FAILED
from ..fleet.timing import parse_bandwidth
from ..https_ota.api import pem_text
from .main import cli
from .options import device_options, echo_json, https_ota_options


class _Progress:
    """A live one-line status of the run on a terminal."""

    def __call__(self, p) -> None:
        outcomes = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in p.outcomes.items())
        line = f"\rfleet: {p.done}/{p.devices} done" + (f" ({outcomes})" if outcomes else "")
        line += f", {p.in_flight} in flight, {p.elapsed:.1f} s"
        click.echo(line.ljust(100), nl=False, err=True)

    @staticmethod
    def done() -> None:
        click.echo("", err=True)


def _write_device(dev, out: Path) -> None:
    """A device's final flash as a normal flash file with its sidecar (settings and state), for info/boot/QEMU."""
    save_flash(dev.flash, out)
    with Flash.open(out) as flash:
        Device(flash, dev.settings, dev.state).save()


@cli.command("fleet")
@click.option("--from", "template", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Template flash every device starts from (its FLASH.emu.json settings apply).")
@click.option("--url", required=True, help="Where the devices download the new app from.")
@click.option("--devices", type=click.IntRange(min=1), required=True, help="How many devices.")
@click.option("--concurrency", type=click.IntRange(min=1), default=10, show_default=True,
              help="Devices updating at the same time.")
@click.option("--ramp", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Spread the device starts evenly over this many seconds.")
@click.option("--crash-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of devices whose new app crashes before confirming itself (rolls back with --rollback).")
@click.option("--seed", type=int, default=0, show_default=True, help="Chooses which devices crash.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, writable=True),
              help="Write the full report (JSON, every device) to this file.")
@click.option("--write-device", type=click.IntRange(min=0), help="Write this device's final flash (0-based) to -o.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="File for --write-device.")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Write every device's final flash into this folder.")
@click.option("--bandwidth", help="Timing model: link speed per device, e.g. 1Mbit, 250kbit.")
@click.option("--rtt-ms", type=click.FloatRange(min=0), default=0.0, help="Timing model: link round-trip time.")
@click.option("--flash-timing", type=click.Choice(["none", *FLASH_TIMINGS]), default="none", show_default=True,
              help="Timing model: SPI flash erase/program times from the datasheet (typical or max).")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as one JSON object.")
@https_ota_options
@device_options
def fleet_cmd(template, url, devices, concurrency, ramp, crash_share, seed, report_path, write_device, output,
              out_dir, bandwidth, rtt_ms, flash_timing, as_json, ota_options, open_device):
    """Roll an update out to many emulated devices cloned from one template flash.

    Each device runs the whole path: esp_https_ota, a reset with the bootloader's writes, the new app
    confirming itself (or crashing first, --crash-share), and another reset. Devices keep only the
    flash sectors they wrote. Exit status: 0 when every device finished its update, 4 when an OTA
    failed or the bootloader refused the new image, 5 when a device has no bootable app.
    """
    if (write_device is None) != (output is None):
        raise click.UsageError("--write-device K and -o FLASH go together")
    if write_device is not None and write_device >= devices:
        raise click.UsageError(f"--write-device {write_device}: devices are numbered 0 to {devices - 1}")
    if ota_options["staging"] or ota_options["final"] or ota_options["finalize_with_copy"]:
        raise click.UsageError("a fleet rolls out apps to the next OTA slot: --staging / --final / --finalize-with-copy "
                               "are for 'ota' and 'powercut'")
    timing = TimingModel(
        bandwidth=parse_bandwidth(bandwidth) if bandwidth else None,
        rtt=rtt_ms / 1000,
        flash=FLASH_TIMINGS.get(flash_timing),
    )
    ota_options = {**ota_options, "cert_pem": pem_text(ota_options["cert_pem"])}  # read once for every device
    config = FleetConfig(url, devices, concurrency, ramp, crash_share, seed, timing, ota_options)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    width = len(str(devices - 1))

    def on_device_done(dev, outcome) -> None:
        if outcome.index == write_device:
            _write_device(dev, Path(output))
        if out_dir is not None:
            _write_device(dev, Path(out_dir) / f"device-{outcome.index:0{width}d}.bin")

    progress = _Progress() if not as_json and sys.stderr.isatty() else None
    with FlashTemplate(template) as tmpl:
        # The template's settings, with the options applied to the private copy (the original's sidecar stays as it is).
        with open_device(tmpl.path, readonly=True) as dev:
            settings, state = dev.settings, dev.state
            if dev.chip is None and settings.chip is None:
                raise InputError(f"{template}: no bootloader found to tell the chip; give --chip")
        try:
            report = run_fleet(tmpl, settings, state, config, on_device_done=on_device_done, on_progress=progress)
        finally:
            if progress is not None:
                progress.done()
    data = report.to_json()
    if report_path is not None:
        try:
            Path(report_path).write_text(json.dumps(data, indent=1) + "\n")
        except OSError as err:
            raise InputError(f"cannot write the report {report_path}: {err.strerror}") from None
    if as_json:
        echo_json(data)
    else:
        click.echo(report.summary())
        for device in report.devices:
            if device.esp_err is not None or device.outcome in (FELL_BACK, NO_BOOTABLE):
                reason = ": ".join(x for x in (device.esp_err, device.message) if x)
                click.echo(f"first failure: device {device.index} {device.outcome.replace('_', ' ')}: {reason}")
                break
    if report.count(NO_BOOTABLE):
        sys.exit(EXIT_NO_BOOTABLE)
    if report.count(OTA_FAILED) or report.count(FELL_BACK):
        sys.exit(EXIT_OTA_FAILED)
