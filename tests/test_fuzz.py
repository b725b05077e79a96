"""Property-based fuzzing of every input format: never an uncaught exception, never a write outside the slot.

Inputs start from real files (tables, images, otadata, signature sectors, pre-encrypted images from
the real-data set) and are mutated by hypothesis; random CSVs are built from the grammar's tokens.
``make fuzz`` runs the same tests with many more examples (``ESP_OTA_EMU_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from esp_ota_emu.device import Device, DeviceSettings
from esp_ota_emu.errors import EspError, InputError
from esp_ota_emu.faults import UndoLog
from esp_ota_emu.flash import SECTOR_SIZE
from esp_ota_emu.formats.encrypted_image import HEADER_SIZE as ENC_HEADER_SIZE
from esp_ota_emu.formats.otadata import build_entry
from esp_ota_emu.formats.signature import parse_signature_sector
from esp_ota_emu.https_ota.api import https_ota
from esp_ota_emu.image import parse_image, verify_image
from esp_ota_emu.ota_ops import OTA_WITH_SEQUENTIAL_WRITES
from esp_ota_emu.partitions import PartitionTable
from esp_ota_emu.security.encrypted_img import EncryptedImageDecrypter
from esp_ota_emu.security.keys import load_private_key
from esp_ota_emu.security.sbv2 import check_signature_sector
from esp_ota_emu.testserver import serve_files

EXAMPLES = int(os.environ.get("ESP_OTA_EMU_FUZZ_EXAMPLES", "60"))
SAMPLES = Path(__file__).resolve().parents[1] / "firmware_samples"
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MERGED = "derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"
APP = "arduino-esp32/v1.0.6_idf-v3.3.5/StartCounter.ino.bin"
SIGNED = "derived/esp32c6_zb_pzem.sbv2_ecdsa256_signed.bin"
ENC = "idf-extra-components/esp_encrypted_img"
APP1, SLOT_SIZE, OTADATA = 0x150000, 0x140000, 0xE000


def mutations(size: int, max_edits: int = 8, min_edits: int = 1):
    """(offset, byte) edits within the first ``size`` bytes."""
    return st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=min_edits, max_size=max_edits)


def mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for offset, value in edits:
        buf[offset % len(buf)] = value
    return bytes(buf)


class Blob(bytes):
    """Real file contents, shown by their size in hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"


@pytest.fixture(scope="module")
def merged(realdata) -> bytes:
    return Blob((realdata / MERGED).read_bytes())


@pytest.fixture(scope="module")
def app(realdata) -> bytes:
    return Blob((realdata / APP).read_bytes())


# -- partition tables ---------------------------------------------------------------------------------
@FUZZ
@given(edits=mutations(0x100, 12), reader=st.sampled_from(["bootloader", "app", "gen_esp32part", "inspect"]))
def test_mutated_partition_tables(merged, edits, reader):
    data = mutate(merged[0x8000:0x8C00], edits)
    try:
        table = PartitionTable.from_binary(data, reader=reader, chip_size=4 << 20)
    except InputError:
        return
    for p in table.entries:
        assert p.offset >= 0 and p.size >= 0


CSV_FIELDS = st.sampled_from(
    ["nvs", "otadata", "app0", "app", "data", "ota", "ota_0", "ota_1", "factory", "test", "spiffs", "fat",
     "0x9000", "0x10000", "0x140000", "1M", "64K", "4K", "-0x1000", "", " ", "encrypted", "readonly", "0", "0x40",
     "0xfe", "coredump", "nvs_keys", "littlefs", "#", "0x8000", "100", "0x3F0000"]
)
CSV_LINES = st.lists(st.lists(CSV_FIELDS, min_size=0, max_size=7).map(",".join), min_size=0, max_size=10)


@FUZZ
@given(lines=CSV_LINES, rules=st.sampled_from(["v1.2", "v1.5"]))
def test_random_csvs(lines, rules):
    try:
        table = PartitionTable.from_csv("\n".join(lines), rules=rules)
        binary = table.to_binary()  # gen_esp32part accepts e.g. type 0x9000 in a CSV, then fails to pack it
    except InputError:
        return
    # whatever packs, reads back the same
    back = PartitionTable.from_binary(binary, reader="gen_esp32part")
    assert [(p.label, p.offset, p.size) for p in back.entries] == [(p.label, p.offset, p.size) for p in table.entries]


# -- images ---------------------------------------------------------------------------------------------
@FUZZ
@given(edits=mutations(0x400, 10), cut=st.integers(24, 0x8000))
def test_mutated_image_headers_and_segments(app, edits, cut):
    data = mutate(app[:cut], edits)
    try:
        parse_image(memoryview(data), 0, len(data), layout="esp32")
    except InputError:
        pass
    result = verify_image(memoryview(data), 0, len(data), chip="esp32", chip_rev=300, load=True)
    assert not result.ok or result.image is not None


