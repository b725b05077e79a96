"""Partition tables: gen_esp32part's goldens and messages, the ESP-IDF readers, the ``partitions`` command."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from esp_ota_emu.cli.main import cli
from esp_ota_emu.errors import EXIT_BAD_INPUT, InputError
from esp_ota_emu.formats.partition_table import (
    SUBTYPES,
    TABLE_MAX_LEN,
    TYPES,
    EndMarker,
    Md5Row,
    PartitionEntry,
    md5_row,
)
from esp_ota_emu.partitions import Partition, PartitionTable, PartitionTableInvalid

LAYOUTS = Path(__file__).resolve().parents[1] / "partitions"
MB = 1024 * 1024


def golden_pairs(realdata: Path) -> list[tuple[Path, Path]]:
    pairs = [(c, c.with_suffix(".bin")) for c in sorted((realdata / "partitions").rglob("*.csv"))]
    return [(c, b) for c, b in pairs if b.exists()]


def gen_log(realdata: Path) -> dict[str, str]:
    """gen_log.txt: CSV path -> the v1.2 tool's error for the CSVs it rejected."""
    failures = {}
    for line in (realdata / "partitions" / "gen_log.txt").read_text().splitlines():
        m = re.match(r"FAIL\s+(\S+): (.*)$", line)
        if m:
            failures[m.group(1)] = m.group(2).strip()
    return failures


def strip_ffs(table: bytes) -> bytes:
    """Keep one 32-byte end marker, as ESP-IDF's host tests compare tables."""
    while table.endswith(b"\xff" * 64):
        table = table[:-32]
    return table


# ------------------------------------------------------------------------------------ golden files


def test_every_golden_csv_gives_its_bin_byte_for_byte(realdata):
    pairs = golden_pairs(realdata)
    assert len(pairs) >= 80
    mismatches = []
    for csv, binary in pairs:
        table = PartitionTable.load(csv)
        table.verify()
        if table.to_binary() != binary.read_bytes():
            mismatches.append(csv.name)
    assert mismatches == []


def test_golden_bins_round_trip_through_csv(realdata):
    for _, binary in golden_pairs(realdata):
        data = binary.read_bytes()
        table = PartitionTable.from_binary(data, reader="gen_esp32part")
        assert table.md5 == "ok"
        again = PartitionTable.from_csv(table.to_csv())
        again.verify()
        assert again.entries == table.entries
        assert again.to_binary() == data


def test_readers_agree_on_the_goldens(realdata):
    for _, binary in golden_pairs(realdata):
        data = binary.read_bytes()
        tables = [PartitionTable.from_binary(data, reader=r) for r in ("bootloader", "app", "gen_esp32part", "inspect")]
        assert all(t.entries == tables[0].entries and t.md5 == "ok" for t in tables)


def test_csvs_the_v12_tool_rejected_fail_for_the_same_reason(realdata):
    log = gen_log(realdata)
    assert len(log) == 3
    for rel, message in log.items():
        path = realdata / "partitions" / rel
        if "littlefs" in message:
            continue
        with pytest.raises(InputError) as err:
            PartitionTable.load(path).verify()
        assert str(err.value) == message


def test_littlefs_accepted_as_0x83_unlike_the_v12_tool(realdata):
    log = gen_log(realdata)
    rel = next(r for r, m in log.items() if "littlefs" in m)
    assert "Value 'littlefs' is not valid" in log[rel]
    table = PartitionTable.load(realdata / "partitions" / rel)
    table.verify(flash_size=32 * MB)
    fs = table.find("littlefs")
    assert (fs.type, fs.subtype, fs.subtype_name) == (1, 0x83, "littlefs")
    assert PartitionTable.from_binary(table.to_binary()).entries == table.entries


def test_quirky_goldens(realdata):
    up = realdata / "partitions" / "arduino-esp32_upstream"
    spiffs = PartitionTable.load(up / "default_16MB.csv").find("spiffs")
    assert spiffs.size == 0x36FFFC and spiffs.end == 16 * MB - 4
    m5 = PartitionTable.load(up / "m5stack_partitions_16MB_factory_4_apps.csv")
    assert [p.ota_index for p in m5.ota_apps()] == [0, 1, 2, 3]
    assert m5.factory().label == "firmware"


