"""The partition table model everyone else uses: read it the way ESP-IDF does, write it like gen_esp32part.py.

Readers (``PartitionTable.from_binary(data, reader=...)``):

* ``"bootloader"``: ``esp_partition_table_verify()`` + ``bootloader_utility_load_partition_table()``
  (newest copy): 96 rows at most, the MD5 row optional, stops at the first ``FF FF``/type ``FF``/subtype
  ``FF`` row, which may not be the first row.
* ``"app"``: the app's ``esp_partition`` ``load_partitions()`` with ``CONFIG_PARTITION_TABLE_MD5=y``
  (the default): the MD5 row is required.
* ``"gen_esp32part"``: the tool's ``PartitionTable.from_binary`` and its messages.
* ``"inspect"``: no error for a bad or missing MD5, just ``md5 = "bad"`` / ``"missing"``; for showing
  what a dump holds.

CSV in and binary out follow gen_esp32part.py. Two rule sets: ``"v1.2"`` (ESP-IDF v4.x, the tool that
made the golden tables in the test data: data partitions aligned to 4 bytes, app sizes unchecked
without ``--secure``) and ``"v1.5"`` (newest: 4 KiB data alignment, app sizes in 4 KiB, read-only and
NVS-size checks, its reworded CSV overlap message). Names newer than v1.2 (``littlefs``, the
``bootloader``/``partition_table`` types, ``tee_*``, the ``readonly`` flag) are known under both.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from construct import ConstructError

from .errors import InputError
from .formats.partition_table import (
    APP,
    APP_FACTORY,
    APP_OTA_MASK,
    APP_OTA_MIN,
    APP_TEST,
    BOOTLOADER,
    DATA,
    DATA_COREDUMP,
    DATA_NVS,
    DATA_OTA,
    DATA_TEE_OTA,
    DATA_UNDEFINED,
    DEFAULT_TABLE_OFFSET,
    END_MAGIC,
    END_MARKER,
    ENTRY_MAGIC,
    FLAG_ENCRYPTED,
    FLAG_NAMES,
    FLAG_READONLY,
    LABEL_LEN,
    MD5_MAGIC,
    MD5_OFFSET,
    OTADATA_SIZE,
    PARTITION_TABLE,
    ROW_SIZE,
    SUBTYPE_END,
    SUBTYPES,
    TABLE_MAX_ENTRIES,
    TABLE_MAX_LEN,
    TABLE_SECTOR_SIZE,
    TYPE_END,
    TYPES,
    PartitionEntry,
    RowHead,
    md5_row,
    subtype_name,
    type_name,
)

Reader = Literal["bootloader", "app", "gen_esp32part", "inspect"]
Rules = Literal["v1.2", "v1.5"]
Secure = Literal["v1", "v2"] | None
RULES = ("v1.2", "v1.5")

NVS_RW_MIN_SIZE = 0x3000  # gen_esp32part v1.5: a smaller NVS must be read-only
STRICT_DATA_ALIGNMENT = 0x1000


class PartitionTableInvalid(InputError):
    """A reader inside ESP-IDF rejected the table; ``esp_err`` is what that code returned."""

    def __init__(self, esp_err: str, message: str):
        super().__init__(message)
        self.esp_err = esp_err


@dataclass(frozen=True)
class Partition:
    """One ``esp_partition_info_t`` entry."""

    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def readonly(self) -> bool:
        return bool(self.flags & FLAG_READONLY)

    @property
    def type_name(self) -> str | int:
        return type_name(self.type)

    @property
    def subtype_name(self) -> str | int:
        return subtype_name(self.type, self.subtype)

    @property
    def is_app(self) -> bool:
        return self.type == APP

    @property
    def is_factory(self) -> bool:
        return self.is_app and self.subtype == APP_FACTORY

    @property
    def is_test(self) -> bool:
        return self.is_app and self.subtype == APP_TEST

    @property
    def is_ota_app(self) -> bool:
        """The bootloader's test: an app whose subtype is 0x10..0x1F."""
        return self.is_app and (self.subtype & ~APP_OTA_MASK) == APP_OTA_MIN

    @property
    def ota_index(self) -> int | None:
        return self.subtype & APP_OTA_MASK if self.is_ota_app else None

    @property
    def is_otadata(self) -> bool:
        return self.type == DATA and self.subtype == DATA_OTA

    @classmethod
    def from_entry(cls, row: bytes | memoryview, *, strict_label: bool = False) -> Partition:
        """Decode a 32-byte entry; the label ends at the first NUL (as ``strncpy`` and gen_esp32part read it).

        Labels that are not UTF-8 are kept byte-exact via surrogate escapes, unless ``strict_label``
        (gen_esp32part cannot read them).
        """
        e = PartitionEntry.parse(bytes(row))
        raw = e.label.split(b"\0", 1)[0]
        try:
            label = raw.decode("utf-8", "strict" if strict_label else "surrogateescape")
        except UnicodeDecodeError as err:
            raise InputError(f"Partition label {raw!r} is not valid UTF-8: {err}") from None
        return cls(label, e.type, e.subtype, e.offset, e.size, e.flags)

    def to_entry(self) -> bytes:
        """The 32-byte entry gen_esp32part packs (label NUL-padded, cut to 16 bytes)."""
        label = self.label.encode("utf-8", "surrogateescape")[:LABEL_LEN].ljust(LABEL_LEN, b"\0")
        try:
            return PartitionEntry.build(
                {
                    "type": self.type,
                    "subtype": self.subtype,
                    "offset": self.offset,
                    "size": self.size,
                    "label": label,
                    "flags": self.flags,
                }
            )
        except ConstructError:
            raise InputError(
                f"Partition {self.label}: type 0x{self.type:x}, subtype 0x{self.subtype:x}, offset 0x{self.offset:x}, "
                f"size 0x{self.size:x} or flags 0x{self.flags:x} do not fit the binary entry"
            ) from None

    def to_csv_row(self) -> str:
        """gen_esp32part's CSV row: names where known, offset in hex, size as ``NM``/``NK`` when whole."""
        size = f"0x{self.size:x}"
        for unit, suffix in ((0x100000, "M"), (0x400, "K")):
            if self.size % unit == 0:
                size = f"{self.size // unit}{suffix}"
                break
        flags = ":".join(name for name, bit in FLAG_NAMES.items() if self.flags & bit)
        return ",".join([self.label, str(self.type_name), str(self.subtype_name), f"0x{self.offset:x}", size, flags])

    def to_json(self) -> dict:
        return {
            "label": self.label,
            "type": self.type_name,
            "subtype": self.subtype_name,
            "offset": self.offset,
            "size": self.size,
            "encrypted": self.encrypted,
            "readonly": self.readonly,
        }


