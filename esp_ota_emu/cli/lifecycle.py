"""``boot`` and the app-side calls: what a device does across resets, and what its app asks esp_ota_ops.

``boot`` is one reset (``--power-on``: a power cycle) through the 2nd-stage bootloader; the other
commands are the calls the running app makes (``mark-valid`` is
esp_ota_mark_app_valid_cancel_rollback, ...), with ESP-IDF's errors. The device is powered on first
if the emulator never booted the flash: an app can only call these while it runs.
"""

from __future__ import annotations

import click

from ..errors import EXIT_INVALID, EXIT_NO_BOOTABLE, EspError
from ..formats.otadata import state_name
from ..otadata import OtaData
from .main import cli
from .options import device_options, echo_json

FLASH = click.argument("flash", type=click.Path(exists=True, dir_okay=False))
JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _boot_lines(result) -> list[str]:
    target = result.booted.label if result.booted else "nothing: no app runs and the chip resets (why: below)"
    lines = [f"booted: {target}" + (f" (version {result.version})" if result.version else "")]
    lines += [f"  {step}" for step in result.trace]
    lines += [f"  wrote 0x{n:x} bytes at 0x{o:x}" for o, n in result.writes]
    return lines


def _report(as_json: bool, obj: dict, lines: list[str]) -> None:
    if as_json:
        echo_json(obj)
    else:
        click.echo("\n".join(lines))


@cli.command("boot")
@FLASH
@JSON
@click.option("--power-on", is_flag=True, help="A power cycle instead of a reset (matters with --skip-validation-on-power-on).")
@click.option("--hold-factory-reset-pin", is_flag=True, help="Hold the factory-reset pin during this reset.")
@click.option("--hold-test-pin", is_flag=True, help="Hold the test-app pin during this reset.")
@device_options
def boot_cmd(flash, as_json, power_on, hold_factory_reset_pin, hold_test_pin, open_device):
    """One reset of the device: the 2nd-stage bootloader's decision, with its writes; the booted app runs."""
    with open_device(flash) as dev:
        result = dev.boot(power_on=power_on, hold_factory_reset_pin=hold_factory_reset_pin, hold_test_pin=hold_test_pin)
        obj = result.to_json() | {"profile": dev.settings.profile().describe()}
    _report(as_json, obj, [f"bootloader profile: {obj['profile']}", *_boot_lines(result)])
    if result.booted is None:
        raise SystemExit(EXIT_NO_BOOTABLE)


def _running_device(open_device, flash):
    """Open the device; power it on if the emulator never booted it (its app makes the call)."""
    dev = open_device(flash)
    try:
        dev.power_on_if_needed()
    except BaseException:
        dev.close()
        raise
    return dev


def _partition(dev, label):
    p = dev.partitions.find(label)
    if p is None:
        raise click.BadParameter(f"no partition labelled {label!r}", param_hint="LABEL")
    return p


@cli.command("mark-valid")
@FLASH
@JSON
@device_options
def mark_valid_cmd(flash, as_json, open_device):
    """esp_ota_mark_app_valid_cancel_rollback(): the running app confirms itself."""
    with _running_device(open_device, flash) as dev:
        dev.ota.mark_app_valid_cancel_rollback()
        running = dev.state.running
    _report(as_json, {"running": running, "marked": "VALID"}, [f"{running}: marked VALID"])


@cli.command("mark-invalid", short_help="The running app marks itself INVALID and reboots.")
@FLASH
@JSON
@device_options
def mark_invalid_cmd(flash, as_json, open_device):
    """esp_ota_mark_app_invalid_rollback_and_reboot(): mark the running app INVALID, then reboot."""
    with _running_device(open_device, flash) as dev:
        old = dev.state.running
        dev.ota.mark_app_invalid_rollback()
        result = dev.boot()
    obj = {"marked_invalid": old, "reboot": result.to_json()}
    _report(as_json, obj, [f"{old}: marked INVALID, rebooting", *_boot_lines(result)])
    if result.booted is None:
        raise SystemExit(EXIT_NO_BOOTABLE)