def test_arduino_committed_default_bin_is_the_csv_without_md5(realdata):
    committed = (realdata / "arduino-esp32" / "v1.0.6_idf-v3.3.5" / "default.bin").read_bytes()
    csv = realdata / "partitions" / "arduino-esp32_upstream" / "default.csv"
    assert PartitionTable.load(csv).to_binary(md5=False) == committed


# ------------------------------------------------------------------------------------ ESP-IDF host-test vectors (spec 1.5)


def test_simple_numeric_row():
    (p,) = PartitionTable.from_csv("\n# Name,Type,SubType,Offset,Size,Flags\nfactory,0,2,65536,1048576,\n").entries
    assert (p.label, p.type, p.subtype, p.offset, p.size) == ("factory", 0, 2, 0x10000, 0x100000)


def test_type_is_required():
    with pytest.raises(InputError, match="type"):
        PartitionTable.from_csv("ihavenotype,\n")


def test_type_and_subtype_names_equal_numbers():
    numbers = "myapp,0,0,,0x100000\nmyota_0,0,0x10,,0x100000\nmyota_15,0,0x1f,,0x100000\nmytest,0,0x20,,0x100000\nst,1,0,,0x2000\n"
    names = "myapp,app,factory,,0x100000\nmyota_0,app,ota_0,,0x100000\nmyota_15,APP,ota_15,,0x100000\nmytest,app,test,,0x100000\nst,data,ota,,0x2000\n"
    a, b = PartitionTable.from_csv(numbers), PartitionTable.from_csv(names)
    a.verify()
    assert a.entries == b.entries
    assert b.find("myota_15").subtype == 0x1F and b.find("mytest").is_test


def test_unit_suffixes():
    (p,) = PartitionTable.from_csv("one_megabyte, app, factory, 64k, 1M").entries
    assert (p.offset, p.size) == (0x10000, 0x100000)


@pytest.mark.parametrize("rules", ["v1.2", "v1.5"])
def test_default_offsets(rules):
    csv = "first, app, factory,, 1M\nsecond, data, 0x15,, 1M\nminidata, data, 0x40,, 32K\notherapp, app, factory,, 1M\n"
    t = PartitionTable.from_csv(csv, rules=rules)
    assert [p.offset for p in t.entries] == [0x10000, 0x110000, 0x210000, 0x220000]


def test_data_offsets_pack_to_4_bytes_in_v12_and_4k_in_v15():
    csv = "a, data, fat, 0x9000, 0x1002\nb, data, spiffs,, 0x1000\n"
    assert PartitionTable.from_csv(csv).find("b").offset == 0xA004
    assert PartitionTable.from_csv(csv, rules="v1.5").find("b").offset == 0xB000
    with pytest.raises(InputError, match=r"^Partition a invalid: Offset 0x9002 is not aligned to 0x4$"):
        PartitionTable.from_csv("a, data, nvs, 0x9002, 0x1000").verify()
    warned = PartitionTable.from_csv(csv)
    warned.verify()
    assert warned.warnings() == [
        "WARNING: Partition b not aligned to 0x1000.This is deprecated and will be considered an error in the future release."
    ]
    with pytest.raises(InputError, match="Offset 0xa004 is not aligned to 0x1000"):
        warned.verify(rules="v1.5")


def test_negative_size_means_end_address():
    t = PartitionTable.from_csv("first, app, factory, 0x10000, -2M\nsecond, data, 0x15,         ,  1M\n")
    t.verify()
    assert t.entries[0].size == 0x200000 - 0x10000
    assert t.entries[1].offset == 0x200000


def test_overlap():
    with pytest.raises(InputError, match=r"^CSV Error: Partitions overlap\. Partition at line 2 sets offset 0x200000\. Previous partition ends 0x300000$"):
        PartitionTable.from_csv("first, app, factory, 0x100000, 2M\nsecond, app, ota_0,  0x200000, 1M\n", offset=0)
    t = PartitionTable([Partition("second", 0, 0x10, 0x200000, 0x100000), Partition("first", 0, 0, 0x100000, 0x200000)])
    with pytest.raises(InputError, match=r"^Partition at 0x200000 overlaps 0x100000-0x2fffff$"):
        t.verify()
    with pytest.raises(InputError, match=r"^Partition offset 0x8000 is below 0x9000$"):
        PartitionTable([Partition("low", 1, 2, 0x8000, 0x1000)]).verify()