def _row(buf: bytes | memoryview, i: int) -> memoryview:
    return memoryview(buf)[i * ROW_SIZE : (i + 1) * ROW_SIZE]


def _as_table_sector(data: bytes | memoryview, length: int) -> bytes:
    """The first ``length`` bytes as the chip reads them; bytes a short input lacks read as erased flash."""
    head = bytes(memoryview(data)[:length])
    return head + b"\xff" * (length - len(head))


def _parse_int(v: str, keywords: dict[str, int] | None = None) -> int:
    """gen_esp32part's parse_int(): ``int(v, 0)`` with k/m suffixes (recursively), then keyword lookup."""
    keywords = keywords or {}
    try:
        for letter, multiplier in (("k", 1024), ("m", 1024 * 1024)):
            if v.lower().endswith(letter):
                return _parse_int(v[:-1], keywords) * multiplier
        return int(v, 0)
    except ValueError:
        if not keywords:
            raise InputError(f"Invalid field value {v}") from None
        try:
            return keywords[v.lower()]
        except KeyError:
            raise InputError(f"Value '{v}' is not valid. Known keywords: {', '.join(keywords)}") from None


def _offset_alignment(ptype: int, rules: Rules) -> int:
    """Offset alignment per type: apps 64 KiB; data (and unknown types) 4 bytes in v1.2, 4 KiB in v1.5."""
    if ptype == APP:
        return 0x10000
    if ptype in (BOOTLOADER, PARTITION_TABLE) or rules == "v1.5":
        return STRICT_DATA_ALIGNMENT
    return 0x4


def _app_size_alignment(rules: Rules, secure: Secure) -> int | None:
    """App size alignment: 64 KiB for Secure Boot v1, 4 KiB for v2 and always in v1.5."""
    if secure == "v1":
        return 0x10000
    if secure == "v2" or rules == "v1.5":
        return 0x1000
    return None


