"""``mkflash``: assemble a complete flash image, as ``esptool merge-bin`` / ``write-flash`` would leave it.

Everything lands at the chip's offsets: the 2nd-stage bootloader at ``BOOTLOADER_FLASH_OFFSET``, the
partition table at ``CONFIG_PARTITION_TABLE_OFFSET``, apps and data at their partitions (named by label
instead of by address), otadata blank or selecting one OTA slot; every other byte is erased flash (0xFF).

When it writes a bootloader, esptool patches the header's flash mode / size / frequency
(``_update_image_flash_params``) and recomputes the appended SHA-256; a bootloader that believes in a
smaller flash than the chip has refuses a partition table that reaches past it. :func:`patch_flash_params`
reproduces that, and :func:`build_flash` by default writes the size of the flash being built into the
header (``--flash-size keep`` semantics otherwise), keeping mode and frequency unless given.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Union

from .chips import Chip, chip_by_name
from .errors import EspError, InputError
from .flash import SECTOR_SIZE, format_size, parse_size
from .formats.app_desc import c_text
from .formats.image import HASH_LEN, IMAGE_HEADER_SIZE, SPI_MODES, ImageHeader
from .formats.otadata import OtaState, build_entry
from .formats.partition_table import DEFAULT_TABLE_OFFSET, TABLE_SECTOR_SIZE
from .image import EspImage, parse_image
from .partitions import Partition, PartitionTable, is_binary

Source = Union[str, os.PathLike, bytes, bytearray, memoryview]

FILL = 0xFF
_CHUNK = 1 << 20
# esptool's FLASH_MODES: the modes write-flash / merge-bin accept.
FLASH_MODES = {name.lower(): value for value, name in enumerate(SPI_MODES[:4])}
KEEP = "keep"


@dataclass(frozen=True)
class HeaderPatch:
    """What :func:`patch_flash_params` did to a bootloader header."""

    changes: tuple[str, ...]  # "flash size 2MB -> 4MB", ...
    sha256_recomputed: bool

    def describe(self) -> str:
        parts = list(self.changes) or ["header unchanged"]
        if self.sha256_recomputed:
            parts.append("SHA-256 recomputed")
        return ", ".join(parts)


def _lookup(table: tuple[tuple[str, int], ...], name: str, what: str, chip: Chip) -> int:
    for known, value in table:
        if known.lower() == name.lower():
            return value
    choices = ", ".join(n for n, _ in table)
    raise InputError(f"{chip.display} has no flash {what} {name!r} (choose from {choices})")


def patch_flash_params(
    image: bytes,
    chip: Chip,
    *,
    flash_mode: str = KEEP,
    flash_freq: str = KEEP,
    flash_size: str = KEEP,
) -> tuple[bytes, HeaderPatch]:
    """esptool's ``_update_image_flash_params`` for an image written at the bootloader offset.

    Each setting is a name (``dio``, ``40m``, ``4MB``) or ``"keep"``. With all three kept the image is
    returned untouched; otherwise mode/size/frequency are rewritten and, when the image carries an
    appended SHA-256, the digest is recomputed over the patched image (as esptool does, even when the
    header bytes end up the same). Bytes after the digest are kept.
    """
    if (flash_mode, flash_freq, flash_size) == (KEEP, KEEP, KEEP):
        return image, HeaderPatch((), False)
    parsed = parse_image(image, layout="esp32")
    header = ImageHeader.parse(image[:IMAGE_HEADER_SIZE])
    changes = []
    if flash_mode != KEEP:
        if flash_mode.lower() not in FLASH_MODES:
            raise InputError(f"unknown flash mode {flash_mode!r} (choose from {', '.join(FLASH_MODES)})")
        mode = FLASH_MODES[flash_mode.lower()]
        if mode != header.spi_mode:
            old = SPI_MODES[header.spi_mode] if header.spi_mode < len(SPI_MODES) else f"0x{header.spi_mode:x}"
            changes.append(f"flash mode {old} -> {SPI_MODES[mode]}")
        header.spi_mode = mode
    speed_size = header.spi_size_speed
    if flash_freq != KEEP:
        speed = _lookup(chip.flash_freqs, flash_freq, "frequency", chip)
        if speed != speed_size.spi_speed:
            old = chip.flash_freq_name(speed_size.spi_speed) or f"0x{speed_size.spi_speed:x}"
            changes.append(f"flash frequency {old} -> {flash_freq.lower()}")
        speed_size.spi_speed = speed
    if flash_size != KEEP:
        size = _lookup(chip.flash_sizes, flash_size, "size", chip) >> 4
        if size != speed_size.spi_size:
            old = chip.flash_size_name(speed_size.spi_size << 4) or f"0x{speed_size.spi_size:x}"
            changes.append(f"flash size {old} -> {chip.flash_size_name(size << 4)}")
        speed_size.spi_size = size
    patched = bytearray(image)
    patched[:IMAGE_HEADER_SIZE] = ImageHeader.build(header)
    recompute = parsed.hash_appended
    if recompute:
        digest_at = parsed.checksum_offset + 1
        patched[digest_at : digest_at + HASH_LEN] = hashlib.sha256(memoryview(patched)[:digest_at]).digest()
    return bytes(patched), HeaderPatch(tuple(changes), recompute)


@dataclass
class Region:
    """One piece of the flash image: ``data`` goes at ``offset`` (the partition or structure it fills)."""

    offset: int
    data: bytes | memoryview
    what: str
    detail: str = ""

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    def to_json(self) -> dict:
        return {"offset": self.offset, "length": len(self.data), "what": self.what, "detail": self.detail}


@dataclass
class FlashLayout:
    """The planned contents of a flash image: where each region goes; the rest is erased flash."""

    size: int
    chip: Chip
    table: PartitionTable
    table_offset: int
    regions: list[Region] = field(default_factory=list)
    bootloader_patch: HeaderPatch | None = None

    def write(self, out_path: str | os.PathLike) -> Path:
        """Stream the image to ``out_path`` (via a temporary file, so a failure leaves nothing half-made)."""
        out = Path(out_path)
        tmp = out.with_name(out.name + ".part")
        fill = bytes([FILL]) * _CHUNK
        try:
            with open(tmp, "wb") as f:
                for region in sorted(self.regions, key=lambda r: r.offset):
                    _pad(f, region.offset, fill)
                    view = memoryview(region.data)
                    for pos in range(0, len(view), _CHUNK):
                        f.write(view[pos : pos + _CHUNK])
                _pad(f, self.size, fill)
            os.replace(tmp, out)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write {out}: {err.strerror}") from None
        return out

    def to_json(self) -> dict:
        return {
            "size": self.size,
            "chip": self.chip.name,
            "regions": [r.to_json() for r in sorted(self.regions, key=lambda r: r.offset)],
        }

    def describe(self) -> list[str]:
        lines = [f"{format_size(self.size)} {self.chip.display} flash:"]
        for r in sorted(self.regions, key=lambda r: r.offset):
            detail = f" ({r.detail})" if r.detail else ""
            lines.append(f"  0x{r.offset:06x}..0x{r.end:06x} {r.what}{detail}")
        return lines


def _pad(f, upto: int, fill: bytes) -> None:
    while f.tell() < upto:
        f.write(fill[: min(len(fill), upto - f.tell())])


def _read_source(source: Source, what: str) -> bytes | bytearray | memoryview:
    """The bytes of ``source``: given directly, or read from a file (once; nothing else is copied)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {what} {source}: {err.strerror}") from None