@cli.command("set-boot")
@FLASH
@click.argument("label")
@click.option("--skip-validate", is_flag=True,
              help="esp_ota_set_boot_partition_skip_validate (v6.1 and newer): select it without verifying the image.")
@JSON
@device_options
def set_boot_cmd(flash, label, skip_validate, as_json, open_device):
    """esp_ota_set_boot_partition(LABEL): select it for the next boot (factory: erase otadata)."""
    with _running_device(open_device, flash) as dev:
        p = _partition(dev, label)
        if skip_validate:
            dev.ota.set_boot_partition_skip_validate(p)
        else:
            dev.ota.set_boot_partition(p)
        boot = dev.ota.get_boot_partition()
    obj = {"set_boot": p.label, "boot_partition": boot.label if boot else None}
    _report(as_json, obj, [f"boot partition set to {p.label}"])


@cli.command("erase-otadata")
@FLASH
@JSON
@device_options
def erase_otadata_cmd(flash, as_json, open_device):
    """Erase the whole otadata partition (otatool erase_otadata): the next boot starts from initial contents."""
    with open_device(flash) as dev:
        p = dev.partitions.otadata()
        if p is None:
            raise EspError("ESP_ERR_NOT_FOUND", "the partition table has no otadata partition")
        OtaData(dev.io, p).erase()
    _report(as_json, {"erased": {"offset": p.offset, "length": p.size}}, [f"erased otadata (0x{p.size:x} bytes at 0x{p.offset:x})"])


@cli.command("erase-last-boot")
@FLASH
@JSON
@device_options
def erase_last_boot_cmd(flash, as_json, open_device):
    """esp_ota_erase_last_boot_app_partition(): erase the previous app and its otadata entry."""
    with _running_device(open_device, flash) as dev:
        before = {p.label: dev.flash.is_erased(p.offset, p.size) for p in dev.partitions.entries if p.is_ota_app}
        dev.ota.erase_last_boot_app_partition()
        erased = [p.label for p in dev.partitions.entries if p.is_ota_app and not before[p.label]
                  and dev.flash.is_erased(p.offset, p.size)]
    _report(as_json, {"erased": erased}, [f"erased {', '.join(erased) or 'no app'} and the inactive otadata entry"])


@cli.command("check-rollback")
@FLASH
@JSON
@device_options
def check_rollback_cmd(flash, as_json, open_device):
    """esp_ota_check_rollback_is_possible(): exit 0 if the app could roll back, 1 if not."""
    with _running_device(open_device, flash) as dev:
        possible = dev.ota.check_rollback_is_possible()
    _report(as_json, {"rollback_possible": possible}, [f"rollback is {'possible' if possible else 'not possible'}"])
    if not possible:
        raise SystemExit(EXIT_INVALID)


@cli.command("state")
@FLASH
@click.argument("label")
@JSON
@device_options
def state_cmd(flash, label, as_json, open_device):
    """esp_ota_get_state_partition(LABEL): the ota_state otadata records for that slot."""
    with _running_device(open_device, flash) as dev:
        state = state_name(dev.ota.get_state_partition(_partition(dev, label)))
    _report(as_json, {"partition": label, "state": state}, [f"{label}: {state}"])


@cli.command("revoke-key")
@FLASH
@click.argument("index", type=click.IntRange(0, 2))
@JSON
@device_options
def revoke_key_cmd(flash, index, as_json, open_device):
    """esp_ota_revoke_secure_boot_public_key(INDEX): stop trusting Secure Boot key digest INDEX."""
    with _running_device(open_device, flash) as dev:
        dev.ota.revoke_secure_boot_public_key(index)
        trusted = len(dev.efuses.trusted_key_digests())
    _report(as_json, {"revoked": index, "trusted_keys": trusted},
            [f"Secure Boot key digest {index} revoked; {trusted} trusted key(s) left"])
