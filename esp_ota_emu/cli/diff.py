"""``esp-ota-emu diff A B``: what changed between two flash dumps, structure by structure."""

from __future__ import annotations

import sys

import click

from ..errors import EXIT_INVALID, EXIT_OK
from ..flash import parse_size
from ..flashdiff import diff_flashes
from .main import cli
from .options import echo_json


@cli.command("diff")
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--partition-table-offset", default=None,
              help="Where the partition table is (default: A's device setting, else 0x8000).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def diff_cmd(a, b, partition_table_offset, as_json):
    """Explain sector by sector what changed from flash A to flash B (exit 0 identical, 1 different)."""
    offset = None if partition_table_offset is None else parse_size(partition_table_offset)
    changes = diff_flashes(a, b, partition_table_offset=offset)
    if as_json:
        echo_json({"a": a, "b": b, "identical": not changes, "changes": [c.to_json() for c in changes]})
    elif not changes:
        click.echo(f"{a} and {b} are identical")
    else:
        for c in changes:
            click.echo(f"0x{c.offset:06x}..0x{c.end:06x} {c.describe()}")
    sys.exit(EXIT_INVALID if changes else EXIT_OK)