def _load_table(partitions: Source | PartitionTable, offset: int) -> tuple[PartitionTable, bytes | memoryview]:
    """The table and the bytes to write: a binary table as given, a CSV through gen_esp32part's output."""
    if isinstance(partitions, PartitionTable):
        return partitions, partitions.to_binary()
    raw = _read_source(partitions, "partition table")
    if is_binary(raw):
        if len(raw) > TABLE_SECTOR_SIZE:
            raise InputError(f"a binary partition table is at most 0x{TABLE_SECTOR_SIZE:x} bytes, this one is {len(raw)}")
        return PartitionTable.load(raw, offset=offset), raw
    table = PartitionTable.load(raw, offset=offset)
    return table, table.to_binary()


def _partition(table: PartitionTable, label: str) -> Partition:
    p = table.find(label)
    if p is None:
        known = ", ".join(e.label for e in table.entries)
        raise InputError(f"the partition table has no partition '{label}' (it has: {known})")
    return p


def _check_image(label: str, data: bytes | memoryview, chip: Chip) -> EspImage:
    """The app must be an ESP image for this chip (one-line reason otherwise)."""
    try:
        image = parse_image(data, layout="esp32")
    except InputError as err:
        raise InputError(f"app for '{label}': {err}") from None
    if image.chip is not chip:
        found = image.chip.display if image.chip else f"unknown chip id {image.header.chip_id}"
        raise InputError(f"app for '{label}' is built for {found}, the flash is for {chip.display}")
    return image


