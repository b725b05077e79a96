"""``esp-ota-emu ota FLASH --url URL``: an HTTPS OTA into a flash file, as esp_https_ota() does it."""

from __future__ import annotations

import sys
import time

import click

from ..errors import EXIT_NO_BOOTABLE, EXIT_OTA_FAILED, EspError
from ..https_ota.api import https_ota
from .main import cli
from .options import device_options, echo_json


def _header(value: str) -> tuple[str, str]:
    key, sep, val = value.partition(":")
    if not sep or not key.strip():
        raise click.BadParameter(f"{value!r} is not 'Key: Value'", param_hint="--header")
    return key.strip(), val.strip()


class _Progress:
    """A one-line progress display on a terminal: bytes written and the rate."""

    def __init__(self):
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, name: str, data) -> None:
        if name != "ESP_HTTPS_OTA_WRITE_FLASH":
            return
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        rate = data / max(now - self.start, 1e-6)
        click.echo(f"\rwriting: {data / 1e6:8.2f} MB  {rate / 1e6:7.2f} MB/s", nl=False, err=True)

    def done(self) -> None:
        if self.last:
            click.echo("", err=True)


def _boot_line(label: str, boot) -> str:
    target = boot.booted.label if boot.booted is not None else "nothing (no bootable app)"
    return f"{label}: the bootloader booted {target}"


@cli.command("ota")
@click.argument("flash", type=click.Path(exists=True, dir_okay=False))
@click.option("--url", required=True, help="Where to download the app image from (https://...).")
@click.option("--cert-pem", type=click.Path(exists=True, dir_okay=False),
              help="Root CA certificate (PEM) the server's chain must lead to, as given to the device.")
@click.option("--crt-bundle", is_flag=True, help="Verify the server against the default CA bundle.")
@click.option("--allow-http", is_flag=True, help="Allow plain http:// (CONFIG_ESP_HTTPS_OTA_ALLOW_HTTP).")
@click.option("--skip-cert-common-name-check", is_flag=True, help="Do not check the server's host name.")
@click.option("--common-name", help="Check the server certificate against this name instead of the URL's host.")
@click.option("--client-cert", type=click.Path(exists=True, dir_okay=False), help="Mutual TLS: client certificate (PEM).")
@click.option("--client-key", type=click.Path(exists=True, dir_okay=False), help="Mutual TLS: client key (PEM).")
@click.option("--username", help="User for Basic/Digest auth (default: from the URL).")
@click.option("--password", help="Password for Basic/Digest auth (default: from the URL).")
@click.option("--timeout-ms", type=click.IntRange(min=1), default=5000, show_default=True, help="Network timeout.")
@click.option("--header", "headers", multiple=True, help="Extra request header 'Key: Value' (repeatable).")
@click.option("--user-agent", help="User-Agent (default 'ESP32 HTTP Client/1.0').")
@click.option("--buffer-size", type=click.IntRange(min=0), default=0,
              help="esp_http_client rx buffer; the OTA reads max(this, 1024) bytes at a time.")
@click.option("--partial-download", is_flag=True, help="partial_http_download: HEAD, then Range requests.")
@click.option("--max-http-request-size", type=click.IntRange(min=1), default=64 * 1024, show_default=True,
              help="Bytes per Range request with --partial-download.")
@click.option("--bulk-flash-erase", is_flag=True, help="Erase the image's sectors up front instead of as written.")
@click.option("--resume", is_flag=True, help="ota_resumption: continue an interrupted download (newest ESP-IDF).")
@click.option("--decrypt-key", type=click.Path(exists=True, dir_okay=False),
              help="Pre-encrypted image (esp_encrypted_img): the device's private key (RSA-3072 or P-256 PEM).")
@click.option("--reboot", is_flag=True, help="Reset at the end (esp_restart()), so the bootloader runs the new app.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event per line, then a result line.")
@device_options
def ota_cmd(flash, url, cert_pem, crt_bundle, allow_http, skip_cert_common_name_check, common_name,
            client_cert, client_key, username, password, timeout_ms, headers, user_agent, buffer_size,
            partial_download, max_http_request_size, bulk_flash_erase, resume, decrypt_key, reboot, as_json,
            open_device):
    """Update FLASH over HTTPS exactly as ESP-IDF's esp_https_ota() would."""
    progress = _Progress() if not as_json and sys.stderr.isatty() else None

    def on_event(name, data):
        if as_json:
            echo_json({"event": name, "data": data})
        elif progress is not None:
            progress(name, data)

    with open_device(flash) as dev:
        try:
            power_on = dev.power_on_if_needed()
        except EspError as err:
            err.exit_code = EXIT_NO_BOOTABLE
            raise
        try:
            result = https_ota(
                dev, url, on_event=on_event, cert_pem=cert_pem, crt_bundle=crt_bundle, allow_http=allow_http,
                skip_cert_common_name_check=skip_cert_common_name_check, common_name=common_name,
                client_cert=client_cert, client_key=client_key, username=username, password=password,
                timeout_ms=timeout_ms, headers=tuple(_header(h) for h in headers), user_agent=user_agent,
                buffer_size=buffer_size, partial_http_download=partial_download,
                max_http_request_size=max_http_request_size, bulk_flash_erase=bulk_flash_erase,
                resume=resume, reboot=reboot, decrypt_key=decrypt_key,
            )
        except EspError as err:
            if progress is not None:
                progress.done()
            if as_json:
                echo_json({"result": "failed", "esp_err": err.esp_err, "code": err.code, "message": err.message})
            err.exit_code = EXIT_OTA_FAILED
            raise
        if progress is not None:
            progress.done()
    report = {
        "result": "ok",
        "partition": result.partition,
        "subtype": result.subtype,
        "bytes_written": result.bytes_written,
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
    click.echo(f"OTA ok: {result.bytes_written} bytes written to {result.partition}{resumed}; {switched}")
    if result.set_boot_error is not None:
        click.echo(f"esp_ota_set_boot_partition failed (esp_https_ota_finish logs it and returns ESP_OK): "
                   f"{result.set_boot_error}")
    if result.reboot is not None:
        click.echo(_boot_line("reboot", result.reboot))
