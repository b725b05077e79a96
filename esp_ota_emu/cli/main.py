"""The ``esp-ota-emu`` command: a click group; each command lives in its own module of this package."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from .. import __version__
from . import commands
from ..errors import EXIT_INTERRUPTED, EspError, InputError


DEFAULT_COMMAND = "ota"


class _Group(click.Group):
    """Turns the emulator's own errors into one-line messages and documented exit codes.

    ``esp-ota-emu FLASH --url URL`` (no command name) runs the ``ota`` command.
    """

    def _load(self, name: str) -> None:
        """Import only the module a command needs (``cli/<name>.py``), every command module otherwise:
        start-up stays fast because one command does not import the others' dependencies."""
        if name in self.commands:
            return
        module = name.replace("-", "_")
        if module.isidentifier() and importlib.util.find_spec(f"{__package__}.{module}") is not None:
            importlib.import_module(f"{__package__}.{module}")
        if name not in self.commands:
            commands.load_all()

    def get_command(self, ctx, cmd_name):
        self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx):
        commands.load_all()
        return super().list_commands(ctx)

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-"):
            self._load(args[0])
        if args and not args[0].startswith("-") and args[0] not in self.commands and DEFAULT_COMMAND in self.commands:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (EspError, InputError) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            # An OTA in progress was aborted as esp_https_ota_abort() does (the ABORT event); the sidecar
            # is saved and writes that decide what boots are never left half done (see interrupts.py).
            click.echo("error: interrupted (Ctrl-C)", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="esp-ota-emu")
def cli() -> None:
    """Emulate an ESP32's flash and ESP-IDF's OTA path, byte for byte."""


def main() -> None:
    # Command modules register themselves on ``cli`` when imported; the group imports them on demand.
    cli(prog_name="esp-ota-emu")