def _image_detail(image: EspImage) -> str:
    desc = image.app_desc
    if desc is None:
        return "ESP image, no app description"
    return f"{c_text(desc.project_name)} {c_text(desc.version)}"


def _otadata_region(table: PartitionTable, otadata: str) -> Region | None:
    """otadata as esp_ota_set_boot_partition() leaves a blank one: seq = slot + 1 in sector 0, UNDEFINED.

    ``blank`` (and the factory app, which esp_ota_set_boot_partition selects by erasing otadata) leave it
    erased.
    """
    part = table.otadata()
    if otadata == "blank":
        return None
    target = _partition(table, otadata)
    if target.is_factory:
        return None
    if part is None:
        raise InputError(f"cannot select '{otadata}': the partition table has no otadata partition")
    if not target.is_ota_app:
        raise InputError(f"'{otadata}' is not an OTA app partition (ota_0..ota_15) or the factory app")
    slot = target.ota_index
    missing = [f"ota_{i}" for i in range(slot) if table.find_first(0x00, 0x10 + i) is None]
    if missing:
        raise EspError(
            "ESP_ERR_INVALID_ARG",
            f"'{otadata}' is slot {slot} but {', '.join(missing)} is missing: "
            "esp_ota_set_boot_partition() only selects slots below the count of consecutive OTA slots",
        )
    entry = build_entry(slot + 1, OtaState.UNDEFINED)
    return Region(part.offset, entry, "otadata", f"selects {otadata}: seq {slot + 1}, state UNDEFINED")