def test_csv_overlap_messages_per_tool_version():
    csv = "\n# Name,Type, SubType,Offset,Size\nnvs,      data, nvs,     0x0000,  0x6000,\nphy_init, data, phy,,0x1000,\n"
    with pytest.raises(InputError, match=r"^CSV Error at line 3: Partitions overlap\. Partition sets offset 0x0\. "):
        PartitionTable.from_csv(csv, offset=0, rules="v1.5")
    with pytest.raises(InputError, match=r"^CSV Error: First partition offset 0x0 overlaps end of partition table 0x1000$"):
        PartitionTable.from_csv(csv, offset=0)
    second = "a, data, nvs, 0x9000, 0x6000\nb, data, phy, 0xa000, 0x1000\n"
    with pytest.raises(InputError, match=r"^CSV Error at line 2: Partitions overlap\. Partition sets offset 0xa000\. Previous partition ends 0xf000$"):
        PartitionTable.from_csv(second, rules="v1.5")


def test_unique_names():
    t = PartitionTable.from_csv("first, app, factory, 0x100000, 1M\nfirst, app, ota_0,  0x200000, 1M\n")
    with pytest.raises(InputError, match="^Partition names must be unique$"):
        t.verify()


def test_binary_entry_and_md5_vector():
    tb = strip_ffs(PartitionTable.from_csv("first, 0x30, 0xEE, 0x100400, 0x300000").to_binary())
    assert len(tb) == 96
    assert tb[0:4] == b"\xaa\x50\x30\xee"
    assert struct.unpack("<LL", tb[4:12]) == (0x100400, 0x300000)
    assert tb[32:48] == b"\xeb\xeb" + b"\xff" * 14
    assert tb[48:64].hex() == "43033f334087575169839b4061b12726"


def test_multiple_entries_and_encrypted_flag():
    t = PartitionTable.from_csv("first, 0x30, 0xEE, 0x100400, 0x300000\nsecond,0x31, 0xEF,         , 0x100000, encrypted\n")
    tb = strip_ffs(t.to_binary())
    assert len(tb) == 128 and tb[0:2] == tb[32:34] == b"\xaa\x50"
    back = PartitionTable.from_binary(tb, reader="gen_esp32part")
    assert back.entries[1].encrypted and not back.entries[0].encrypted
    assert back.entries[1].offset == 0x400400  # second follows the first, aligned to 4 bytes (v1.2, unknown type)


def test_empty_data_subtype_is_undefined():
    t = PartitionTable.from_csv("storage, data, , , 512k\nstorage2, data, undefined, , 12k\n")
    assert [p.subtype for p in t.entries] == [0x06, 0x06]
    with pytest.raises(InputError, match="^Error at line 1: App partition cannot have an empty subtype$"):
        PartitionTable.from_csv("factory, app, , , 1M")


LONGER_BINARY_TABLE = (
    b"\xaa\x50\x00\x00" + b"\x00\x00\x01\x00" + b"\x00\x00\x10\x00" + b"factory\0" + b"\0" * 8 + b"\0" * 4
    + b"\xaa\x50\x01\x20" + b"\x00\x00\x11\x00" + b"\x00\x02\x00\x00" + b"data" + b"\0" * 12 + b"\0" * 4
    + b"\xaa\x50\x10\x00" + b"\x00\x00\x15\x00" + b"\x00\x10\x00\x00" + b"second" + b"\0" * 10 + b"\0" * 4
    + b"\xeb\xeb" + b"\xff" * 14 + bytes.fromhex("f9bd061b45686f86571a2cd52a1da65b")
    + b"\xff" * 32
)


def test_longer_binary_table_round_trips():
    t = PartitionTable.from_binary(LONGER_BINARY_TABLE, reader="gen_esp32part")
    t.verify()
    assert [(p.label, p.type) for p in t.entries] == [("factory", 0), ("data", 1), ("second", 0x10)]
    assert strip_ffs(t.to_binary()) == LONGER_BINARY_TABLE
    assert strip_ffs(PartitionTable.from_csv(t.to_csv()).to_binary()) == LONGER_BINARY_TABLE


