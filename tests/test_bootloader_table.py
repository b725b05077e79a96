"""Every combination of the two otadata entries x layouts x rollback / anti-rollback, against a plain
second reading of the spec (ESP_FORMATS.md §4.3-4.6) written here, independently of bootloader.py.

Per case the emulated bootloader runs on a real flash (a real ESP-IDF 4.4.2 bootloader, a table made
by our gen_esp32part, the firmware samples as apps); we compare the booted partition, the exact bytes
of both otadata sectors afterwards, the sectors written and the eFuse secure version.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from dataclasses import dataclass

import pytest

from esp_ota_emu.bootloader import Bootloader
from esp_ota_emu.device import Device
from helpers_flash import make_flash, sample, write_otadata

BLANK = 0xFFFFFFFF
NEW, PENDING_VERIFY, VALID, INVALID, ABORTED, UNDEFINED = 0, 1, 2, 3, 4, 0xFFFFFFFF
STATES = (NEW, PENDING_VERIFY, VALID, INVALID, ABORTED, UNDEFINED)
SEQS = (BLANK, 0, 1, 2, 3, 6)  # blank, 0 (wraps to slot 0xFFFFFFFF % n), small, and past the slot count
OTADATA = 0xD000


def crc(seq: int) -> int:
    # spec §4.2: CRC-32 (reflected, poly 0xEDB88320) of the little-endian seq, init 0xFFFFFFFF
    return zlib.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


def entry_bytes(seq: int, state: int, stored_crc: int) -> bytes:
    # spec §4.1: u32 seq, 20 label bytes (0xFF), u32 state, u32 crc
    return struct.pack("<I", seq) + b"\xff" * 20 + struct.pack("<II", state, stored_crc)


@dataclass(frozen=True)
class Layout:
    name: str
    apps: tuple[tuple[str, str, int, str], ...]  # (label, subtype, offset, sample or "" for erased)
    efuse: int  # the eFuse secure version the device starts with

    def csv(self) -> str:
        rows = ["nvs, data, nvs, 0x9000, 0x4000,", "otadata, data, ota, 0xd000, 0x2000,"]
        rows += [f"{label}, app, {sub}, 0x{off:x}, 0x20000," for label, sub, off, _ in self.apps]
        return "\n".join(rows) + "\n"


SV = {"v1": 0, "v2": 0, "v3": 2, "broken": 0}  # the samples' secure_version (README), "" = erased: no app desc
LAYOUTS = [
    Layout("factory_2ota", (("factory", "factory", 0x10000, "v1"), ("ota_0", "ota_0", 0x30000, "v3"),
                            ("ota_1", "ota_1", 0x50000, "broken")), efuse=0),
    Layout("2ota", (("ota_0", "ota_0", 0x10000, "v1"), ("ota_1", "ota_1", 0x30000, "v2")), efuse=0),
    Layout("4ota", (("ota_0", "ota_0", 0x10000, "v2"), ("ota_1", "ota_1", 0x30000, "broken"),
                    ("ota_2", "ota_2", 0x50000, "v3"), ("ota_3", "ota_3", 0x70000, "")), efuse=1),
    Layout("gap", (("app_a", "ota_0", 0x10000, "v1"), ("app_c", "ota_2", 0x30000, "v2"),
                   ("app_d", "ota_3", 0x50000, "v3")), efuse=0),
]
SUBTYPE = {"factory": 0x00, "test": 0x20, **{f"ota_{i}": 0x10 + i for i in range(16)}}


def reference_boot(layout: Layout, entries: list[tuple[int, int, int]], rollback: bool, anti_rollback: bool):
    """The spec's pseudocode, read plainly. Returns (booted label, [sector bytes], written sector offsets, eFuse)."""
    efuse = layout.efuse
    factory, ota, app_count = None, {}, 0
    for label, sub, _, _ in layout.apps:
        st = SUBTYPE[sub]
        if st == 0x00:
            factory = label
        elif 0x10 <= st <= 0x1F:
            ota[st & 0x0F] = label
            app_count += 1
    content = {label: name for label, _, _, name in layout.apps}
    e = [list(x) for x in entries]  # [seq, state, crc]
    written = []

    def write(i):
        written.append(OTADATA + 0x1000 * i)

    def invalid(x):
        return x[0] == BLANK or x[1] in (INVALID, ABORTED)

    def valid(x):
        return not invalid(x) and x[2] == crc(x[0])

    def initial(x):
        return x[0] == BLANK or x[2] != crc(x[0])

    def select(ok):
        if ok[0] and ok[1]:
            return 0 if e[0][0] == max(e[0][0], e[1][0]) else 1
        return 0 if ok[0] else 1 if ok[1] else -1

    def slot_label(index):
        if index == -1:
            return factory
        return ota.get(index) if 0 <= index < app_count else None

    def anti_rollback_ok(label):
        if not anti_rollback:
            return True
        return label is not None and content[label] != "" and SV[content[label]] >= efuse

    def burn(label):
        nonlocal efuse
        if label is not None and content[label] != "" and SV[content[label]] > efuse:
            efuse = SV[content[label]]

    has_initial = False
    if rollback:
        for i in (0, 1):
            if e[i][1] == PENDING_VERIFY:
                e[i][1] = ABORTED
                write(i)
    boot = -1
    if not anti_rollback:
        if (invalid(e[0]) and invalid(e[1])) or app_count == 0:
            if factory is not None:
                boot = -1
            else:
                boot = 0
                has_initial = initial(e[0]) and initial(e[1])
            active = None
        else:
            active = select([valid(e[0]), valid(e[1])])
    else:
        if initial(e[0]) and initial(e[1]):
            has_initial, active = True, None
        else:
            ok = [valid(x) and anti_rollback_ok(slot_label(((x[0] - 1) % 2**32) % app_count)) for x in e]
            active = select(ok)
    if active is not None and active != -1:
        boot = ((e[active][0] - 1) % 2**32) % app_count
        if rollback and e[active][1] == NEW:
            e[active][1] = PENDING_VERIFY
            write(active)
        if anti_rollback and e[active][1] == VALID:
            burn(slot_label(boot))

    def loads(label):
        return label is not None and content[label] in ("v1", "v2", "v3") and anti_rollback_ok(label)

    booted = None
    for index in [*range(boot, -2, -1), *range(boot + 1, app_count)]:
        label = slot_label(index)
        if loads(label):
            booted = label
            if index >= 0 and has_initial:
                e[0] = [index + 1, VALID, crc(index + 1)]
                write(0)
                if anti_rollback:
                    burn(label)
            break
    sectors = [entry_bytes(*x).ljust(0x1000, b"\xff") if x[0] != "erased" else None for x in e]
    return booted, sectors, written, efuse