def plan_flash(
    *,
    partitions: Source | PartitionTable,
    bootloader: Source,
    apps: Mapping[str, Source] | None = None,
    data: Mapping[str, Source] | None = None,
    otadata: str = "blank",
    size: int | str = "4MB",
    chip: str | Chip | None = None,
    flash_mode: str | None = None,
    flash_freq: str | None = None,
    flash_size: str | None = None,
    partition_table_offset: int = DEFAULT_TABLE_OFFSET,
) -> FlashLayout:
    """Check everything and decide where every byte goes (nothing is written).

    ``flash_size`` is the size written into the bootloader header: None = the size of the flash being
    built, ``"keep"`` = as the bootloader says, or a name such as ``"2MB"``. ``flash_mode`` /
    ``flash_freq`` None keep the header's.
    """
    size = parse_size(size)
    if size <= 0 or size % SECTOR_SIZE:
        raise InputError(f"the flash size must be a positive multiple of 4 KiB, not {size}")
    if partition_table_offset % SECTOR_SIZE:
        raise InputError(f"the partition table offset 0x{partition_table_offset:x} is not a multiple of 0x1000")

    bl_raw = _read_source(bootloader, "bootloader")
    try:
        bl_image = parse_image(bl_raw, layout="esp32")
    except InputError as err:
        raise InputError(f"bootloader: {err}") from None
    if bl_image.chip is None:
        raise InputError(f"bootloader: unknown chip id {bl_image.header.chip_id} in its header")
    the_chip = chip if isinstance(chip, Chip) else chip_by_name(chip) if chip else bl_image.chip
    if bl_image.chip is not the_chip:
        raise InputError(f"the bootloader is built for {bl_image.chip.display}, not {the_chip.display}")

    bl_offset = the_chip.bootloader_offset
    if bl_offset + len(bl_raw) > partition_table_offset:
        raise InputError(
            f"the bootloader (0x{len(bl_raw):x} bytes at 0x{bl_offset:x}) overlaps the partition table "
            f"at 0x{partition_table_offset:x}"
        )
    table, table_bytes = _load_table(partitions, partition_table_offset)
    table.verify(flash_size=size, table_offset=partition_table_offset)
    if partition_table_offset + TABLE_SECTOR_SIZE > size:
        raise InputError(f"the partition table at 0x{partition_table_offset:x} lies past the {format_size(size)} flash")

    header_size = format_size(size) if flash_size is None else flash_size
    if header_size != KEEP and not any(n.lower() == header_size.lower() for n, _ in the_chip.flash_sizes):
        raise InputError(
            f"a bootloader header cannot say {header_size} (sizes: {', '.join(n for n, _ in the_chip.flash_sizes)}); "
            "give the header size explicitly or keep the bootloader's"
        )
    bl_bytes, patch = patch_flash_params(
        bytes(bl_raw), the_chip, flash_mode=flash_mode or KEEP, flash_freq=flash_freq or KEEP, flash_size=header_size
    )
    trailer = memoryview(bl_raw)[bl_image.end :]
    if bl_bytes != bl_raw and trailer.nbytes != bytes(trailer).count(FILL):
        raise InputError(
            f"the bootloader carries {trailer.nbytes} bytes after its image (a Secure Boot signature): patching "
            "its header would invalidate it; keep the header's flash settings (flash size 'keep')"
        )

    layout = FlashLayout(size, the_chip, table, partition_table_offset, bootloader_patch=patch)
    layout.regions.append(Region(bl_offset, bl_bytes, "bootloader", patch.describe()))
    layout.regions.append(Region(partition_table_offset, table_bytes, "partition table", f"{len(table.entries)} entries"))

    written: dict[str, str] = {}
    for kind, sources in (("app", apps or {}), ("data", data or {})):
        for label, source in sources.items():
            p = _partition(table, label)
            if label in written:
                raise InputError(f"partition '{label}' is given twice ({written[label]} and {kind})")
            written[label] = kind
            raw = _read_source(source, f"{kind} for '{label}'")
            if len(raw) > p.size:
                raise InputError(
                    f"{kind} for '{label}' is {len(raw)} bytes (0x{len(raw):x}), "
                    f"larger than the partition (0x{p.size:x} bytes)"
                )
            if kind == "app":
                if not p.is_app:
                    raise InputError(f"'{label}' is a {p.type_name} partition, not an app partition (use data)")
                detail = _image_detail(_check_image(label, raw, the_chip))
            else:
                detail = f"{len(raw)} bytes"
            if len(raw):
                layout.regions.append(Region(p.offset, raw, f"{kind} {label}", detail))

    ota_region = _otadata_region(table, otadata)
    if ota_region is not None:
        if table.otadata().label in written:
            raise InputError("otadata is given both as data and with --otadata")
        layout.regions.append(ota_region)
    return layout


def build_flash(
    out_path: str | os.PathLike,
    *,
    partitions: Source | PartitionTable,
    bootloader: Source,
    apps: Mapping[str, Source] | None = None,
    data: Mapping[str, Source] | None = None,
    otadata: str = "blank",
    size: int | str = "4MB",
    chip: str | None = None,
    chip_rev: int | None = None,
    flash_mode: str | None = None,
    flash_freq: str | None = None,
    flash_size: str | None = None,
    partition_table_offset: int = DEFAULT_TABLE_OFFSET,
) -> Path:
    """Plan (:func:`plan_flash`) and write a complete flash image; see :func:`write_flash`."""
    layout = plan_flash(
        partitions=partitions,
        bootloader=bootloader,
        apps=apps,
        data=data,
        otadata=otadata,
        size=size,
        chip=chip,
        flash_mode=flash_mode,
        flash_freq=flash_freq,
        flash_size=flash_size,
        partition_table_offset=partition_table_offset,
    )
    return write_flash(layout, out_path, chip=chip, chip_rev=chip_rev)


def write_flash(layout: FlashLayout, out_path: str | os.PathLike, *, chip: str | None = None, chip_rev: int | None = None) -> Path:
    """Write the image and start its device afresh.

    A sidecar left by an earlier flash at ``out_path`` is removed (a new flash is a new device); the
    settings given (``chip``, ``chip_rev``, a non-default table offset) are written to a new one.
    """
    from .device import Device, sidecar_path

    out = layout.write(out_path)
    sidecar_path(out).unlink(missing_ok=True)
    offset = layout.table_offset
    settings = {
        "chip": chip_by_name(chip).name if chip else None,
        "chip_rev": chip_rev,
        "partition_table_offset": offset if offset != DEFAULT_TABLE_OFFSET else None,
    }
    if any(v is not None for v in settings.values()):
        Device.open(out, **settings).close()
    return out