def test_gen_esp32part_reader_errors():
    entry = b"\x00\x00\x10\x00" + b"\x00\x00\x20\x00" + b"0123456789abc\0\0\0" + b"\0" * 4
    with pytest.raises(InputError, match=r"^Invalid magic bytes \(b'OH'\) for partition definition$"):
        PartitionTable.from_binary(b"OHAI" + entry, reader="gen_esp32part")
    with pytest.raises(InputError, match="32 bytes"):
        PartitionTable.from_binary(b"OHAI" + entry[:22], reader="gen_esp32part")
    one = PartitionTable.from_binary(b"\xaa\x50\x30\xee" + entry + b"\xff" * 32, reader="gen_esp32part")
    assert one.entries == [Partition("0123456789abc", 0x30, 0xEE, 0x100000, 0x200000)] and one.md5 == "missing"
    bad_md5 = bytearray(LONGER_BINARY_TABLE)
    bad_md5[120] ^= 1
    with pytest.raises(InputError, match=r"^MD5 checksums don't match! \(computed: 0x[0-9a-f]{32}, parsed: 0x"):
        PartitionTable.from_binary(bytes(bad_md5), reader="gen_esp32part")


def test_csv_output_smart_formatting():
    t = PartitionTable.from_csv("factory,0,2,65536,1048576,")
    rows = t.to_csv().splitlines()
    assert rows[0].startswith("#") and rows[1].startswith("#")
    assert rows[2] == "factory,app,2,0x10000,1M,"
    assert PartitionTable.from_csv(t.to_csv()).entries == t.entries


def test_secure_app_size():
    csv = "ota_0,  app, ota_0, ,  0x101000\nota_1,  app, ota_1, ,  0x100800\n"
    t = PartitionTable.from_csv(csv)
    t.verify()  # v1.2 checks app sizes only for secure boot
    with pytest.raises(InputError, match=r"^Partition ota_1 invalid: Size 0x100800 is not aligned to 0x1000$"):
        t.verify(rules="v1.5")
    with pytest.raises(InputError, match=r"^Partition ota_0 invalid: Size 0x101000 is not aligned to 0x10000$"):
        t.verify(secure="v1")
    with pytest.raises(InputError, match=r"^Partition ota_1 invalid: Size 0x100800 is not aligned to 0x1000$"):
        t.verify(secure="v2")


def test_bad_alignment():
    with pytest.raises(InputError, match=r"Offset.+not aligned"):
        PartitionTable.from_csv("app,app, factory, 32K, 1M", offset=0).verify()
    csv = "nvs,      data, nvs,     0x9420,  0x6000,\nphy_init, data, phy,     ,        0x1000,\nfactory,  app,  factory, ,        1M,\n"
    with pytest.raises(InputError, match=r"Offset.+not aligned"):
        PartitionTable.from_csv(csv, offset=0, rules="v1.5").verify(rules="v1.5")


@pytest.mark.parametrize(
    ("otadata", "message"),
    [
        ("otadata, data, ota, , 0x2000\notadata2, data, ota, , 0x2000", "Found multiple otadata partitions"),
        ("otadata, data, ota, , 0x3000", r"^otadata partition must have size = 0x2000$"),
        ("t1, data, tee_ota, , 0x2000\nt2, data, tee_ota, , 0x2000", "Found multiple TEE otadata partitions"),
        ("t1, data, tee_ota, , 0x1000", r"^TEE otadata partition must have size = 0x2000$"),
    ],
)
def test_otadata_rules(otadata, message):
    t = PartitionTable.from_csv(f"nvs, data, nvs, , 0x4000\n{otadata}\nfactory, app, factory, , 1M\n")
    with pytest.raises(InputError, match=message):
        t.verify()


def test_name_warnings():
    assert "partition type" in PartitionTable.from_csv("app, 1, 2, 32K, 1M", offset=0).warnings()[-1]
    (warning,) = PartitionTable.from_csv("ota_0, app, ota_1, , 1M").warnings()
    assert warning.startswith("WARNING: Partition has name 'ota_0' which is a partition subtype")


def test_size_does_not_fit():
    t = PartitionTable.from_csv("factory, app, factory, 0x10000, 20M")
    t.verify()
    with pytest.raises(InputError, match="does not fit"):
        t.verify(flash_size=16 * MB)


