"""``esp-ota-emu ota FLASH --url URL``: an HTTPS OTA into a flash file, as esp_https_ota() does it."""

from __future__ import annotations

import sys
import time

import click

from ..errors import EXIT_NO_BOOTABLE, EXIT_OTA_FAILED, EspError
from ..https_ota.api import https_ota
from .main import cli
from .options import device_options, echo_json, https_ota_options


class _Progress:
    """A one-line progress bar on a terminal: how much of the image is written, and the rate."""

    WIDTH = 30

    def __init__(self):
        self.first: tuple[float, int] | None = None  # (when, bytes written) at the first report
        self.latest: tuple[float, int, int] | None = None  # (when, written, size) of the newest report
        self.drawn = 0.0

    def __call__(self, written: int, size: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, written)  # the rate counts from here: a resumed OTA's earlier bytes are not in it
        self.latest = (now, written, size)
        if now - self.drawn >= 0.1:
            self._draw()

    def _draw(self) -> None:
        assert self.first is not None and self.latest is not None
        (since, base), (now, written, size) = self.first, self.latest
        self.drawn = now
        rate = (written - base) / max(now - since, 1e-6) / 1e6
        if size > 0:
            filled = min(self.WIDTH, written * self.WIDTH // size)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            percent = min(100, written * 100 // size)
            line = f"[{bar}] {percent:3d}%  {written / 1e6:.2f} of {size / 1e6:.2f} MB  {rate:.2f} MB/s"
        else:
            line = f"writing: {written / 1e6:.2f} MB  {rate:.2f} MB/s"
        click.echo(f"\r{line}", nl=False, err=True)

    def done(self) -> None:
        """The newest report (drawing may have skipped it), then the end of the line."""
        if self.latest is not None:
            self._draw()
            click.echo("", err=True)


def _boot_line(label: str, boot) -> str:
    target = boot.booted.label if boot.booted is not None else "nothing (no bootable app)"
    return f"{label}: the bootloader booted {target}"


@cli.command("ota")
@click.argument("flash", type=click.Path(exists=True, dir_okay=False))
@click.option("--url", required=True, help="Where to download the app image from (https://...).")
@click.option("--resume", is_flag=True, help="ota_resumption: continue an interrupted download (ESP-IDF v5.5 and newer).")
@click.option("--decrypt-key", type=click.Path(exists=True, dir_okay=False),
              help="Pre-encrypted image (esp_encrypted_img): the device's private key (RSA-3072 or P-256 PEM).")
@click.option("--reboot", is_flag=True, help="Reset at the end (esp_restart()), so the bootloader runs the new app.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event per line, then a result line.")
@https_ota_options
@device_options
def ota_cmd(flash, url, resume, decrypt_key, reboot, as_json, ota_options, open_device):
    """Update FLASH over HTTPS exactly as ESP-IDF's esp_https_ota() would."""
    progress = _Progress() if not as_json and sys.stderr.isatty() else None

    def on_event(name, data):
        echo_json({"event": name, "data": data})

    with open_device(flash) as dev:
        try:
            power_on = dev.power_on_if_needed()
        except EspError as err:
            err.exit_code = EXIT_NO_BOOTABLE
            raise
        try:
            result = https_ota(
                dev, url, on_event=on_event if as_json else None, on_progress=progress, resume=resume, reboot=reboot,
                decrypt_key=decrypt_key, **ota_options
            )
        except EspError as err:
            if as_json:
                echo_json({"result": "failed", "esp_err": err.esp_err, "code": err.code, "message": err.message})
            err.exit_code = EXIT_OTA_FAILED
            raise
        except KeyboardInterrupt:
            if as_json:
                echo_json({"result": "interrupted"})
            raise
        finally:
            if progress is not None:  # (no bar with --json)
                progress.done()
    report = {
        "result": "ok",
        "partition": result.partition,
        "subtype": result.subtype,
        "final": result.final,
        "copied": result.copied,
        "bytes_written": result.bytes_written,
        "image_len_read": result.image_len_read,
        "image_length": result.image_length,
        "boot_partition_updated": result.boot_partition_updated,
        "resumed_from": result.resumed_from,
        "set_boot_error": str(result.set_boot_error) if result.set_boot_error else None,
        "power_on": power_on.booted.label if power_on is not None else None,
        "rebooted_into": result.reboot.booted.label if result.reboot and result.reboot.booted else None,
    }
    if as_json:
        echo_json(report)
        return
    if power_on is not None:
        click.echo(_boot_line("power on (first boot of this flash)", power_on))
    resumed = f", resumed at byte {result.resumed_from}" if result.resumed_from else ""
    switched = "otadata now selects it" if result.boot_partition_updated else "the boot partition was NOT switched"
    final = ""
    if result.final is not None:
        final = f", verified for {result.final}" + (" and copied there" if result.copied else " (not copied)")
    click.echo(f"OTA ok: {result.bytes_written} bytes written to {result.partition}{resumed}{final}; {switched}")
    if result.set_boot_error is not None:
        click.echo(f"esp_ota_set_boot_partition failed (esp_https_ota_finish logs it and returns ESP_OK): "
                   f"{result.set_boot_error}")
    if result.reboot is not None:
        click.echo(_boot_line("reboot", result.reboot))
