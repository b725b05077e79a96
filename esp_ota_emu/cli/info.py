"""``esp-ota-emu info FLASH``: what is on a flash dump and which app the bootloader would boot."""

from __future__ import annotations

import click

from ..errors import EXIT_BAD_INPUT
from ..flash import format_size
from ..info import flash_report
from .main import cli
from .options import device_options, echo_json


def _hex(n):
    return f"0x{n:x}"


def render(r: dict) -> list[str]:
    """The report as text, one fact per line."""
    chip = r["chip"].upper() if r["chip"] else "unknown chip"
    lines = [f"{r['file']}: {r['flash_size_name']} flash, {chip}, chip revision v{r['chip_rev'] // 100}.{r['chip_rev'] % 100}"]
    lines += [f"warning: {w}" for w in r["warnings"]]
    release = r["idf_release"] if r["idf_release"] == r["idf_version"] else f"{r['idf_release']} = {r['idf_version']}"
    lines.append(f"bootloader profile: {r['bootloader_profile']} (ESP-IDF {release} app behaviour)")
    bl = r.get("bootloader")
    if bl:
        what = f"ESP-IDF {bl['idf_ver']}" if bl.get("idf_ver") else "no bootloader description"
        state = "error: " + bl["error"] if "error" in bl else f"{what}, checksum {'ok' if bl['checksum_ok'] else 'BAD'}"
        lines.append(f"bootloader at {_hex(bl['offset'])}: {state}")
    if r["partitions"]:
        lines.append(f"partition table at {_hex(r['partition_table_offset'])} (MD5 {r.get('partition_table_md5')}):")
        lines.append(f"  {'label':<16} {'type':<6} {'subtype':<9} {'offset':>9} {'size':>9}  flags")
        for p in r["partitions"]:
            flags = ",".join(f for f in ("encrypted", "readonly") if p[f])
            lines.append(f"  {p['label']:<16} {str(p['type']):<6} {str(p['subtype']):<9} {_hex(p['offset']):>9} {_hex(p['size']):>9}  {flags}")
    for e in r["otadata"]:
        seq = "blank" if e["seq"] == 0xFFFFFFFF else e["seq"]
        lines.append(f"otadata sector {e['sector']}: seq {seq}, state {e['state']}, crc {_hex(e['crc'])} ({'ok' if e['crc_ok'] else 'wrong'})")
    for a in r["apps"]:
        head = f"app {a['partition']} at {_hex(a['offset'])} ({format_size(a['size'])})"
        if a.get("empty"):
            lines.append(f"{head}: erased")
            continue
        desc = ", ".join(
            f"{k} {a[k]}" for k in ("project_name", "version", "idf_ver", "secure_version", "spi_flash_mode")
            if a.get(k) not in (None, "")
        )
        state = "valid" if a["valid"] else f"INVALID: {a.get('error')}"
        fill = f", {a['image_len']} bytes ({a['fill']}% of the slot)" if "fill" in a else ""
        ota = f", ota_state {a['ota_state']}" if "ota_state" in a else ""
        unbootable = f", UNBOOTABLE: {a['unbootable']}" if "unbootable" in a else ""
        lines.append(f"{head}: {state}{(', ' + desc) if desc else ''}{fill}{ota}{unbootable}")
    for d in r["data"]:
        lines.append(f"data {d['partition']} ({d['subtype']}) at {_hex(d['offset'])}: {'erased' if d['erased'] else 'has data'}")
    if "security" in r:
        lines.append(render_security(r["security"]))
    for m in r["missing"]:
        lines.append(f"missing: {m}")
    boot = r.get("boot")
    if boot is not None:
        target = boot["partition"] or "nothing (no bootable app)"
        lines.append(f"boot: {target}" + (f" (version {boot['version']})" if boot.get("version") else ""))
        lines += [f"  {step}" for step in boot["reason"]]
    return lines


def render_security(sec: dict) -> str:
    """One line: Secure Boot, signed updates, flash encryption and the anti-rollback eFuse."""
    parts = [f"secure boot {sec['secure_boot'] or 'off'}"]
    if sec["signed_on_update_no_secure_boot"]:
        parts.append("signed updates (no secure boot)")
    if sec["signed_data_partition"]:
        parts.append("signed data partitions")
    efuse = sec.get("efuse") or {}
    digests = [d for d in efuse.get("secure_boot_key_digests", []) if d["digest"]]
    if digests:
        parts.append("key digests " + ", ".join(
            f"{d['index']}:{d['digest'][:16]}...{' (revoked)' if d['revoked'] else ''}" for d in digests))
    parts.append(f"flash encryption {'on' if sec['flash_encryption'] else 'off'}")
    parts.append(f"eFuse secure_version {sec['efuse_secure_version']} of {sec['efuse_secure_version_bits']}")
    return "security: " + ", ".join(parts)


@cli.command("info")
@click.argument("flash", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@device_options
def info_cmd(flash, as_json, open_device):
    """Report partitions, otadata, app images and the boot decision of FLASH."""
    with open_device(flash, readonly=True) as dev:
        report = flash_report(dev)
    if as_json:
        echo_json(report)
    else:
        click.echo("\n".join(render(report)))
    if report["boot"] is None:
        raise SystemExit(EXIT_BAD_INPUT)
