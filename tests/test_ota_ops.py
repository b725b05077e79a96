"""esp_ota_begin / write / end / abort and partition selection, per ESP-IDF release, on real flashes.

Which sectors get erased is read off the flash: the slot is filled with junk first, so every 0xFF
sector afterwards was erased by the call under test.
"""

from __future__ import annotations

import pytest

from esp_ota_emu.device import Device
from esp_ota_emu.errors import EspError
from esp_ota_emu.flash import Flash
from esp_ota_emu.formats.otadata import OtaState
from esp_ota_emu.ota_ops import OTA_SIZE_UNKNOWN, OTA_WITH_SEQUENTIAL_WRITES
from helpers_flash import entry, make_flash, real_app, sample

LAYOUT = """nvs, data, nvs, 0x9000, 0x4000,
otadata, data, ota, 0xd000, 0x2000,
factory, app, factory, 0x10000, 0x20000,
ota_0, app, ota_0, 0x30000, 0x20000,
ota_1, app, ota_1, 0x50000, 0x20000,
"""
SLOT = 0x30000  # ota_0


def erased_sectors(dev, base=SLOT, size=0x20000):
    return [i for i in range(size // 0x1000) if dev.flash.is_erased(base + i * 0x1000, 0x1000)]


@pytest.fixture
def dev_factory(realdata, tmp_path):
    def make(release="v5", rollback=False, otadata=None):
        path = make_flash(tmp_path / f"f{release}{rollback}.bin", realdata, LAYOUT, {"factory": sample("v1")},
                          size=1 << 20, otadata=otadata)
        dev = Device.open(path, idf_release=release, rollback=rollback)
        dev.flash.write_raw(SLOT, b"\x5a" * 0x20000)  # junk in ota_0
        dev.boot(power_on=True)
        return dev
    return make


@pytest.mark.parametrize("release", ["v4", "v5", "newest"])
@pytest.mark.parametrize("size,sectors", [(0x1000, [0]), (0x1001, [0, 1]), (0, list(range(32))),
                                          (OTA_SIZE_UNKNOWN, list(range(32)))])
def test_begin_erases_the_aligned_image_size(dev_factory, release, size, sectors):
    dev = dev_factory(release)
    dev.ota.begin(dev.partitions.find("ota_0"), size)
    assert erased_sectors(dev) == sectors


def test_begin_rejects_oversized_running_and_factory(dev_factory):
    dev = dev_factory()
    ota = dev.ota
    with pytest.raises(EspError) as err:
        ota.begin(dev.partitions.find("ota_0"), 0x20001)
    assert err.value.esp_err == "ESP_ERR_INVALID_SIZE"
    for label, name in (("factory", "ESP_ERR_OTA_PARTITION_CONFLICT"), ("nvs", "ESP_ERR_INVALID_ARG")):
        with pytest.raises(EspError) as err:
            ota.begin(dev.partitions.find(label), 0x1000)
        assert err.value.esp_err in (name, "ESP_ERR_INVALID_ARG")
    assert ota.get_next_update_partition(None).label == "ota_0"  # from factory: the first OTA slot
    assert ota.get_next_update_partition(dev.partitions.find("ota_1")).label == "ota_0"  # wraps


@pytest.mark.parametrize("release,sectors", [
    ("v4.4.6", [1]), ("v4.4.7", []), ("v5.0.5", [1]), ("v5.0.6", []), ("v5.1.2", [1]), ("v5.1.3", []),
    ("v5.2", []), ("v4", [1]), ("v5", []), ("newest", []),
])
def test_sequential_erase_touches_only_written_sectors(dev_factory, release, sectors):
    """A 4 KiB write on a sector boundary also erased the next sector until the fix that reached
    v4.4.7, v5.0.6, v5.1.3 and v5.2."""
    dev = dev_factory(release)
    ota = dev.ota
    image = sample("v2")
    h = ota.begin(dev.partitions.find("ota_0"), OTA_WITH_SEQUENTIAL_WRITES)
    assert erased_sectors(dev) == []
    data = image[:0x1000]
    ota.write(h, data)
    assert dev.flash.read(SLOT, 0x1000) == data  # erased before programming (NOR can only clear bits)
    assert erased_sectors(dev) == sectors
    ota.abort(h)


def test_write_checks_the_magic_and_end_verifies(dev_factory):
    dev = dev_factory()
    ota, slot = dev.ota, dev.partitions.find("ota_0")
    h = ota.begin(slot, OTA_SIZE_UNKNOWN)
    with pytest.raises(EspError) as err:
        ota.write(h, b"<html>")
    assert err.value.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED" and "0x3c" in str(err.value)
    ota.write(h, b"")  # size 0: ESP_OK
    with pytest.raises(EspError) as err:
        ota.end(h)
    assert err.value.esp_err == "ESP_ERR_INVALID_ARG"  # nothing written; the handle is gone
    with pytest.raises(EspError) as err:
        ota.abort(h)
    assert err.value.esp_err == "ESP_ERR_NOT_FOUND"

    h = ota.begin(slot, OTA_SIZE_UNKNOWN)
    broken = sample("broken")
    for i in range(0, len(broken), 100):
        ota.write(h, broken[i : i + 100])
    with pytest.raises(EspError) as err:
        ota.end(h)
    assert err.value.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED"
    with pytest.raises(EspError) as err:
        ota.write(h, b"\xe9")
    assert err.value.esp_err == "ESP_ERR_INVALID_ARG"


BIG_SLOTS = """nvs, data, nvs, 0x9000, 0x4000,
otadata, data, ota, 0xd000, 0x2000,
factory, app, factory, 0x10000, 0x30000,
ota_0, app, ota_0, 0x40000, 0x100000,
ota_1, app, ota_1, 0x140000, 0x100000,
"""


def test_end_hashes_only_what_the_running_hash_has_not_taken(realdata, tmp_path, monkeypatch):
    """The point of the running SHA-256: over esp_ota_write and esp_ota_end every hashed byte of the
    image is read from the flash once, not a second time for the verification."""
    image = real_app(realdata)
    path = make_flash(tmp_path / "f.bin", realdata, BIG_SLOTS, {"factory": sample("v1")})
    hashed = []
    original = Flash._hash_into
    monkeypatch.setattr(Flash, "_hash_into", lambda self, sha, start, end: (hashed.append(end - start),
                                                                           original(self, sha, start, end)))
    with Device.open(path) as dev:
        dev.boot(power_on=True)
        hashed.clear()
        slot = dev.partitions.find("ota_0")
        h = dev.ota.begin(slot, OTA_WITH_SEQUENTIAL_WRITES)
        for i in range(0, len(image), 4096):
            dev.ota.write(h, image[i : i + 4096])
        dev.ota.end(h)
    assert sum(hashed) == len(image) - 32  # the digest itself is not hashed
    assert len(hashed) >= 2  # at least one piece taken while the slot was written, the rest at the end


@pytest.mark.parametrize("changed_at", [None, 0x20, 0x1234, 0x80000])
def test_end_sees_bytes_changed_after_the_slot_was_written(realdata, tmp_path, changed_at):
    """The emulator hashes the slot while esp_ota_write fills it, so that esp_ota_end need not read the
    whole image again; bytes changed afterwards anywhere in the image must still fail its SHA-256, as a
    device re-reading the flash in esp_image_verify would find. Two bytes lose the same bit, so the
    XOR checksum still matches and only the hash can tell."""
    image = real_app(realdata)  # 849 KB with its SHA-256 appended
    path = make_flash(tmp_path / "f.bin", realdata, BIG_SLOTS, {"factory": sample("v1")})
    with Device.open(path) as dev:
        dev.boot(power_on=True)
        slot = dev.partitions.find("ota_0")
        h = dev.ota.begin(slot, OTA_WITH_SEQUENTIAL_WRITES)
        for i in range(0, len(image), 4096):
            dev.ota.write(h, image[i : i + 4096])
        if changed_at is None:
            dev.ota.end(h)
            return
        for at in [changed_at + i for i in range(256) if image[changed_at + i] & 1][:2]:
            dev.flash.program(slot.offset + at, bytes([image[at] & 0xFE]))
        with pytest.raises(EspError) as err:
            dev.ota.end(h)
    assert err.value.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED"
    assert "Image hash failed" in str(err.value)


@pytest.mark.parametrize("release", ["v4", "v5.0.5", "v5.1.2"])
def test_size_zero_write_looks_up_the_handle_before_the_fix(dev_factory, release):
    with pytest.raises(EspError) as err:
        dev_factory(release).ota.write(99, b"")
    assert err.value.esp_err == "ESP_ERR_INVALID_ARG"
    dev_factory("v5.1.3").ota.write(99, b"")  # returns before the lookup


def test_begin_with_rollback_invalidates_the_inactive_entry_from_v5_5(dev_factory):
    """Spec §11.6: esp_ota_begin() of v5.5 and newer erases the inactive otadata sector before any data."""
    for release, erased in (("newest", True), ("v5.5", True), ("v5.4.4", False), ("v5", False)):
        dev = dev_factory(release, rollback=True, otadata=(entry(1, OtaState.VALID), entry(2, OtaState.VALID)))
        dev.flash.write_raw(SLOT, sample("v1"))
        dev.flash.write_raw(0x50000, sample("v2"))
        assert dev.boot().booted.label == "ota_1"
        dev.ota.begin(dev.partitions.find("ota_0"), OTA_SIZE_UNKNOWN)
        assert dev.flash.is_erased(0xD000, 0x1000) is erased
        assert dev.flash.read(0xE000, 32) == entry(2, OtaState.VALID)


def test_esp_ota_resume_exists_from_v5_3_3_and_v5_4_2(dev_factory):
    for release, exists in (("v5.3.2", False), ("v5.3.3", True), ("v5.4.1", False), ("v5.4.2", True)):
        dev = dev_factory(release)
        slot = dev.partitions.find("ota_0")
        if exists:
            handle = dev.ota.resume(slot, OTA_WITH_SEQUENTIAL_WRITES, 0x1000)
            assert dev.ota.wrote_size(handle) == 0x1000
        else:
            with pytest.raises(EspError) as err:
                dev.ota.resume(slot, OTA_WITH_SEQUENTIAL_WRITES, 0x1000)
            assert err.value.esp_err == "ESP_ERR_NOT_SUPPORTED"
        dev.close()


def test_get_boot_partition_defaults(dev_factory):
    dev = dev_factory()
    assert dev.ota.get_boot_partition().label == "factory"  # blank otadata
    dev.flash.write_raw(0xD000, entry(2))
    assert dev.ota.get_boot_partition().label == "ota_1"
    dev.flash.write_raw(0xD000, entry(2, crc=0))  # bad CRC but not "invalid": no active entry -> default
    assert dev.ota.get_boot_partition().label == "factory"


@pytest.mark.parametrize("release,refused", [("v6.0.2", False), ("v6.1", True)])
def test_second_begin_on_a_partition_in_progress(dev_factory, release, refused):
    """v6.1's esp_ota_begin and esp_ota_resume refuse a partition that an unfinished OTA writes
    (ESP_ERR_OTA_ALREADY_IN_PROGRESS), before erasing anything; earlier releases hand out a second
    handle. Ending or aborting the first handle, or a reset, frees the partition."""
    dev = dev_factory(release)
    ota_0, ota_1 = dev.partitions.find("ota_0"), dev.partitions.find("ota_1")
    first = dev.ota.begin(ota_0, OTA_WITH_SEQUENTIAL_WRITES)
    dev.ota.write(first, sample("v2")[:0x1000])
    if refused:
        for again in (lambda: dev.ota.begin(ota_0, 0), lambda: dev.ota.resume(ota_0, 0, 0x1000)):
            with pytest.raises(EspError) as err:
                again()
            assert err.value.esp_err == "ESP_ERR_OTA_ALREADY_IN_PROGRESS" and "ota_0" in err.value.message
        assert not dev.flash.is_erased(SLOT, 0x1000) and not dev.flash.is_erased(SLOT + 0x1000, 0x1000)
    else:
        second = dev.ota.begin(ota_0, 0)  # erases the whole slot under the first handle
        assert second != first and dev.flash.is_erased(SLOT, 0x20000)
        dev.ota.abort(second)
    dev.ota.abort(dev.ota.begin(ota_1, 0))  # another partition is free in every release
    dev.ota.abort(first)
    dev.ota.abort(dev.ota.begin(ota_0, OTA_WITH_SEQUENTIAL_WRITES))
    dev.ota.begin(ota_0, OTA_WITH_SEQUENTIAL_WRITES)
    dev.boot()  # a reset forgets the unfinished OTA
    dev.ota.abort(dev.ota.begin(ota_0, OTA_WITH_SEQUENTIAL_WRITES))


@pytest.mark.parametrize("release,leaks", [("v5.3.2", False), ("v5.3.3", True), ("v6.0.2", True), ("v6.1", True)])
def test_failed_erase_in_begin_leaves_the_ota_registered(dev_factory, release, leaks):
    """From v5.3.3 esp_ota_begin registers the OTA (esp_ota_init_entry) before the erase, and an erase
    that fails (a size past the slot) returns without unregistering it. Nothing shows until v6.1, whose
    conflict check then refuses the slot until a reset."""
    dev = dev_factory(release)
    ota_0 = dev.partitions.find("ota_0")
    with pytest.raises(EspError) as err:
        dev.ota.begin(ota_0, 0x20001)
    assert err.value.esp_err == "ESP_ERR_INVALID_SIZE"
    assert len(dev.ota._handles) == (1 if leaks else 0)
    if release == "v6.1":
        with pytest.raises(EspError) as err:
            dev.ota.begin(ota_0, OTA_WITH_SEQUENTIAL_WRITES)
        assert err.value.esp_err == "ESP_ERR_OTA_ALREADY_IN_PROGRESS" and "reset" in err.value.message
        dev.boot()
    dev.ota.abort(dev.ota.begin(ota_0, OTA_WITH_SEQUENTIAL_WRITES))