def test_v15_read_only_and_nvs_rules():
    ro = PartitionTable.from_csv("otadata, data, ota, 0xd000, 0x2000, readonly")
    ro.verify()
    with pytest.raises(InputError, match="is always read-write and cannot be read-only"):
        ro.verify(rules="v1.5")
    small = PartitionTable.from_csv("nvs, data, nvs, 0x9000, 0x2000")
    with pytest.raises(InputError, match="must be flagged as 'readonly'"):
        small.verify(rules="v1.5")
    PartitionTable.from_csv("nvs, data, nvs, 0x9000, 0x2000, readonly").verify(rules="v1.5")


def test_bootloader_and_partition_table_rows():
    csv = (
        "bootloader, bootloader, primary, N/A, N/A\npartition_table, partition_table, primary, N/A, N/A\n"
        "FactoryApp, app, factory, , 1M\nOtaBTLDR, bootloader, ota, , N/A\nOtaPrtTable, partition_table, ota, , N/A\n"
        "RecoveryBTLDR, bootloader, recovery, N/A, N/A\n"
    )
    with pytest.raises(InputError, match="Primary bootloader offset is not defined. Please use --primary-bootloader-offset"):
        PartitionTable.from_csv(csv, offset=0x9000)
    t = PartitionTable.from_csv(csv, offset=0x9000, primary_bootloader_offset=0x1000, recovery_bootloader_offset=0x200000)
    t.verify(rules="v1.5")
    assert [(p.offset, p.size) for p in t.entries] == [
        (0x1000, 0x8000), (0x9000, 0x1000), (0x10000, 0x100000), (0x110000, 0x8000), (0x118000, 0x1000), (0x200000, 0x8000)
    ]


def test_parse_errors_name_the_line():
    with pytest.raises(InputError, match=r"^Error at line 2: Value 'nfs' is not valid\. Known keywords: ota, phy, nvs, "):
        PartitionTable.from_csv("# c\nx, data, nfs, , 4K")
    with pytest.raises(InputError, match=r"^Error at line 1: Invalid field value 0xZZ$"):
        PartitionTable.from_csv("x, data, nvs, 0xZZ, 4K")
    with pytest.raises(InputError, match=r"^Error at line 1: CSV flag column contains unknown flag 'secret'$"):
        PartitionTable.from_csv("x, data, nvs, , 4K, encrypted:secret")
    with pytest.raises(InputError, match=r"^Error at line 1: Size field can't be empty$"):
        PartitionTable.from_csv("x, data, nvs")


def test_table_length_limit():
    def table(n):
        return PartitionTable([Partition(f"p{i}", 1, 0x40, 0x10000 + i * 0x1000, 0x1000) for i in range(n)])

    assert len(table(94).to_binary()) == TABLE_MAX_LEN
    with pytest.raises(InputError, match=r"^Binary partition table length \(3072\) longer than max$"):
        table(95).to_binary()
    table(95).to_binary(md5=False)
    with pytest.raises(InputError, match="longer than max"):
        table(96).to_binary(md5=False)


def test_sixteen_byte_label_is_not_nul_terminated():
    t = PartitionTable([Partition("exactly16chars!!", 1, 2, 0x9000, 0x6000), Partition("a-much-longer-label", 1, 2, 0xF000, 0x1000)])
    data = t.to_binary()
    assert data[12:28] == b"exactly16chars!!" and data[28:32] == b"\0" * 4
    labels = [p.label for p in PartitionTable.from_binary(data).entries]
    assert labels == ["exactly16chars!!", "a-much-longer-la"]


# ------------------------------------------------------------------------------------ chip-side readers


def test_bootloader_reads_arduino_committed_table(realdata):
    data = (realdata / "arduino-esp32" / "v1.0.6_idf-v3.3.5" / "default.bin").read_bytes()
    t = PartitionTable.from_binary(data, chip_size=4 * MB)
    assert t.md5 == "missing"
    assert [p.label for p in t.entries] == ["nvs", "otadata", "app0", "app1", "eeprom", "spiffs"]
    assert [p.ota_index for p in t.ota_apps()] == [0, 1]
    assert t.otadata().offset == 0xE000 and t.factory() is None
    assert t.find("eeprom").to_json() == {
        "label": "eeprom", "type": "data", "subtype": 0x99, "offset": 0x290000, "size": 0x1000,
        "encrypted": False, "readonly": False,
    }
    with pytest.raises(PartitionTableInvalid, match="^No MD5 found in partition table$") as err:
        PartitionTable.from_binary(data, reader="app")
    assert err.value.esp_err == "ESP_ERR_NOT_FOUND"


