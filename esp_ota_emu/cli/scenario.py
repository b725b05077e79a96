"""``esp-ota-emu scenario FILE``: run a written sequence of OTAs, resets and app decisions with expectations."""

from __future__ import annotations

import click

from ..errors import EXIT_INVALID
from ..scenario import run_scenario
from .main import cli
from .options import echo_json


def _line(r) -> str:
    what = r.booted or "nothing (no bootable app)"
    head = f"{r.step.name}: running {what}" + (f" {r.version}" if r.version else "")
    if r.state is not None:
        head += f" [{r.state}]"
    if r.error:
        head += f", {r.error}"
    return head + (" ok" if r.ok else " FAILED: " + "; ".join(r.failures))


@cli.command("scenario")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--flash", type=click.Path(dir_okay=False), help="Run on this flash image instead of the file's 'flash'.")
@click.option("--in-place", is_flag=True, help="Change the flash image itself instead of a copy.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def scenario_cmd(file, flash, in_place, as_json):
    """Run the steps of FILE (JSON, or TOML on Python 3.11+) and check what runs after each one."""
    results = run_scenario(file, flash=flash, in_place=in_place, on_step=None if as_json else lambda r: click.echo(_line(r)))
    ok = all(r.ok for r in results)
    if as_json:
        echo_json({"ok": ok, "steps": [r.to_json() for r in results]})
    elif not ok:
        failed = results[-1]
        click.echo(f"scenario failed at {failed.step.name}: {'; '.join(failed.failures)}", err=True)
    if not ok:
        raise SystemExit(EXIT_INVALID)
