"""``diff``: what changed between two flash dumps, sector by sector, named the way ESP-IDF names it.

Changed 4 KiB sectors are found by comparing both files in large chunks (equal chunks are skipped
without looking at their sectors), then attributed to the structure that owns them: the 2nd-stage
bootloader (which header fields, is the image still valid), the partition table (entries added, removed
or changed), each otadata sector (``esp_ota_select_entry_t`` seq / state / crc, old -> new), app
partitions (image version and validity, old -> new) and data partitions, plus space no partition covers.
The layout comes from flash A's partition table (B's if A has none).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from .chips import Chip
from .device import Device, detect_chip
from .errors import InputError
from .flash import SECTOR_SIZE, Flash, format_size
from .formats.app_desc import c_text
from .formats.image import SPI_MODES
from .formats.otadata import OTADATA_ENTRY_SIZE, OTADATA_SECTORS, SEQ_BLANK, state_name
from .formats.partition_table import TABLE_MAX_LEN, TABLE_SECTOR_SIZE
from .image import EspImage, parse_image
from .otadata import OtaEntry
from .partitions import Partition, PartitionTable

_CHUNK = 0x40000  # compare 256 KiB at a time; only differing chunks are looked at sector by sector


@dataclass(frozen=True)
class Change:
    """A changed range ``[offset, end)`` of the flash, the structure that owns it and what changed."""

    offset: int
    end: int
    structure: str  # "bootloader", "partition table", "otadata sector 1", "app ota_0", "data nvs", "unpartitioned"
    details: tuple[str, ...]
    bytes_changed: int
    sectors_changed: int

    def describe(self) -> str:
        return f"{self.structure}: {'; '.join(self.details)}"

    def to_json(self) -> dict:
        return {
            "offset": self.offset,
            "end": self.end,
            "structure": self.structure,
            "details": list(self.details),
            "bytes_changed": self.bytes_changed,
            "sectors_changed": self.sectors_changed,
        }


def changed_sectors(a: memoryview, b: memoryview) -> Iterator[tuple[int, int]]:
    """``(sector offset, differing bytes)`` for every 4 KiB sector where ``a`` and ``b`` differ."""
    n = min(len(a), len(b))
    for chunk in range(0, n, _CHUNK):
        end = min(n, chunk + _CHUNK)
        if a[chunk:end] == b[chunk:end]:
            continue
        for sector in range(chunk, end, SECTOR_SIZE):
            stop = min(end, sector + SECTOR_SIZE)
            sa, sb = a[sector:stop], b[sector:stop]
            if sa != sb:
                x = int.from_bytes(sa, "little") ^ int.from_bytes(sb, "little")
                yield sector, (stop - sector) - x.to_bytes(stop - sector, "little").count(0)


@dataclass(frozen=True)
class _Region:
    start: int
    end: int
    structure: str
    kind: str  # "bootloader", "table", "otadata", "app", "data", "free"
    partition: Partition | None = None
    sector: int = 0  # otadata sector index


def _read_table(flash: Flash, offset: int) -> PartitionTable | None:
    """The table as the bootloader reads it, else whatever entries an app-side read finds."""
    if offset + TABLE_MAX_LEN > flash.size:
        return None
    raw = flash.read(offset, TABLE_MAX_LEN)
    for reader in ("bootloader", "inspect"):
        try:
            table = PartitionTable.from_binary(raw, reader=reader, offset=offset)
        except InputError:
            continue
        if table.entries:
            return table
    return None


def _regions(chip: Chip | None, table: PartitionTable | None, table_offset: int, size: int) -> list[_Region]:
    """Every owned range of the flash in address order; uncovered space becomes "unpartitioned"."""
    owned: list[_Region] = []
    if chip is not None and chip.bootloader_offset < table_offset:
        owned.append(_Region(chip.bootloader_offset, table_offset, "bootloader", "bootloader"))
    owned.append(_Region(table_offset, table_offset + TABLE_SECTOR_SIZE, "partition table", "table"))
    for p in table.entries if table else ():
        if p.is_otadata:
            for i in range(OTADATA_SECTORS):
                start = p.offset + i * SECTOR_SIZE
                owned.append(_Region(start, start + SECTOR_SIZE, f"otadata sector {i}", "otadata", p, i))
        elif p.is_app:
            owned.append(_Region(p.offset, p.end, f"app {p.label}", "app", p))
        else:
            owned.append(_Region(p.offset, p.end, f"data {p.label}", "data", p))
    owned.sort(key=lambda r: r.start)
    out, pos = [], 0
    for r in owned:
        if r.start > pos:
            out.append(_Region(pos, r.start, "unpartitioned", "free"))
        out.append(r)
        pos = max(pos, r.end)
    if pos < size:
        out.append(_Region(pos, size, "unpartitioned", "free"))
    return out


def _arrow(old, new) -> str:
    return f"{old} -> {new}"


def _image(view: memoryview, offset: int, limit: int) -> EspImage | str:
    if offset >= len(view) or view[offset : offset + min(limit, 32)].tobytes().count(0xFF) == min(limit, 32):
        return "erased"
    try:
        return parse_image(view, offset, limit, layout="esp32")
    except InputError as err:
        return str(err)


def _validity(image: EspImage) -> str:
    if not image.checksum_ok:
        return "invalid (checksum)"
    if image.hash_ok is False:
        return "invalid (SHA-256)"
    return "valid"


def _header_fields(image: EspImage, chip: Chip | None) -> dict[str, str]:
    h = image.header
    speed = chip.flash_freq_name(h.spi_size_speed.spi_speed) if chip else None
    size = chip.flash_size_name(h.spi_size_speed.spi_size << 4) if chip else None
    return {
        "flash mode": SPI_MODES[h.spi_mode] if h.spi_mode < len(SPI_MODES) else f"0x{h.spi_mode:x}",
        "flash size": size or f"0x{h.spi_size_speed.spi_size:x}",
        "flash frequency": speed or f"0x{h.spi_size_speed.spi_speed:x}",
        "entry": f"0x{h.entry_addr:08x}",
        "segments": str(h.segment_count),
        "chip id": str(h.chip_id),
        "min chip rev": f"v{h.min_chip_rev_full // 100}.{h.min_chip_rev_full % 100}",
        "hash appended": str(h.hash_appended),
    }


def _image_summary(image: EspImage | str) -> str:
    if isinstance(image, str):
        return image if image == "erased" else "no image"
    desc = image.app_desc
    if desc is not None:
        return f"version {c_text(desc.version)} ({c_text(desc.project_name)})"
    if image.bootloader_desc is not None:
        return f"ESP-IDF {c_text(image.bootloader_desc.idf_ver)}"
    return "image without description"


def _bootloader_details(a: memoryview, b: memoryview, r: _Region, chip: Chip | None) -> list[str]:
    ia, ib = _image(a, r.start, r.end - r.start), _image(b, r.start, r.end - r.start)
    if isinstance(ia, str) or isinstance(ib, str):
        return [_arrow(_image_summary(ia), _image_summary(ib))]
    out = []
    fa, fb = _header_fields(ia, chip), _header_fields(ib, chip)
    out += [f"header {k} {_arrow(fa[k], fb[k])}" for k in fa if fa[k] != fb[k]]
    if _image_summary(ia) != _image_summary(ib):
        out.append(_arrow(_image_summary(ia), _image_summary(ib)))
    if _validity(ia) != _validity(ib) or not out:
        out.append(f"image {_arrow(_validity(ia), _validity(ib))}")
    if ia.image_len != ib.image_len:
        out.append(f"length {_arrow(ia.image_len, ib.image_len)}")
    return out


def _describe_partition(p: Partition) -> str:
    return f"{p.type_name}/{p.subtype_name} at 0x{p.offset:x}, 0x{p.size:x} bytes"


def _table_details(ta: PartitionTable | None, tb: PartitionTable | None) -> list[str]:
    if ta is None or tb is None:
        return [_arrow("no table" if ta is None else f"{len(ta.entries)} entries",
                       "no table" if tb is None else f"{len(tb.entries)} entries")]
    out = []
    la, lb = {p.label: p for p in ta.entries}, {p.label: p for p in tb.entries}
    out += [f"removed {label} ({_describe_partition(p)})" for label, p in la.items() if label not in lb]
    out += [f"added {label} ({_describe_partition(p)})" for label, p in lb.items() if label not in la]
    for label in [p.label for p in ta.entries if p.label in lb]:
        pa, pb = la[label], lb[label]
        for field in ("type_name", "subtype_name", "offset", "size", "flags"):
            va, vb = getattr(pa, field), getattr(pb, field)
            if va != vb:
                shown = (f"0x{va:x}", f"0x{vb:x}") if field in ("offset", "size", "flags") else (va, vb)
                out.append(f"{label} {field.removesuffix('_name')} {_arrow(*shown)}")
    if [p.label for p in ta.entries if p.label in lb] != [p.label for p in tb.entries if p.label in la]:
        out.append("entries reordered")
    if ta.md5 != tb.md5:
        out.append(f"MD5 {_arrow(ta.md5, tb.md5)}")
    return out or ["table bytes changed, same entries"]


def _seq(entry: OtaEntry) -> str:
    return "blank" if entry.seq == SEQ_BLANK else str(entry.seq)


def _otadata_details(a: memoryview, b: memoryview, ra: _Region, rb: _Region) -> list[str]:
    ea = OtaEntry.parse(ra.sector, bytes(a[ra.start : ra.start + OTADATA_ENTRY_SIZE]))
    eb = OtaEntry.parse(rb.sector, bytes(b[rb.start : rb.start + OTADATA_ENTRY_SIZE]))
    out = []
    if ea.to_bytes() != eb.to_bytes():
        parts = [f"seq {_arrow(_seq(ea), _seq(eb))}", f"state {_arrow(state_name(ea.state), state_name(eb.state))}"]
        if ea.crc_ok != eb.crc_ok or (ea.seq == eb.seq and ea.crc != eb.crc):
            parts.append(f"crc {_arrow('ok' if ea.crc_ok else 'bad', 'ok' if eb.crc_ok else 'bad')}")
        if ea.seq_label != eb.seq_label:
            parts.append("seq_label changed")
        out.append(", ".join(parts))
    if a[ra.start + OTADATA_ENTRY_SIZE : ra.end] != b[rb.start + OTADATA_ENTRY_SIZE : rb.end]:
        out.append("bytes after the entry changed")
    return out


def _app_details(a: memoryview, b: memoryview, pa: Partition, pb: Partition) -> list[str]:
    ia, ib = _image(a, pa.offset, pa.size), _image(b, pb.offset, pb.size)
    out = []
    sa, sb = _image_summary(ia), _image_summary(ib)
    if sa != sb:
        out.append(f"image {_arrow(sa, sb)}")
    va = _validity(ia) if not isinstance(ia, str) else None
    vb = _validity(ib) if not isinstance(ib, str) else None
    if va != vb and va is not None and vb is not None:
        out.append(f"image {_arrow(va, vb)}")
    elif vb is not None and vb != "valid":
        out.append(f"image {vb}")
    return out


def _holds(view: memoryview, r: _Region) -> str:
    """What a region of one flash holds, for ranges whose owner differs between the two layouts."""
    if _erased(view, r.start, r.end):
        return "erased"
    if r.kind == "app":
        return _image_summary(_image(view, r.start, r.end - r.start))
    if r.kind == "otadata":
        e = OtaEntry.parse(r.sector, bytes(view[r.start : r.start + OTADATA_ENTRY_SIZE]))
        return f"seq {_seq(e)}, state {state_name(e.state)}"
    return "data"


def _erased(view: memoryview, start: int, end: int) -> bool:
    part = view[start:end]
    return part.tobytes().count(0xFF) == part.nbytes


def diff_flashes(a: str | os.PathLike, b: str | os.PathLike, *, partition_table_offset: int | None = None) -> list[Change]:
    """Every changed range between flash dumps ``a`` and ``b``, in address order (empty when identical).

    The table offset defaults to flash A's device setting (0x8000 unless its sidecar says otherwise).
    """
    with Device.open(a, readonly=True) as dev_a, Flash.open(b, readonly=True) as flash_b:
        offset = dev_a.settings.partition_table_offset if partition_table_offset is None else partition_table_offset
        return _diff(dev_a.flash, flash_b, offset)


def _segments(regions_a: list[_Region], regions_b: list[_Region]) -> Iterator[tuple[int, int, _Region, _Region]]:
    """The ranges where one region of A's layout meets one region of B's (the layouts' common refinement)."""
    for ra in regions_a:
        for rb in regions_b:
            lo, hi = max(ra.start, rb.start), min(ra.end, rb.end)
            if lo < hi:
                yield lo, hi, ra, rb


def _details(va: memoryview, vb: memoryview, ra: _Region, rb: _Region, tables, chip: Chip | None) -> list[str]:
    """What changed inside a structure both layouts agree on."""
    if ra.kind == "bootloader":
        return _bootloader_details(va, vb, ra, chip)
    if ra.kind == "table":
        return _table_details(*tables)
    if ra.kind == "otadata":
        return _otadata_details(va, vb, ra, rb)
    if ra.kind == "app":
        return _app_details(va, vb, ra.partition, rb.partition)
    if ra.kind == "data":
        ea, eb = _erased(va, ra.start, ra.end), _erased(vb, rb.start, rb.end)
        if ea != eb:
            return [_arrow("erased" if ea else "has data", "erased" if eb else "has data")]
    return []


def _diff(fa: Flash, fb: Flash, table_offset: int) -> list[Change]:
    va, vb = fa.view(), fb.view()
    changes: list[Change] = []
    if fa.size != fb.size:
        common = min(fa.size, fb.size)
        longer = va if fa.size > fb.size else vb
        changes.append(Change(
            common, max(fa.size, fb.size), "flash size",
            (f"{_arrow(format_size(fa.size), format_size(fb.size))}",
             f"{'A' if fa.size > fb.size else 'B'} has 0x{max(fa.size, fb.size) - common:x} more bytes"
             + (", all erased" if _erased(longer, common, len(longer)) else "")),
            max(fa.size, fb.size) - common, 0,
        ))
    sectors = dict(changed_sectors(va, vb))
    if not sectors:
        return changes
    chip = detect_chip(fa) or detect_chip(fb)
    tables = _read_table(fa, table_offset), _read_table(fb, table_offset)
    size = min(fa.size, fb.size)
    layout_a = _regions(chip, tables[0] or tables[1], table_offset, size)
    layout_b = _regions(chip, tables[1] or tables[0], table_offset, size)
    for lo, hi, ra, rb in _segments(layout_a, layout_b):
        hit = [s for s in range(lo - lo % SECTOR_SIZE, hi, SECTOR_SIZE) if s in sectors]
        if not hit:
            continue
        if ra.structure == rb.structure:
            structure, details = ra.structure, _details(va, vb, ra, rb, tables, chip)
        else:
            structure = f"{ra.structure} -> {rb.structure}"
            details = [f"A: {ra.structure} {_holds(va, ra)}, B: {rb.structure} {_holds(vb, rb)}"]
        changed = sum(sectors[s] for s in hit)
        if ra.kind not in ("otadata", "table"):
            details.append(f"{changed} bytes changed in {len(hit)} sector{'s' if len(hit) > 1 else ''} "
                           f"(0x{hit[0]:x}..0x{hit[-1] + SECTOR_SIZE:x})")
        changes.append(Change(max(lo, hit[0]), min(hi, hit[-1] + SECTOR_SIZE), structure, tuple(details), changed, len(hit)))
    changes.sort(key=lambda c: c.offset)
    return changes