def test_truncated_96_byte_table(realdata):
    """esptool's 96-byte table: three entries, no end marker. Flashed onto erased flash the bootloader takes it."""
    data = (realdata / "esptool" / "images" / "partitions_singleapp.bin").read_bytes()
    assert len(data) == 96
    t = PartitionTable.from_binary(data, chip_size=4 * MB)
    assert [(p.label, p.type_name, p.subtype_name) for p in t.entries] == [
        ("factory", "app", "factory"), ("rfdata", "data", "phy"), ("wifidata", "data", "nvs")
    ]
    assert t.factory().size == 0x100000
    with pytest.raises(InputError, match="^Partition table is missing an end-of-table marker$"):
        PartitionTable.from_binary(data, reader="gen_esp32part")
    with pytest.raises(PartitionTableInvalid, match=r"^partition 0 invalid - offset 0x10000 size 0x100000 exceeds flash chip size 0x100000$") as err:
        PartitionTable.from_binary(data, chip_size=1 * MB)
    assert err.value.esp_err == "ESP_ERR_INVALID_SIZE"


def test_table_cut_inside_an_entry(realdata):
    golden = (realdata / "partitions" / "arduino-esp32_v2.0.4" / "default.bin").read_bytes()
    with pytest.raises(InputError, match="multiple of 32 bytes"):
        PartitionTable.from_binary(golden[:100], reader="gen_esp32part")
    with pytest.raises(PartitionTableInvalid, match=r"^partition 3 invalid - offset 0xffffffff"):
        PartitionTable.from_binary(golden[:100], chip_size=4 * MB)


def two_entries() -> bytes:
    return b"".join(Partition(f"p{i}", 1, 2, 0x9000 + i * 0x1000, 0x1000).to_entry() for i in range(2))


@pytest.mark.parametrize(
    ("table", "esp_err", "message"),
    [
        (b"\xff" * 32, "ESP_ERR_INVALID_STATE", "partition 0 invalid magic number 0xffff"),
        (two_entries() + b"\x12\x34" + b"\xff" * 30, "ESP_ERR_INVALID_STATE", "partition 2 invalid magic number 0x3412"),
        (two_entries() + md5_row(two_entries())[:-1] + b"\0", "ESP_ERR_INVALID_STATE", "Incorrect MD5 checksum"),
        (two_entries() + md5_row(two_entries()) * 2, "ESP_ERR_INVALID_STATE", "Only one MD5 checksum is allowed"),
        (Partition("p", 1, 2, 0x9000, 0x1000).to_entry() * 96, "ESP_ERR_INVALID_STATE",
         "partition table has no terminating entry, not valid"),
    ],
)
def test_bootloader_rejects(table, esp_err, message):
    with pytest.raises(PartitionTableInvalid) as err:
        PartitionTable.from_binary(table)
    assert (err.value.esp_err, str(err.value)) == (esp_err, message)


def test_bootloader_md5_row_in_the_middle_hides_the_last_entry():
    first = Partition("first", 0, 0x10, 0x10000, 0x10000).to_entry()
    table = first + md5_row(first) + Partition("second", 0, 0x11, 0x20000, 0x10000).to_entry()
    boot = PartitionTable.from_binary(table)
    assert [p.label for p in boot.entries] == ["first"] and boot.md5 == "ok"
    gen = PartitionTable.from_binary(table + b"\xff" * 32, reader="gen_esp32part")
    assert [p.label for p in gen.entries] == ["first", "second"]


def test_app_and_inspect_readers_on_a_bad_md5():
    good = PartitionTable([Partition("nvs", 1, 2, 0x9000, 0x6000)]).to_binary()
    bad = bytearray(good)
    bad[60] ^= 0xFF
    with pytest.raises(PartitionTableInvalid, match="^Partition table MD5 mismatch$"):
        PartitionTable.from_binary(bytes(bad), reader="app")
    assert PartitionTable.from_binary(bytes(bad), reader="inspect").md5 == "bad"
    assert PartitionTable.from_binary(good, reader="app").md5 == "ok"


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=TABLE_MAX_LEN))
def test_random_bytes_never_crash_a_reader(data):
    for reader in ("bootloader", "app", "gen_esp32part", "inspect"):
        try:
            table = PartitionTable.from_binary(data, reader=reader, chip_size=4 * MB)
        except InputError:
            continue
        assert all(isinstance(p, Partition) for p in table.entries)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=30, max_size=30), st.binary(min_size=30, max_size=30))