def _is_primary(ptype: int, subtype: int) -> bool:
    """Primary bootloader / partition table rows: placed by options, exempt from offset rules."""
    return ptype in (BOOTLOADER, PARTITION_TABLE) and subtype == 0x00


@dataclass
class _CsvRow:
    line_no: int
    label: str
    type: int
    subtype: int
    offset: int | None
    size: int
    flags: int

    def key(self) -> tuple:
        # gen_esp32part's PartitionDefinition.__eq__
        return (self.label, self.type, self.subtype, self.offset, self.size)


def _csv_row(
    line: str, line_no: int, table_offset: int, primary_bootloader_offset: int | None, recovery_bootloader_offset: int | None
) -> _CsvRow:
    """gen_esp32part PartitionDefinition.from_csv() for one line."""
    fields = [f.strip() for f in (line + ",,,,").split(",")]
    label = fields[0]
    if fields[1] == "":
        raise InputError("Field 'type' can't be left empty.")
    ptype = _parse_int(fields[1], TYPES)
    if fields[2] == "":
        if ptype == APP:
            raise InputError("App partition cannot have an empty subtype")
        subtype = DATA_UNDEFINED
    else:
        subtype = _parse_int(fields[2], SUBTYPES.get(ptype, {}))
    # The binary entry stores type and subtype in one byte each (gen_esp32part fails to pack larger ones).
    for what, value in (("type", ptype), ("subtype", subtype)):
        if not 0 <= value <= 0xFF:
            raise InputError(f"Partition {what} 0x{value:x} does not fit in one byte (0x00-0xff)")

    def need(value: int | None, what: str, option: str) -> int:
        if value is None:
            raise InputError(f"{what} offset is not defined. Please use {option}")
        return value

    bootloader_option = ("Primary bootloader", "--primary-bootloader-offset")
    if ptype == BOOTLOADER and subtype == 0x00:
        offset: int | None = need(primary_bootloader_offset, *bootloader_option)
    elif ptype == BOOTLOADER and subtype == 0x02:
        offset = need(recovery_bootloader_offset, "Recovery bootloader", "--recovery-bootloader-offset")
    elif ptype == PARTITION_TABLE and subtype == 0x00:
        offset = table_offset
    else:
        offset = None if fields[3] == "" else _parse_int(fields[3])

    if ptype == BOOTLOADER:
        size: int | None = table_offset - need(primary_bootloader_offset, *bootloader_option)
    elif ptype == PARTITION_TABLE:
        size = TABLE_SECTOR_SIZE
    else:
        size = None if fields[4] == "" else _parse_int(fields[4])
    if size is None:
        raise InputError("Size field can't be empty")

    flags = 0
    for flag in fields[5].split(":"):
        if flag in FLAG_NAMES:
            flags |= FLAG_NAMES[flag]
        elif flag:
            raise InputError(f"CSV flag column contains unknown flag '{flag}'")
    return _CsvRow(line_no, label, ptype, subtype, offset, size, flags)


def _expand_vars(line: str) -> str:
    """gen_esp32part expands environment variables; one left at the start of a line is an error."""
    line = os.path.expandvars(line)
    m = re.match(r"(?<!\\)\$([A-Za-z_][A-Za-z0-9_]*)", line)
    if m:
        raise InputError(f"unknown variable '{m.group(1)}'")
    return line


