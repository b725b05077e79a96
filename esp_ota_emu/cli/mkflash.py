"""``esp-ota-emu mkflash``: write a complete flash image, like esptool merge-bin with partition names."""

from __future__ import annotations

import click

from ..flash import parse_size
from ..mkflash import FLASH_MODES, KEEP, plan_flash, write_flash
from .main import cli
from .options import _chip_rev, echo_json


def _label_files(ctx, param, values):
    """``LABEL=FILE`` pairs -> {label: path}, in the order given."""
    out = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label or not path:
            raise click.BadParameter(f"{value!r} is not LABEL=FILE")
        if label in out:
            raise click.BadParameter(f"partition '{label}' is given twice")
        out[label] = path
    return out


def _chip_rev_option(ctx, param, value):
    try:
        return _chip_rev(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a revision like 3.0 or 301") from None


@cli.command("mkflash")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The flash image to write.")
@click.option("--partitions", required=True, type=click.Path(dir_okay=False),
              help="Partition table: a CSV (converted like gen_esp32part.py) or a binary table.")
@click.option("--bootloader", required=True, type=click.Path(dir_okay=False), help="2nd-stage bootloader image.")
@click.option("--app", "apps", multiple=True, callback=_label_files, metavar="LABEL=IMAGE",
              help="An app image for the partition LABEL (repeatable).")
@click.option("--data", "data", multiple=True, callback=_label_files, metavar="LABEL=FILE",
              help="Raw contents for the partition LABEL (repeatable).")
@click.option("--otadata", default="blank", show_default=True, metavar="blank|LABEL",
              help="Leave otadata erased, or select the OTA slot LABEL as esp_ota_set_boot_partition would.")
@click.option("--size", default="4MB", show_default=True, help="Flash size (QEMU takes 2MB, 4MB, 8MB or 16MB).")
@click.option("--chip", default=None, help="Chip (default: the bootloader header's); saved with the device.")
@click.option("--chip-rev", default=None, callback=_chip_rev_option, help="Chip revision (e.g. 3.0); saved with the device.")
@click.option("--flash-mode", type=click.Choice([KEEP, *FLASH_MODES]), default=KEEP, show_default=True,
              help="SPI mode written into the bootloader header.")
@click.option("--flash-freq", default=KEEP, show_default=True, help="SPI frequency written into the bootloader header (40m, 80m, ...).")
@click.option("--flash-size", "header_size", default=None,
              help="Flash size written into the bootloader header (default: --size; 'keep' leaves it).")
@click.option("--partition-table-offset", default="0x8000", show_default=True, help="Where the partition table goes.")
@click.option("--dry-run", is_flag=True, help="Check and show the layout, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the layout as one JSON object.")
def mkflash_cmd(output, partitions, bootloader, apps, data, otadata, size, chip, chip_rev, flash_mode, flash_freq,
                header_size, partition_table_offset, dry_run, as_json):
    """Write a complete flash image: bootloader, partition table, apps and data at their offsets, 0xFF elsewhere.

    The bootloader header's flash size is set to the flash being built (its SHA-256 recomputed), as
    esptool does when flashing.
    """
    layout = plan_flash(
        partitions=partitions,
        bootloader=bootloader,
        apps=apps,
        data=data,
        otadata=otadata,
        size=size,
        chip=chip,
        flash_mode=None if flash_mode == KEEP else flash_mode,
        flash_freq=None if flash_freq == KEEP else flash_freq,
        flash_size=header_size,
        partition_table_offset=parse_size(partition_table_offset),
    )
    if not dry_run:
        write_flash(layout, output, chip=chip, chip_rev=chip_rev)
    if as_json:
        echo_json({"output": None if dry_run else output, **layout.to_json()})
    else:
        click.echo("\n".join(layout.describe()))
        if not dry_run:
            click.echo(f"wrote {output}")