def test_rows_round_trip(entry_body, md5_body):
    entry = b"\xaa\x50" + entry_body
    assert PartitionEntry.build(PartitionEntry.parse(entry)) == entry
    row = b"\xeb\xeb" + md5_body
    assert Md5Row.build(Md5Row.parse(row)) == row


def test_md5_row_and_end_marker_layout():
    assert md5_row(b"") == b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(b"").digest()
    assert EndMarker.build(EndMarker.parse(b"\xff" * 32)) == b"\xff" * 32
    table = PartitionTable([Partition("nvs", 1, 2, 0x9000, 0x6000)]).to_binary(md5=False)
    assert EndMarker.parse(table[32:64]) == b"\xff" * 32


# ------------------------------------------------------------------------------------ property: valid tables round-trip


@st.composite
def valid_tables(draw):
    n = draw(st.integers(1, 20))
    offset = 0x9000
    entries = []
    for i in range(n):
        ptype = draw(st.sampled_from([0, 1, 0x40]))
        if ptype == 0:
            subtype = draw(st.sampled_from(list(SUBTYPES[0].values())))
            offset += -offset % 0x10000
            size = draw(st.integers(1, 32)) * 0x10000
        else:
            subtype = draw(st.sampled_from([s for s in SUBTYPES[1].values() if s not in (0x00, 0x90)] + [0x40, 0xFE]))
            offset += -offset % 0x1000
            size = draw(st.integers(1, 64)) * 0x1000
        label = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=16))
        flags = draw(st.sampled_from([0, 1, 2, 3]))
        entries.append(Partition(f"{label[:13]}{i:03d}"[-16:], ptype, subtype, offset, size, flags))
        offset += size + draw(st.integers(0, 4)) * 0x1000
    return PartitionTable(entries)


@settings(max_examples=150, deadline=None)
@given(valid_tables(), st.booleans())
def test_valid_tables_round_trip(table, md5):
    table.verify()
    data = table.to_binary(md5=md5)
    for reader in ("bootloader", "gen_esp32part", "inspect"):
        back = PartitionTable.from_binary(data, reader=reader)
        assert back.entries == table.entries
        assert back.md5 == ("ok" if md5 else "missing")
    csv = PartitionTable.from_csv(table.to_csv())
    assert csv.entries == table.entries
    assert csv.to_binary(md5=md5) == data


def test_name_tables_cover_spec_1_3():
    assert TYPES == {"bootloader": 2, "partition_table": 3, "app": 0, "data": 1}
    assert SUBTYPES[0]["ota_0"] == 0x10 and SUBTYPES[0]["ota_15"] == 0x1F and SUBTYPES[0]["tee_1"] == 0x31
    assert SUBTYPES[1]["littlefs"] == 0x83 and SUBTYPES[1]["tee_ota"] == 0x90
    assert SUBTYPES[2] == {"primary": 0, "ota": 1, "recovery": 2} and SUBTYPES[3] == {"primary": 0, "ota": 1}


def test_lookups_by_name():
    t = PartitionTable.load((LAYOUTS / "factory_two_ota_4MB.csv").read_bytes())
    assert t.find_first("app", "ota_1").label == "ota_1"
    assert t.find_first(1).label == "nvs"
    assert [p.label for p in t.apps()] == ["factory", "ota_0", "ota_1"]
    assert t.factory().is_factory and t.test() is None and t.find("nope") is None
    assert t.otadata().is_otadata and t.find("ota_1").end == 0x310000


# ------------------------------------------------------------------------------------ layouts shipped in partitions/


def layout_flash_size(path: Path) -> int:
    return int(re.search(r"_(\d+)MB\.csv$", path.name).group(1)) * MB


@pytest.mark.parametrize("path", sorted(LAYOUTS.glob("*.csv")), ids=lambda p: p.name)
def test_shipped_layouts_convert_cleanly(path):
    assert path.read_text().startswith("# esp-ota-emu layout: ")
    flash = layout_flash_size(path)
    for rules in ("v1.2", "v1.5"):
        t = PartitionTable.load(path, rules=rules)
        t.verify(flash_size=flash, rules=rules, secure="v2")
        assert t.warnings(rules=rules) == []
    boot = PartitionTable.from_binary(t.to_binary(), chip_size=flash)
    assert boot.entries == t.entries and boot.md5 == "ok"
    assert boot.otadata() is not None and len(boot.ota_apps()) >= 2


