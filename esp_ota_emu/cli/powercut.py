"""``esp-ota-emu powercut FLASH --url URL``: cut the power at every flash operation of an OTA and check the device boots."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from ..errors import EXIT_INVALID, EXIT_NO_BOOTABLE, InputError
from ..powercut import Campaign, CutPoint, OtaPlan, Report, record_https_ota
from .main import cli
from .options import device_options, echo_json

SHOWN_FAILURES = 20


def reproduction(argv_head: list[str], report: Report, index: int, torn: bool) -> str:
    """The command line that runs just this one cut point again."""
    return shlex.join([*argv_head, "--seed", str(report.seed), "--at", str(index), *(["--torn"] if torn else [])])


def print_report(report: Report, argv_head: list[str]) -> None:
    copied = f", copied to '{report.final}'" if report.final else ""
    click.echo(
        f"{report.operations} flash operations (OTA of {report.image_size} bytes into '{report.target}'{copied}, "
        f"running '{report.old}'), {len(report.results)} cut points in {report.seconds:.1f} s"
    )
    if report.replay_checked_against_https:
        click.echo("the replay makes the same flash operations as the HTTPS run")
    click.echo(f"{'phase':<11}{'ops':>7}{'cuts':>7}{'old':>7}{'new':>7}{'bricked':>9}{'failed':>8}")
    for phase, row in report.by_phase().items():
        click.echo(
            f"{phase:<11}{row['operations']:>7}{row['cut_points']:>7}{row['old']:>7}{row['new']:>7}"
            f"{row['bricked']:>9}{row['failed']:>8}"
        )
    if report.second_cuts:
        click.echo(f"second cuts inside the power-on's own otadata writes: {report.second_cuts}, each powered on again")
    resume = report.resume_counts()
    if resume["tried"]:
        click.echo(f"resumed OTAs: {resume['identical']} of {resume['tried']} gave a byte-identical slot")
    for r in report.failed[:SHOWN_FAILURES]:
        click.echo(f"FAIL op {r.index} ({r.variant}, {r.phase}): {'; '.join(r.failures)}")
        if r.left:
            click.echo(f"  torn: {r.left}")
        click.echo(f"  reproduce: {reproduction(argv_head, report, r.index, r.torn)}")
    if len(report.failed) > SHOWN_FAILURES:
        click.echo(f"... and {len(report.failed) - SHOWN_FAILURES} more failures (--json lists them all)")
    click.echo(f"bricked: {report.bricked} of {len(report.results)} cut points")


@cli.command("powercut")
@click.argument("flash", type=click.Path(dir_okay=False))
@click.option("--url", default=None, help="Download the update from here (once, through the HTTPS OTA engine).")
@click.option("--image", "image_path", type=click.Path(dir_okay=False), default=None,
              help="Take the update from this file instead of a URL.")
@click.option("--cert-pem", type=click.Path(dir_okay=False), default=None, help="Root CA the server must chain to.")
@click.option("--allow-http", is_flag=True, help="Allow plain http:// (CONFIG_ESP_HTTPS_OTA_ALLOW_HTTP).")
@click.option("--bulk-flash-erase", is_flag=True, help="esp_https_ota's bulk_flash_erase (erase the slot at begin).")
@click.option("--buffer-size", type=int, default=0, help="esp_http_client buffer_size (reads are max(this, 1024), 289 before ESP-IDF v5.0).")
@click.option("--staging", metavar="LABEL", help="v5.5 and newer: stage the image here instead of the next OTA slot.")
@click.option("--final", metavar="LABEL",
              help="v5.5 and newer: the partition the image is for (a label, or bootloader / partition_table).")
@click.option("--finalize-with-copy", is_flag=True, help="With --final: esp_ota_end copies the image there.")
@click.option("--every", is_flag=True, help="Every cut point: each operation cut cleanly and torn, and the end (the default).")
@click.option("--samples", type=int, default=None, help="Only N cut points, drawn with the seed.")
@click.option("--at", "at", type=int, default=None, help="Only the cut before operation K (see the report's reproductions).")
@click.option("--torn", is_flag=True, help="With --at: tear operation K instead of cutting before it.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the torn operations and of --samples.")
@click.option("--resume", is_flag=True, help="After each cut in the download, resume the OTA and compare the slot.")
@click.option("--jobs", type=int, default=None, help="Worker processes (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (the summary) on stdout.")
@device_options
def powercut_cmd(flash, url, image_path, cert_pem, allow_http, bulk_flash_erase, buffer_size, staging, final,
                 finalize_with_copy, every, samples, at, torn, seed, resume, jobs, as_json, open_device):
    """Cut the power at each flash operation of an OTA, its reset and the app's confirmation; check it still boots.

    At each cut point the flash is put back to the start (undo log), the scenario runs until the power
    goes, the device powers on, and the invariants are checked: it boots a verified app (the old or the
    new one), otadata still selects an app, nothing outside the target slot and otadata (and the final
    partition a copy goes to) was written (and with --resume the resumed OTA gives a byte-identical
    slot). Exit code 5 if any cut point bricks the device, 1 if another invariant fails.
    """
    if (url is None) == (image_path is None):
        raise click.UsageError("give exactly one of --url and --image")
    if torn and at is None:
        raise click.UsageError("--torn needs --at")
    if sum((every, samples is not None, at is not None)) > 1:
        raise click.UsageError("give at most one of --every, --samples and --at")
    partition = {"staging": staging, "final": final, "finalize_with_copy": finalize_with_copy}
    with open_device(flash, readonly=True) as dev:
        https_ops = None
        if url is not None:
            plan, https_ops = record_https_ota(
                dev, url, cert_pem=cert_pem, allow_http=allow_http, bulk_flash_erase=bulk_flash_erase,
                buffer_size=buffer_size, **partition,
            )
        else:
            try:
                image = Path(image_path).read_bytes()
            except OSError as err:
                raise InputError(f"cannot read {image_path}: {err.strerror}") from None
            plan = OtaPlan(image, buffer_size, bulk_flash_erase, **partition)
        campaign = Campaign(dev, plan, seed=seed, resume=resume, https_ops=https_ops)
    with campaign:
        if at is not None:
            if not 0 <= at <= campaign.op_count:
                raise click.BadParameter(f"the scenario has operations 0..{campaign.op_count - 1}", param_hint="--at")
            points = [CutPoint(at, torn)]
        elif samples is not None:
            points = campaign.sample_points(samples)
        else:
            points = campaign.every_point()
        report = campaign.run(points, jobs=jobs or os.cpu_count() or 1)
    # Device settings persist in the sidecar: the reproduction needs only the update's own options.
    argv_head = ["esp-ota-emu", "powercut", flash, *(["--url", url] if url is not None else ["--image", image_path])]
    argv_head += ["--cert-pem", cert_pem] if cert_pem else []
    argv_head += ["--allow-http"] if allow_http else []
    argv_head += ["--bulk-flash-erase"] if bulk_flash_erase else []
    argv_head += ["--buffer-size", str(buffer_size)] if buffer_size else []
    argv_head += ["--staging", staging] if staging else []
    argv_head += ["--final", final] if final else []
    argv_head += ["--finalize-with-copy"] if finalize_with_copy else []
    argv_head += ["--resume"] if resume else []
    if as_json:
        summary = report.to_json()
        for failure in summary["failures"]:
            failure["reproduce"] = reproduction(argv_head, report, failure["index"], failure["torn"])
        echo_json(summary)
    else:
        print_report(report, argv_head)
    if report.bricked:
        sys.exit(EXIT_NO_BOOTABLE)
    if report.failed:
        sys.exit(EXIT_INVALID)