def entry_space():
    """Every seq x right CRC x every state; with a wrong CRC (or a blank seq) an entry can never be
    selected, so there only the three state classes the spec tells apart are kept: PENDING_VERIFY
    (rewritten by a rollback bootloader), ABORTED (the ``invalid`` predicate) and VALID (neither)."""
    for seq, crc_right in itertools.product(SEQS, (True, False)):
        states = STATES if crc_right and seq != BLANK else (PENDING_VERIFY, ABORTED, VALID)
        for state in states:
            yield seq, state, crc(seq) if crc_right else crc(seq) ^ 0x00010000


@pytest.fixture(scope="module")
def flashes(realdata, tmp_path_factory):
    out = {}
    for layout in LAYOUTS:
        path = tmp_path_factory.mktemp(layout.name) / "flash.bin"
        apps = {label: sample(name) for label, _, _, name in layout.apps if name}
        out[layout.name] = make_flash(path, realdata, layout.csv(), apps, size=1 << 20)
    return out


@pytest.mark.parametrize("anti_rollback", [False, True], ids=["arb_off", "arb_on"])
@pytest.mark.parametrize("rollback", [False, True], ids=["rb_off", "rb_on"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[x.name for x in LAYOUTS])
def test_every_otadata_pair_boots_as_the_spec_says(flashes, layout, rollback, anti_rollback):
    entries = list(entry_space())
    dev = Device.open(flashes[layout.name], rollback=rollback, anti_rollback=anti_rollback)
    profile = dev.settings.profile()
    mismatches = []
    try:
        for e0, e1 in itertools.product(entries, entries):
            write_otadata(dev.flash, OTADATA, entry_bytes(*e0), entry_bytes(*e1))
            dev.settings.efuse_secure_version = layout.efuse
            result = Bootloader(dev, profile, power_on=False).run()
            booted = result.booted.label if result.booted else None
            want = reference_boot(layout, [e0, e1], rollback, anti_rollback)
            got = (booted, [dev.flash.read(OTADATA, 0x1000), dev.flash.read(OTADATA + 0x1000, 0x1000)],
                   [o for o, n in result.writes], dev.settings.efuse_secure_version)
            if got != want:
                mismatches.append((e0, e1, got[0], want[0], got[2], want[2], got[3], want[3]))
    finally:
        dev.close()
    assert len(entries) == 5 * 6 + 7 * 3
    assert not mismatches, f"{len(mismatches)} cases differ, first: {mismatches[:3]}"