def test_shipped_arduino_layout_matches_arduino_golden(realdata):
    golden = realdata / "partitions" / "arduino-esp32_v2.0.4" / "default.bin"
    assert PartitionTable.load(LAYOUTS / "arduino_default_4MB.csv").to_binary() == golden.read_bytes()


# ------------------------------------------------------------------------------------ the partitions command


def run(*args):
    return CliRunner().invoke(cli, ["partitions", *map(str, args)])


def test_cli_csv_to_binary_and_back(realdata, tmp_path):
    csv = realdata / "partitions" / "arduino-esp32_upstream" / "default_16MB.csv"
    out = tmp_path / "t.bin"
    r = run(csv, "-o", out, "--flash-size", "16MB")
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == csv.with_suffix(".bin").read_bytes()
    r = run(out)
    assert r.exit_code == 0
    assert r.output == PartitionTable.load(out).to_csv()
    back = tmp_path / "t.csv"
    assert run(out, "-o", back).exit_code == 0
    assert PartitionTable.load(back).to_binary() == out.read_bytes()


def test_cli_no_md5_and_listing(realdata, tmp_path):
    csv = realdata / "partitions" / "arduino-esp32_upstream" / "default.csv"
    out = tmp_path / "t.bin"
    assert run(csv, "--no-md5", "-o", out).exit_code == 0
    assert out.read_bytes() == (realdata / "arduino-esp32" / "v1.0.6_idf-v3.3.5" / "default.bin").read_bytes()
    r = run(csv)
    assert r.exit_code == 0
    assert "eeprom" in r.output and "0x00290000" in r.output


def test_cli_json(realdata):
    r = run(realdata / "partitions" / "arduino-esp32_upstream" / "m5stack_partitions_16MB_factory_6_apps.csv", "--json")
    assert r.exit_code == 0
    report = json.loads(r.output)
    assert report["input"] == "csv" and report["offset"] == 0x8000
    first = report["partitions"][0]
    assert set(first) == {"label", "type", "subtype", "offset", "size", "encrypted", "readonly"}
    apps = [p for p in report["partitions"] if p["type"] == "app"]
    assert {p["subtype"] for p in apps} >= {"ota_0", "ota_1", "factory"}


@pytest.mark.parametrize("name", ["rainmaker_8MB.csv", "zigbee_zczr.csv"])
def test_cli_rejects_with_the_tool_message(realdata, name):
    rel = f"arduino-esp32_upstream/{name}"
    r = CliRunner().invoke(cli, ["partitions", str(realdata / "partitions" / rel)])
    assert r.exit_code == EXIT_BAD_INPUT
    assert r.output.strip() == f"error: {gen_log(realdata)[rel]}"


def test_cli_bad_inputs(tmp_path, realdata):
    r = run(tmp_path / "missing.csv")
    assert r.exit_code == EXIT_BAD_INPUT and r.output.count("\n") == 1
    big = run(realdata / "partitions" / "arduino-esp32_upstream" / "default_16MB.csv", "--flash-size", "4MB")
    assert big.exit_code == EXIT_BAD_INPUT and "does not fit in configured flash size 4MB" in big.output
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xaa\x50" + b"\x00" * 40)
    r = run(junk)
    assert r.exit_code == EXIT_BAD_INPUT and "multiple of 32 bytes" in r.output
    assert run(junk, "--offset", "banana").exit_code == 2


def test_cli_warnings_go_to_stderr(tmp_path):
    csv = tmp_path / "w.csv"
    csv.write_text("ota_0, app, ota_1, , 1M\n")
    r = CliRunner().invoke(cli, ["partitions", str(csv), "--json"])
    assert r.exit_code == 0
    assert "WARNING" in r.stderr and json.loads(r.stdout)["warnings"] == [r.stderr.strip()]


@pytest.mark.parametrize("row", ["big, 0x9000, 0x01, , 4K", "big, data, 0x100, , 4K", "neg, -1, 0, , 4K"])
def test_type_and_subtype_must_fit_one_byte(row):
    with pytest.raises(InputError, match="one byte"):
        PartitionTable.from_csv(row + "\n")
