"""``info``: the truth about a flash dump, read the way ESP-IDF and its bootloader read it.

Builds one report (a JSON-ready dict) of a device: chip and bootloader, partition table, both otadata
sectors, every app partition's image, data partitions, and the 2nd-stage bootloader's boot decision
with its reasoning. Whatever cannot be found is reported as missing instead of failing the whole.
"""

from __future__ import annotations

from typing import Any

from .device import Device
from .errors import EspError, InputError
from .flash import SECTOR_SIZE, format_size, qemu_size_warning
from .formats.app_desc import c_text, spi_flash_mode_name
from .formats.otadata import state_name
from .image import parse_image
from .otadata import OtaData

PARTITION_MAGIC = b"\xaa\x50"


def find_partition_tables(dev: Device, limit: int = 4) -> list[int]:
    """Sector offsets that start with a partition-table entry (to suggest ``--partition-table-offset``)."""
    found = []
    view = dev.flash.view()
    for off in range(0, dev.flash.size - 32, SECTOR_SIZE):
        if view[off : off + 2] == PARTITION_MAGIC and view[off + 32 : off + 34] in (PARTITION_MAGIC, b"\xeb\xeb", b"\xff\xff"):
            found.append(off)
            if len(found) == limit:
                break
    return found


# Keys every ``apps`` entry carries (None where the image has no such field), so tools can rely on them.
APP_KEYS = dict.fromkeys(
    ("valid", "checksum_ok", "sha256_ok", "version", "project_name", "secure_version", "idf_ver", "spi_flash_mode",
     "chip")
)


def _image_summary(view: memoryview, offset: int, size: int) -> dict[str, Any]:
    """Parse the image at ``offset`` of ``view`` (the flash as the CPU reads it) and summarise it."""
    try:
        image = parse_image(view, offset, size)
    except InputError as err:
        return {"valid": False, "error": str(err)}
    out: dict[str, Any] = {
        "chip": image.chip.name if image.chip else None,
        "checksum_ok": image.checksum_ok,
        "sha256_ok": image.hash_ok,
        "image_len": image.image_len,
    }
    if image.app_desc is not None:
        d = image.app_desc
        out.update(
            version=c_text(d.version),
            project_name=c_text(d.project_name),
            secure_version=d.secure_version,
            idf_ver=c_text(d.idf_ver),
            spi_flash_mode=spi_flash_mode_name(d.spi_flash_mode) if d.spi_flash_mode else None,
        )
    if image.bootloader_desc is not None:
        out.update(version=image.bootloader_desc.version, idf_ver=c_text(image.bootloader_desc.idf_ver))
    return out