# -- otadata ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def device(tmp_path_factory, realdata):
    """One real device for the module; every example leaves it as it found it (undo log)."""
    path = tmp_path_factory.mktemp("fuzz") / "flash.bin"
    shutil.copyfile(realdata / MERGED, path)
    dev = Device.open(path)
    dev.power_on_if_needed()  # app0 runs
    undo = UndoLog(dev.flash)
    yield dev, undo
    dev.close()


def rewind(dev: Device, undo: UndoLog) -> None:
    """Put the module's device back as it was: flash by undo log, default settings, app0 running."""
    undo.restore(0)
    dev.settings = DeviceSettings()
    dev.state.running = "app0"


SEQS = st.one_of(st.sampled_from([0, 1, 2, 3, 0xFFFFFFFF, 0xFFFFFFFE, 0x80000000]), st.integers(0, 0xFFFFFFFF))
STATES = st.sampled_from([0, 1, 2, 3, 4, 5, 0xFFFFFFFF, 7])
ENTRY = st.one_of(
    st.tuples(SEQS, STATES).map(lambda t: build_entry(t[0], t[1])),
    st.binary(min_size=32, max_size=32),
    st.just(b"\xff" * 32),
)


@FUZZ
@given(e0=ENTRY, e1=ENTRY, rollback=st.booleans(), anti_rollback=st.booleans(),
       release=st.sampled_from(["v4", "v4.4.7", "v5.0.5", "v5", "v5.5.2", "newest"]))
def test_any_otadata_boots_and_writes_only_otadata(device, e0, e1, rollback, anti_rollback, release):
    dev, undo = device
    original_otadata = dev.flash.read(OTADATA, 0x2000)
    dev.flash.write_raw(OTADATA, e0)
    dev.flash.write_raw(OTADATA + SECTOR_SIZE, e1)
    try:
        dev.settings.rollback, dev.settings.anti_rollback, dev.settings.idf_release = rollback, anti_rollback, release
        dev.settings.efuse_secure_version = 0
        result = dev.boot(power_on=True)
        assert result.booted is not None and result.booted.label == "app0"  # app1 is empty: app0 is the only app
        ota = dev.ota
        ota.get_boot_partition()
        ota.check_rollback_is_possible()
        ota.get_last_invalid_partition()
        try:
            ota.mark_app_valid_cancel_rollback()
        except EspError:
            pass
        assert all(OTADATA <= a and b <= OTADATA + 0x2000 for a, b in undo.ranges())
    finally:
        rewind(dev, undo)
        dev.flash.write_raw(OTADATA, original_otadata)


# -- a mutated image through the whole OTA path ---------------------------------------------------------------
@FUZZ
@given(edits=mutations(0x1000, 6, 0), length=st.one_of(st.integers(1024, 0x6000), st.none()))
@example(edits=[(27, 0x10)], length=None)  # found by make fuzz: segment 0 load address 0x10xxxxxx
def test_mutated_ota_images_never_write_outside_the_slot(device, app, edits, length):
    """Truncated or edited images (or the intact one, length None and no edits) through begin/write/end/set_boot."""
    dev, undo = device
    image = mutate(app[:length], edits) if edits else app[:length]
    try:
        ota = dev.ota
        target = ota.get_next_update_partition(None)
        assert target.label == "app1"
        try:
            handle = ota.begin(target, OTA_WITH_SEQUENTIAL_WRITES)
            for pos in range(0, len(image), 1024):
                ota.write(handle, image[pos : pos + 1024])
            ota.end(handle)
            ota.set_boot_partition(target)
            switched = True
        except EspError:
            switched = False
        allowed = ((APP1, APP1 + SLOT_SIZE), (OTADATA, OTADATA + 0x2000))
        assert all(any(lo <= a and b <= hi for lo, hi in allowed) for a, b in undo.ranges())
        if length is None and not edits:
            assert switched
        result = dev.boot()
        assert result.booted is not None
        assert dev.verify_partition(result.booted).ok
        if not switched:
            assert result.booted.label == "app0"
        elif result.booted.label == "app0":
            # esp_ota_end verifies without loading (ESP_IMAGE_VERIFY); only the bootloader's load checks
            # where segments go (e.g. a load address edited to 0x10xxxxxx): it refuses app1 and falls back.
            assert any(line.startswith("app1: image invalid") for line in result.trace), result.trace
    finally:
        rewind(dev, undo)


# -- a mutated bootloader or partition table through a v5.5 final-partition update ------------------------------
@pytest.fixture(scope="module")
def finals(realdata) -> dict[str, bytes]:
    return {
        "bootloader": Blob((realdata / "esp-serial-flasher/hello-world_2025-08/ESP32/bootloader.bin").read_bytes()),
        "partition_table": Blob((realdata / "partitions/arduino-esp32_upstream/min_spiffs.bin").read_bytes()),
    }


