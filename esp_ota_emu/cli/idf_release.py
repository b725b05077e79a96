"""``esp-ota-emu idf-release [VERSION] [--json]``: the behaviours that differ between ESP-IDF releases.

Without a version it lists every behaviour the emulator reproduces per release with the first release
of each branch that has it; with one (``v5.5.2``, ``v5``, ...) it says which of them that release has.
"""

from __future__ import annotations

import json

import click

from ..idf_release import CHANGES, parse_release
from .main import cli


@cli.command("idf-release")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def idf_release_cmd(version, as_json):
    """List the behaviours that changed between ESP-IDF releases (and which ones VERSION has)."""
    release = parse_release(version) if version else None
    rows = [
        {"name": name.lower(), "since": [f"v{v}" for v in change.since], "what": change.what,
         **({"has": release.has(change)} if release else {})}
        for name, change in CHANGES.items()
    ]
    if as_json:
        click.echo(json.dumps({"release": str(release) if release else None, "changes": rows}))
        return
    if release is not None:
        click.echo(f"ESP-IDF {version} = {release}:" if version != str(release) else f"ESP-IDF {release}:")
    for row in rows:
        mark = ("yes " if row["has"] else "no  ") if release else ""
        click.echo(f"{mark}{row['name']} (from {', '.join(row['since'])}): {row['what']}")