def flash_report(dev: Device) -> dict[str, Any]:
    """The whole ``info`` report; see the README for its keys."""
    missing: list[str] = []
    warning = qemu_size_warning(dev.flash.size)
    report: dict[str, Any] = {
        "file": str(dev.flash.path),
        "flash_size": dev.flash.size,
        "flash_size_name": format_size(dev.flash.size),
        "chip": dev.chip.name if dev.chip else None,
        "chip_rev": dev.chip_rev,
        "partition_table_offset": dev.settings.partition_table_offset,
        "warnings": [warning] if warning else [],
        "bootloader_profile": dev.settings.profile().describe(),
        "idf_release": dev.settings.idf_release,
        "idf_version": str(dev.idf),
    }
    if dev.chip is None:
        missing.append("bootloader: no image header with a known chip id at 0x0, 0x1000 or 0x2000")
        report["bootloader"] = None
    else:
        off = dev.chip.bootloader_offset
        size = dev.settings.partition_table_offset - off
        view, base = dev.flash.view(), off
        if dev.io.crypt is not None:  # the ROM reads the bootloader through the flash decryption
            view, base = memoryview(dev.io.crypt.decrypt(off, dev.flash.read(off, size))), 0
        bl = {"offset": off, **_image_summary(view, base, size)}
        report["bootloader"] = bl
    try:
        table = dev.partitions
    except InputError as err:
        hint = find_partition_tables(dev)
        where = f"; a table was found at {', '.join(f'0x{o:x}' for o in hint)} (use --partition-table-offset)" if hint else ""
        missing.append(f"partition table at 0x{dev.settings.partition_table_offset:x}: {err}{where}")
        report.update(partitions=[], otadata=[], apps=[], data=[], boot=None, missing=missing)
        return report
    report["partition_table_md5"] = table.md5
    report["partitions"] = table.to_json()
    otadata_part = table.otadata()
    report["otadata"] = [e.to_json() for e in OtaData(dev.io, otadata_part).read()] if otadata_part else []
    ota_state = _ota_states(dev)
    apps = []
    for p in table.entries:
        if not p.is_app:
            continue
        entry: dict[str, Any] = {"partition": p.label, "offset": p.offset, "size": p.size, **APP_KEYS}
        if p.end > dev.flash.size:
            entry.update(valid=False, error="the partition lies beyond the end of the flash")
        elif dev.flash.is_erased(p.offset, min(p.size, 32)):
            entry.update(valid=False, empty=True, error="erased (no image)")
        else:
            entry.update(_image_summary(*dev.plain_image_region(p), p.size))
            result = dev.verify_partition(p)
            entry["valid"] = result.ok
            if not result.ok:
                entry["error"] = result.reason
            if "image_len" in entry:
                entry["fill"] = round(100 * entry["image_len"] / p.size, 2)
            unbootable = _anti_rollback_verdict(dev, entry.get("secure_version"))
            if unbootable:
                entry["unbootable"] = unbootable
        if p.label in ota_state:
            entry["ota_state"] = ota_state[p.label]
        apps.append(entry)
    report["apps"] = apps
    report["data"] = [
        {
            "partition": p.label,
            "subtype": p.subtype_name,
            "offset": p.offset,
            "size": p.size,
            "erased": p.end <= dev.flash.size and dev.flash.is_erased(p.offset, p.size),
        }
        for p in table.entries
        if not p.is_app and p.type == 0x01
    ]
    decision = dev.boot_decision()
    report["boot"] = {
        "partition": decision.booted.label if decision.booted else None,
        "version": decision.version,
        "reason": decision.trace,
        "would_write": [{"offset": o, "length": n} for o, n in decision.writes],
    }
    report["running"] = dev.state.running
    report["security"] = security_report(dev)
    report["missing"] = missing
    return report


def _anti_rollback_verdict(dev: Device, secure_version: int | None) -> str | None:
    """Why the bootloader's anti-rollback check refuses an app, None if it does not."""
    if not dev.settings.anti_rollback or secure_version is None:
        return None
    if dev.efuse_secure_version_ok(secure_version):
        return None
    return f"secure_version {secure_version} < eFuse {dev.efuse_secure_version}"


def security_report(dev: Device) -> dict[str, Any]:
    """The device's security configuration and eFuses: Secure Boot, signed updates, flash encryption,
    the anti-rollback eFuse value."""
    out: dict[str, Any] = {
        "secure_boot": dev.settings.secure_boot,
        "signed_on_update_no_secure_boot": dev.settings.signed_on_update_no_secure_boot,
        "signed_data_partition": dev.settings.signed_data_partition,
        "flash_encryption": dev.flash_encryption_enabled,
        "anti_rollback": dev.settings.anti_rollback,
        "efuse_secure_version": dev.efuse_secure_version,
        "efuse_secure_version_bits": dev.secure_version_bits,
    }
    efuses = dev.efuses
    out["efuse"] = efuses.summary() if efuses is not None else None
    return out


def _ota_states(dev: Device) -> dict[str, Any]:
    """esp_ota_get_state_partition() for every OTA slot that has an entry."""
    states = {}
    for p in dev.partitions.entries:
        if p.is_ota_app:
            try:
                states[p.label] = state_name(dev.ota.get_state_partition(p))
            except EspError:
                pass
    return states
