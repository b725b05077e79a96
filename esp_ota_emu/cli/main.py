"""The ``esp-ota-emu`` command: a click group; each command lives in its own module of this package."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import EspError, InputError


DEFAULT_COMMAND = "ota"


class _Group(click.Group):
    """Turns the emulator's own errors into one-line messages and documented exit codes.

    ``esp-ota-emu FLASH --url URL`` (no command name) runs the ``ota`` command.
    """

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands and DEFAULT_COMMAND in self.commands:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (EspError, InputError) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="esp-ota-emu")
def cli() -> None:
    """Emulate an ESP32's flash and ESP-IDF's OTA path, byte for byte."""


def main() -> None:
    # Command modules register themselves on ``cli`` when imported.
    from . import commands  # noqa: F401

    cli(prog_name="esp-ota-emu")

