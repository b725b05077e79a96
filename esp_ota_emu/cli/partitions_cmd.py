"""``esp-ota-emu partitions``: convert a partition table between CSV and binary and validate it, like gen_esp32part.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from ..errors import InputError
from ..partitions import RULES, PartitionTable, is_binary, read_input
from .main import cli


def _int_option(ctx, param, value):
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (decimal or 0x hex)") from None


def _flash_size_option(ctx, param, value):
    """``4MB`` / ``4M`` (binary megabytes, as gen_esp32part's --flash-size) or a byte count."""
    if value is None:
        return None
    m = re.fullmatch(r"(\d+)\s*MB?", value.strip(), re.IGNORECASE)
    if m:
        return int(m.group(1)) * 1024 * 1024
    return _int_option(ctx, param, value)


def _size_text(size: int) -> str:
    for unit, suffix in ((0x100000, "M"), (0x400, "K")):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size}B"


def _table_text(table: PartitionTable) -> str:
    lines = [f"{'Label':<16} {'Type':<15} {'SubType':<10} {'Offset':>10} {'Size':>10} {'':>6} Flags"]
    for p in table.entries:
        flags = ":".join(name for name, on in (("encrypted", p.encrypted), ("readonly", p.readonly)) if on)
        lines.append(
            f"{p.label:<16} {p.type_name!s:<15} {p.subtype_name!s:<10} 0x{p.offset:08x} 0x{p.size:08x} "
            f"{_size_text(p.size):>6} {flags}".rstrip()
        )
    return "\n".join(lines)


@cli.command("partitions")
@click.argument("input_path", metavar="IN", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the converted table here (binary for CSV input, CSV for binary input).")
@click.option("--offset", default="0x8000", callback=_int_option, show_default=True,
              help="Partition table offset (CONFIG_PARTITION_TABLE_OFFSET).")
@click.option("--flash-size", callback=_flash_size_option, help="Check the partitions fit a flash of this size (4MB).")
@click.option("--no-md5", is_flag=True, help="Write no MD5 row (gen_esp32part --disable-md5sum).")
@click.option("--no-verify", is_flag=True, help="Skip gen_esp32part's checks.")
@click.option("--rules", type=click.Choice(RULES), default="v1.2", show_default=True,
              help="gen_esp32part rule set: v1.2 (ESP-IDF v4.x) or v1.5 (newest, stricter).")
@click.option("--secure", type=click.Choice(["v1", "v2"]), help="Require app sizes fit for Secure Boot v1/v2.")
@click.option("--primary-bootloader-offset", callback=_int_option, help="For bootloader/primary rows.")
@click.option("--recovery-bootloader-offset", callback=_int_option, help="For bootloader/recovery rows.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object describing the table.")
def partitions_cmd(input_path, output, offset, flash_size, no_md5, no_verify, rules, secure,
                   primary_bootloader_offset, recovery_bootloader_offset, as_json):
    """Convert partition table IN (CSV or binary, detected like gen_esp32part.py) and validate it.

    CSV in gives the binary table (-o OUT, else a readable listing); binary in gives the CSV
    (-o OUT, else on stdout). Invalid tables fail with gen_esp32part's message and exit code 3.
    """
    data = read_input(input_path)
    binary_in = is_binary(data)
    table = PartitionTable.load(
        data,
        offset=offset,
        rules=rules,
        primary_bootloader_offset=primary_bootloader_offset,
        recovery_bootloader_offset=recovery_bootloader_offset,
    )
    warnings = [] if no_verify else table.warnings(rules=rules)
    for line in warnings:
        click.echo(line, err=True)
    if not no_verify:
        table.verify(flash_size=flash_size, rules=rules, secure=secure)

    if binary_in:
        converted: bytes | str = table.to_csv()
    else:
        converted = table.to_binary(md5=not no_md5)
    if output is not None:
        try:
            if isinstance(converted, str):
                output.write_text(converted, encoding="utf-8")
            else:
                output.write_bytes(converted)
        except OSError as err:
            raise InputError(f"cannot write {output}: {err.strerror}") from None

    if as_json:
        report = {
            "input": "binary" if binary_in else "csv",
            "offset": table.offset,
            "md5": table.md5,
            "partitions": table.to_json(),
            "warnings": warnings,
        }
        if output is not None:
            report["output"] = str(output)
        click.echo(json.dumps(report))
    elif output is None:
        click.echo(table.to_csv() if binary_in else _table_text(table), nl=not binary_in)