@FUZZ
@given(final=st.sampled_from(["bootloader", "partition_table"]), edits=mutations(0xC00, 6, 0))
def test_mutated_bootloaders_and_tables_are_copied_only_when_the_next_boot_accepts_them(device, finals, final, edits):
    """Staged in app1 and copied by esp_ota_end: nothing outside app1 and the final region is written,
    and what esp_ota_end lets through, the next reset reads: the ROM loads the bootloader, the
    bootloader verifies the table. What it refuses leaves the final region as it was."""
    dev, undo = device
    image = mutate(finals[final], edits)
    try:
        dev.settings.idf_release = "v5.5.5"
        ota = dev.ota
        target, dest = ota.get_next_update_partition(None), dev.find_partition(final)
        before = dev.flash.read(dest.offset, dest.size)
        try:
            handle = ota.begin(target, OTA_WITH_SEQUENTIAL_WRITES)
            ota.set_final_partition(handle, dest, True)
            for pos in range(0, len(image), 1024):
                ota.write(handle, image[pos : pos + 1024])
            ota.end(handle)
            copied = True
        except EspError:
            copied = False
        allowed = ((APP1, APP1 + SLOT_SIZE), (dest.offset, dest.end))
        assert all(any(lo <= a and b <= hi for lo, hi in allowed) for a, b in undo.ranges())
        stored = dev.flash.read(dest.offset, dest.size)
        assert stored == (dev.flash.read(APP1, dest.size) if copied else before)
        if not edits:
            assert copied
        trace = dev.boot().trace
        assert not any(line.startswith(("2nd-stage bootloader", "Failed to verify partition table")) for line in trace)
    finally:
        rewind(dev, undo)


# -- Secure Boot V2 signature blocks ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signed(realdata):
    data = (realdata / SIGNED).read_bytes()
    image = parse_image(memoryview(data), 0, len(data))
    sector = image.signature_sector_offset
    return Blob(data[:sector]), Blob(data[sector : sector + 0x1000])


@FUZZ
@given(edits=mutations(3 * 1216, 10), trusted=st.booleans())
def test_mutated_signature_sectors(signed, edits, trusted):
    body, sector = signed
    damaged = mutate(sector, edits)
    parse_signature_sector(damaged)
    check = check_signature_sector(body, damaged, None if trusted else [], scheme="ECDSA")
    if not trusted:
        assert not check.ok


# -- pre-encrypted images ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encrypted(realdata):
    folder = realdata / ENC
    key = load_private_key((folder / "certs_test_rsa_private_key.pem").read_bytes())
    return Blob((folder / "image.bin").read_bytes()[:0x2000]), key


@FUZZ
@given(edits=mutations(ENC_HEADER_SIZE + 64, 6), chunk=st.integers(1, 700))
def test_mutated_pre_encrypted_headers(encrypted, edits, chunk):
    data, key = encrypted
    damaged = mutate(data, edits)
    dec = EncryptedImageDecrypter(key)
    with pytest.raises(EspError):  # truncated to 8 KiB (and maybe damaged): it can never finish cleanly
        for pos in range(0, len(damaged), chunk):
            dec.feed(damaged[pos : pos + chunk])
        dec.finish()


@pytest.fixture(scope="module")
def plain_server():
    """A plain-HTTP loopback server (no TLS handshake per example); tests swap its one file."""
    with serve_files({}, tls=False) as srv:
        yield srv


@settings(max_examples=max(EXAMPLES // 5, 10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=mutations(ENC_HEADER_SIZE + 1024, 4, 0))
def test_mutated_pre_encrypted_ota_never_writes_outside_the_slot(device, plain_server, edits):
    """The sample pre-encrypted OTA (RSA-3072 scheme) with its header or first blocks damaged, through
    the whole esp_https_ota path with the decrypt stage: the undamaged one installs, a damaged one fails
    cleanly (before switching), and nothing outside app1 and otadata is ever written."""
    dev, undo = device
    data = (SAMPLES / "sample_v2_encrypted.bin").read_bytes()
    plain_server.files["enc.bin"] = mutate(data, edits) if edits else data
    try:
        try:
            result = https_ota(dev, plain_server.url("enc.bin"), allow_http=True,
                               decrypt_key=SAMPLES / "keys" / "pre_encryption_key.pem")
            switched = result.boot_partition_updated
        except EspError:
            switched = False
        if not edits:
            assert switched
        allowed = ((APP1, APP1 + SLOT_SIZE), (OTADATA, OTADATA + 0x2000))
        assert all(any(lo <= a and b <= hi for lo, hi in allowed) for a, b in undo.ranges())
        decision = dev.boot_decision()
        assert decision.booted.label == ("app1" if switched else "app0")
        assert dev.verify_partition(decision.booted).ok
    finally:
        rewind(dev, undo)
