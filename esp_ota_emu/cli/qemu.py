"""``esp-ota-emu qemu FLASH``: the QEMU command line that boots a flash image, or a bounded run of it."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import click

from ..errors import EXIT_INVALID, InputError
from ..qemu import QemuNotFound, find_qemu, qemu_command, qemu_target, read_efuse_file, run_qemu, write_efuse_file
from .main import cli
from .options import device_options, echo_json


def _prepare(flash: str, efuse: str | None, open_device) -> tuple[str, Path]:
    """The device's chip, and its eFuse file: an existing ``--efuse`` file as it is, otherwise one
    written from the device settings (chip revision, anti-rollback secure_version)."""
    with open_device(flash, readonly=True) as dev:
        if dev.chip is None:
            raise InputError(f"{flash}: no bootloader with a known chip id; give --chip")
        chip = dev.chip
        path = Path(efuse) if efuse else Path(f"{flash}.efuse.bin")
        if not (efuse and path.exists()):
            if dev.efuses is not None:  # the device's whole eFuse state (keys, digests, CRYPT_CNT, ...)
                path.write_bytes(dev.efuses.to_qemu_file())
            else:
                write_efuse_file(path, chip, chip_rev=dev.chip_rev, secure_version=dev.efuse_secure_version)
    return chip.name, path


def _after_run(flash: str, efuse_path: Path, chip: str, open_device) -> None:
    """QEMU reset the device and ran its own bootloader: forget which app ran, keep burned eFuses."""
    with open_device(flash) as dev:
        if dev.efuses is not None:
            dev.import_efuses(read_efuse_file(efuse_path, chip))
        else:
            dev.burn_secure_version(read_efuse_file(efuse_path, chip).secure_version)
        dev.state.running = None
        dev.save()


@cli.command("qemu")
@click.argument("flash", type=click.Path(dir_okay=False))
@click.option("--efuse", type=click.Path(dir_okay=False),
              help="QEMU eFuse file (default FLASH.efuse.bin, written from the device settings; an existing "
                   "file given here is used as it is).")
@click.option("--print", "mode", flag_value="print", default=True, help="Print the command line (default).")
@click.option("--run", "mode", flag_value="run", help="Run QEMU (needs Espressif's QEMU on PATH or in $ESP_QEMU).")
@click.option("--timeout", type=float, default=None,
              help="With --run: stop QEMU after this many seconds and print what UART0 printed.")
@click.option("--expect", default=None,
              help="With --run --timeout: stop as soon as UART0 prints this text; exit 1 if it never does.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@device_options
def qemu_cmd(flash, efuse, mode, timeout, expect, as_json, open_device):
    """Print (or run) the QEMU command line that boots FLASH, with an eFuse file matching the device."""
    if expect is not None and (mode != "run" or timeout is None):
        raise click.UsageError("--expect needs --run and --timeout")
    chip, efuse_path = _prepare(flash, efuse, open_device)
    program = None
    if mode == "run":
        program = find_qemu(chip)
    else:
        try:
            program = find_qemu(chip)
        except QemuNotFound:
            program = qemu_target(chip).program
    cmd = qemu_command(flash, efuse_path, chip=chip, qemu=program)
    if mode == "print":
        if as_json:
            echo_json({"command": cmd, "efuse_file": str(efuse_path), "chip": chip})
        else:
            click.echo(shlex.join(cmd))
        return
    if timeout is None:
        returncode = subprocess.call(cmd)
        _after_run(flash, efuse_path, chip, open_device)
        sys.exit(returncode)
    run = run_qemu(cmd, timeout=timeout, expect=expect)
    _after_run(flash, efuse_path, chip, open_device)
    if as_json:
        echo_json({"command": cmd, "efuse_file": str(efuse_path), "uart0": run.output,
                   "expected_seen": run.expected_seen, "timed_out": run.timed_out, "returncode": run.returncode})
    else:
        click.echo(run.output, nl=False)
    if run.expected_seen is False:
        click.echo(f"error: UART0 never printed {expect!r} within {timeout:g} s", err=True)
        sys.exit(EXIT_INVALID)