def _decode_csv(data: bytes) -> str:
    """gen_esp32part v1.5's BOM-aware decoding (UTF-8 without a BOM)."""
    boms = (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    )
    encoding = next((enc for bom, enc in boms if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise InputError(f"partition table CSV is not valid {encoding}: {err}") from None


@dataclass
class PartitionTable:
    """An ordered list of partitions, with where the table sits and what its MD5 row said.

    ``md5`` is ``"ok"`` (an MD5 row matched), ``"missing"`` (no MD5 row, or built from CSV) or ``"bad"``
    (only from the ``"inspect"`` reader: other readers raise).
    """

    entries: list[Partition] = field(default_factory=list)
    md5: Literal["ok", "missing", "bad"] = "missing"
    offset: int = DEFAULT_TABLE_OFFSET

    # ----------------------------------------------------------------------------------- readers
    @classmethod
    def from_binary(
        cls,
        data: bytes | bytearray | memoryview,
        *,
        reader: Reader = "bootloader",
        chip_size: int | None = None,
        offset: int = DEFAULT_TABLE_OFFSET,
    ) -> PartitionTable:
        """Read a binary table the way ``reader`` does (see the module docstring).

        ``data`` starts at the table offset. The chip-side readers map a fixed window (0xC00 bytes for the
        bootloader, the 4 KiB sector for the app); bytes beyond a shorter ``data`` read as erased flash,
        as on a chip the table was written to with esptool. ``chip_size`` enables the bootloader's
        "exceeds flash chip size" check.
        """
        if reader == "bootloader":
            return cls._read_bootloader(data, chip_size, offset)
        if reader in ("app", "inspect"):
            return cls._read_app(data, offset, md5_required=reader == "app")
        if reader == "gen_esp32part":
            return cls._read_gen_esp32part(data, offset)
        raise ValueError(f"unknown partition table reader {reader!r}")

    @classmethod
    def _read_bootloader(cls, data, chip_size: int | None, offset: int) -> PartitionTable:
        """esp_partition_table_verify(), then the entries bootloader_utility_load_partition_table() walks.

        Every device opened on the same table bytes gets the same (immutable) entries: the parse is
        remembered, which matters to fleets and power-cut campaigns that open thousands of devices.
        """
        table = cls._parse_bootloader(_as_table_sector(data, TABLE_MAX_LEN), chip_size, offset)
        return cls(list(table.entries), table.md5, table.offset)

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _parse_bootloader(buf: bytes, chip_size: int | None, offset: int) -> PartitionTable:
        md5_found = False
        for i in range(TABLE_MAX_ENTRIES):
            row = _row(buf, i)
            head = RowHead.parse(row)
            if head.magic == ENTRY_MAGIC:
                e = PartitionEntry.parse(row)
                if chip_size is not None and (e.offset > chip_size or e.size > chip_size - e.offset):
                    raise PartitionTableInvalid(
                        "ESP_ERR_INVALID_SIZE",
                        f"partition {i} invalid - offset 0x{e.offset:x} size 0x{e.size:x} "
                        f"exceeds flash chip size 0x{chip_size:x}",
                    )
            elif head.magic == MD5_MAGIC:
                if md5_found:
                    raise PartitionTableInvalid("ESP_ERR_INVALID_STATE", "Only one MD5 checksum is allowed")
                if bytes(row[MD5_OFFSET:]) != hashlib.md5(buf[: i * ROW_SIZE]).digest():
                    raise PartitionTableInvalid("ESP_ERR_INVALID_STATE", "Incorrect MD5 checksum")
                md5_found = True
            elif i != 0 and head.magic == END_MAGIC and head.type == TYPE_END and head.subtype == SUBTYPE_END:
                # num_partitions excludes the MD5 row, but the bootloader walks the first num_partitions rows:
                # an MD5 row in the middle hides the last entry.
                rows = [_row(buf, j) for j in range(i - md5_found)]
                entries = [Partition.from_entry(r) for r in rows if RowHead.parse(r).magic == ENTRY_MAGIC]
                return PartitionTable(entries, "ok" if md5_found else "missing", offset)
            else:
                raise PartitionTableInvalid(
                    "ESP_ERR_INVALID_STATE", f"partition {i} invalid magic number 0x{head.magic:x}"
                )
        raise PartitionTableInvalid("ESP_ERR_INVALID_STATE", "partition table has no terminating entry, not valid")

    @classmethod
    def _read_app(cls, data, offset: int, *, md5_required: bool) -> PartitionTable:
        """esp_partition's load_partitions(): entries until a row that is not one; an MD5 row ends the list."""
        buf = _as_table_sector(data, TABLE_SECTOR_SIZE)
        digest = hashlib.md5()
        entries = []
        md5_stored = None
        for i in range(TABLE_SECTOR_SIZE // ROW_SIZE):
            row = _row(buf, i)
            magic = RowHead.parse(row).magic
            if magic == MD5_MAGIC:
                md5_stored = bytes(row[MD5_OFFSET:])
                break
            if magic != ENTRY_MAGIC:
                break
            digest.update(row)
            entries.append(Partition.from_entry(row))
        if md5_stored is None:
            if md5_required:
                raise PartitionTableInvalid("ESP_ERR_NOT_FOUND", "No MD5 found in partition table")
            return cls(entries, "missing", offset)
        if md5_stored != digest.digest():
            if md5_required:
                raise PartitionTableInvalid("ESP_ERR_INVALID_STATE", "Partition table MD5 mismatch")
            return cls(entries, "bad", offset)
        return cls(entries, "ok", offset)

    @classmethod
    def _read_gen_esp32part(cls, data, offset: int) -> PartitionTable:
        """gen_esp32part.py PartitionTable.from_binary() with its messages."""
        b = memoryview(data)
        digest = hashlib.md5()
        entries = []
        md5 = "missing"
        for o in range(0, len(b), ROW_SIZE):
            row = bytes(b[o : o + ROW_SIZE])
            if len(row) != ROW_SIZE:
                raise InputError("Partition table length must be a multiple of 32 bytes")
            if row == END_MARKER:
                return cls(entries, md5, offset)
            if row[:2] == b"\xeb\xeb":
                if row[MD5_OFFSET:] != digest.digest():
                    raise InputError(
                        f"MD5 checksums don't match! (computed: 0x{digest.hexdigest()}, "
                        f"parsed: 0x{binascii.hexlify(row[MD5_OFFSET:])})"
                    )
                md5 = "ok"
                continue
            digest.update(row)
            if row[:2] != b"\xaa\x50":
                raise InputError(f"Invalid magic bytes ({row[:2]!r}) for partition definition")
            entries.append(Partition.from_entry(row, strict_label=True))
        raise InputError("Partition table is missing an end-of-table marker")

    @classmethod
    def from_csv(
        cls,
        text: str,
        *,
        offset: int = DEFAULT_TABLE_OFFSET,
        rules: Rules = "v1.2",
        primary_bootloader_offset: int | None = None,
        recovery_bootloader_offset: int | None = None,
    ) -> PartitionTable:
        """gen_esp32part.py PartitionTable.from_csv(): parse, place blank offsets, resolve negative sizes.

        Does not run ``verify()`` (the tool does that as a separate step). Errors name the CSV line.
        """
        _check_rules(rules)
        rows: list[_CsvRow] = []
        for line_no, raw in enumerate(text.splitlines(), start=1):
            line = _expand_vars(raw).strip()
            if line.startswith("#") or not line:
                continue
            try:
                rows.append(_csv_row(line, line_no, offset, primary_bootloader_offset, recovery_bootloader_offset))
            except InputError as err:
                raise InputError(f"Error at line {line_no}: {err}") from None

        last_end = offset + TABLE_SECTOR_SIZE
        for row in rows:
            if _is_primary(row.type, row.subtype):
                continue
            if row.offset is not None and row.offset < last_end:
                raise InputError(_csv_overlap_message(row, rows[0].key() == row.key(), offset, last_end, rules))
            if row.offset is None:
                align = _offset_alignment(row.type, rules)
                last_end += -last_end % align
                row.offset = last_end
            if row.size < 0:
                row.size = -row.size - row.offset
            last_end = row.offset + row.size

        entries = [Partition(r.label, r.type, r.subtype, r.offset, r.size, r.flags) for r in rows]
        return cls(entries, "missing", offset)

    @classmethod
    def load(
        cls,
        path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview,
        *,
        offset: int = DEFAULT_TABLE_OFFSET,
        reader: Reader = "gen_esp32part",
        rules: Rules = "v1.2",
        primary_bootloader_offset: int | None = None,
        recovery_bootloader_offset: int | None = None,
    ) -> PartitionTable:
        """Read a table file like gen_esp32part: binary when it starts with ``AA 50``, else CSV text."""
        data = read_input(path_or_bytes)
        if is_binary(data):
            return cls.from_binary(data, reader=reader, offset=offset)
        return cls.from_csv(
            _decode_csv(bytes(data)),
            offset=offset,
            rules=rules,
            primary_bootloader_offset=primary_bootloader_offset,
            recovery_bootloader_offset=recovery_bootloader_offset,
        )

    # ----------------------------------------------------------------------------------- writers
    def to_binary(self, *, md5: bool = True) -> bytes:
        """gen_esp32part's binary: entries, the MD5 row (unless ``md5=False``), 0xFF up to 0xC00 bytes."""
        rows = b"".join(p.to_entry() for p in self.entries)
        if md5:
            rows += md5_row(rows)
        if len(rows) >= TABLE_MAX_LEN:
            raise InputError(f"Binary partition table length ({len(rows)}) longer than max")
        return rows + b"\xff" * (TABLE_MAX_LEN - len(rows))

    def to_csv(self) -> str:
        """gen_esp32part's CSV output (its "smart" formatting)."""
        rows = ["# ESP-IDF Partition Table", "# Name, Type, SubType, Offset, Size, Flags"]
        rows += [p.to_csv_row() for p in self.entries]
        return "\n".join(rows) + "\n"

    def to_json(self) -> list[dict]:
        return [p.to_json() for p in self.entries]

    # ----------------------------------------------------------------------------------- checks
    def verify(
        self,
        *,
        flash_size: int | None = None,
        table_offset: int | None = None,
        rules: Rules = "v1.2",
        secure: Secure = None,
    ) -> None:
        """gen_esp32part verify() (and verify_size_fits() when ``flash_size`` is given), with its messages.

        ``table_offset`` defaults to where this table sits. ``rules="v1.5"`` adds the newest tool's checks;
        ``secure`` is the tool's ``--secure v1|v2``.
        """
        _check_rules(rules)
        table_end = (self.offset if table_offset is None else table_offset) + TABLE_SECTOR_SIZE
        for p in self.entries:
            _verify_partition(p, rules, secure)

        names = [p.label for p in self.entries]
        if len(set(names)) != len(names):
            raise InputError("Partition names must be unique")

        last = None
        for p in sorted(self.entries, key=lambda p: p.offset):
            if p.offset < table_end and not _is_primary(p.type, p.subtype):
                raise InputError(f"Partition offset 0x{p.offset:x} is below 0x{table_end:x}")
            if last is not None and p.offset < last.end:
                raise InputError(f"Partition at 0x{p.offset:x} overlaps 0x{last.offset:x}-0x{last.end - 1:x}")
            last = p

        for subtype, what, number in ((DATA_OTA, "", "0"), (DATA_TEE_OTA, "TEE ", "0x90")):
            found = [p for p in self.entries if p.type == DATA and p.subtype == subtype]
            if len(found) > 1:
                raise InputError(
                    f"Found multiple {what}otadata partitions. Only one partition can be defined with "
                    f'type="data"(1) and subtype="{subtype_name(DATA, subtype)}"({number}).'
                )
            if found and found[0].size != OTADATA_SIZE:
                raise InputError(f"{what}otadata partition must have size = 0x{OTADATA_SIZE:x}")

        if flash_size is not None and flash_size < self.flash_end():
            used = self.flash_end()
            mb = 1024 * 1024
            raise InputError(
                f"Partitions tables occupies {used / mb:.1f}MB of flash ({used} bytes) which does not fit in "
                f"configured flash size {flash_size // mb}MB. Change the flash size in menuconfig under the "
                "'Serial Flasher Config' menu."
            )

    def warnings(self, *, rules: Rules = "v1.2") -> list[str]:
        """The WARNING lines gen_esp32part prints (to stderr) while verifying, in its order."""
        _check_rules(rules)
        all_subtype_names = {name for names in SUBTYPES.values() for name in names}
        out = []
        for p in self.entries:
            if rules == "v1.2" and p.type != APP and p.offset % STRICT_DATA_ALIGNMENT:
                out.append(
                    f"WARNING: Partition {p.label} not aligned to 0x{STRICT_DATA_ALIGNMENT:x}."
                    "This is deprecated and will be considered an error in the future release."
                )
            if p.label in TYPES and TYPES[p.label] != p.type:
                out.append(
                    f"WARNING: Partition has name '{p.label}' which is a partition type, but does not match this "
                    f"partition's type (0x{p.type:x}). Mistake in partition table?"
                )
            if p.label in all_subtype_names and SUBTYPES.get(p.type, {}).get(p.label) != p.subtype:
                out.append(
                    f"WARNING: Partition has name '{p.label}' which is a partition subtype, but this partition has "
                    f"non-matching type 0x{p.type:x} and subtype 0x{p.subtype:x}. Mistake in partition table?"
                )
            unknown = p.flags & ~(FLAG_ENCRYPTED | FLAG_READONLY)
            if unknown:
                out.append(f"WARNING: Partition definition had unknown flag(s) 0x{unknown:08x}. Newer binary format?")
        return out

    def flash_end(self) -> int:
        """gen_esp32part flash_size(): where the partition with the highest offset ends."""
        return max(self.entries, key=lambda p: p.offset).end if self.entries else 0

    # ----------------------------------------------------------------------------------- lookups
    def find(self, label: str) -> Partition | None:
        return next((p for p in self.entries if p.label == label), None)

    def find_first(self, type: int | str, subtype: int | str | None = None) -> Partition | None:
        """esp_partition_find_first(): the first entry in table order with this type (and subtype)."""
        ptype = TYPES[type] if isinstance(type, str) else type
        if isinstance(subtype, str):
            subtype = SUBTYPES.get(ptype, {})[subtype]
        return next(
            (p for p in self.entries if p.type == ptype and (subtype is None or p.subtype == subtype)), None
        )

    def apps(self) -> list[Partition]:
        return [p for p in self.entries if p.is_app]

    def ota_apps(self) -> list[Partition]:
        """OTA app slots sorted by subtype (ota_0 first)."""
        return sorted((p for p in self.entries if p.is_ota_app), key=lambda p: p.subtype)

    def otadata(self) -> Partition | None:
        return self.find_first(DATA, DATA_OTA)

    def factory(self) -> Partition | None:
        return self.find_first(APP, APP_FACTORY)

    def test(self) -> Partition | None:
        return self.find_first(APP, APP_TEST)


def _check_rules(rules: str) -> None:
    if rules not in RULES:
        raise ValueError(f"unknown gen_esp32part rules {rules!r}; use one of {', '.join(RULES)}")


def _csv_overlap_message(row: _CsvRow, is_first: bool, table_offset: int, last_end: int, rules: Rules) -> str:
    """The tool's message for an explicit offset before the end of the previous partition (wording per version)."""
    if rules == "v1.2":
        if is_first:
            return f"CSV Error: First partition offset 0x{row.offset:x} overlaps end of partition table 0x{last_end:x}"
        return (
            f"CSV Error: Partitions overlap. Partition at line {row.line_no} sets offset 0x{row.offset:x}. "
            f"Previous partition ends 0x{last_end:x}"
        )
    if is_first:
        return (
            f"CSV Error at line {row.line_no}: Partitions overlap. Partition sets offset 0x{row.offset:x}. "
            f"But partition table occupies the whole sector 0x{table_offset:x}. "
            f"Use a free offset 0x{last_end:x} or higher."
        )
    return (
        f"CSV Error at line {row.line_no}: Partitions overlap. Partition sets offset 0x{row.offset:x}. "
        f"Previous partition ends 0x{last_end:x}"
    )


def _verify_partition(p: Partition, rules: Rules, secure: Secure) -> None:
    """gen_esp32part PartitionDefinition.verify() errors."""

    def invalid(message: str) -> InputError:
        return InputError(f"Partition {p.label} invalid: {message}")

    align = _offset_alignment(p.type, rules)
    if p.offset % align:
        raise invalid(f"Offset 0x{p.offset:x} is not aligned to 0x{align:x}")
    size_align = _app_size_alignment(rules, secure) if p.is_app else None
    if size_align and p.size % size_align:
        raise invalid(f"Size 0x{p.size:x} is not aligned to 0x{size_align:x}")
    if rules == "v1.5" and p.type == DATA:
        if p.subtype in (DATA_OTA, DATA_COREDUMP) and p.readonly:
            raise invalid(
                f"'{p.label}' partition of type {p.type} and subtype {p.subtype} is always read-write "
                "and cannot be read-only"
            )
        if p.subtype == DATA_NVS and p.size < NVS_RW_MIN_SIZE and not p.readonly:
            raise invalid(
                f"'{p.label}' partition of type {p.type} and subtype {p.subtype} of this size (0x{p.size:x}) "
                f"must be flagged as 'readonly' (the size of read/write NVS has to be at least 0x{NVS_RW_MIN_SIZE:x})"
            )


def is_binary(data: bytes | bytearray | memoryview) -> bool:
    """gen_esp32part's input detection: a binary table starts with the entry magic ``AA 50``."""
    return bytes(memoryview(data)[:2]) == b"\xaa\x50"


def read_input(path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    """The bytes of a table given as data or as a file path."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return path_or_bytes
    try:
        return Path(path_or_bytes).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read partition table {path_or_bytes}: {err.strerror}") from None
