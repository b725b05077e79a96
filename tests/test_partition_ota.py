"""esp_https_ota_config_t.partition (ESP-IDF v5.5 and newer): OTA of the bootloader, the partition table
and data partitions through a staging partition, as ESP-IDF's partitions_ota example runs it.

The device is the real Arduino-ESP32 merged 4 MB flash (app0 runs, app1 at 0x150000 is the next OTA
slot); the images are real ones: ESP-IDF bootloaders built for the ESP32 and ESP32-S3 by
esp-serial-flasher's hello-world, and Arduino-ESP32's min_spiffs partition table as gen_esp32part
wrote it.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EXIT_NO_BOOTABLE, EspError, InputError
from esp_ota_emu.faults import PowerCut
from esp_ota_emu.https_ota import api
from esp_ota_emu.https_ota.config import HttpConfig, OtaConfig
from esp_ota_emu.https_ota.engine import EspHttpsOta
from esp_ota_emu.partitions import PartitionTable
from esp_ota_emu.testserver import Faults, serve_files
from helpers_flash import REPO, entry, make_flash, sample

SLOT, SLOT_SIZE = 0x150000, 0x140000  # app1, the staging partition by default
BOOTLOADER, BOOTLOADER_SIZE = 0x1000, 0x7000
TABLE = 0x8000
OTADATA = 0xE000
NVS, NVS_SIZE = 0x9000, 0x5000
V55 = "v5.5.5"
CHIP_EVENTS = ["ESP_HTTPS_OTA_VERIFY_CHIP_ID", "ESP_HTTPS_OTA_VERIFY_CHIP_REVISION"]


@pytest.fixture(scope="module")
def new_bootloader(realdata) -> bytes:
    return (realdata / "esp-serial-flasher/hello-world_2025-08/ESP32/bootloader.bin").read_bytes()


@pytest.fixture(scope="module")
def min_spiffs(realdata) -> bytes:
    return (realdata / "partitions/arduino-esp32_upstream/min_spiffs.bin").read_bytes()


def run(flash, url, ca, *, idf_release=V55, hooks=(), **options):
    """One OTA through the Python API; returns (result or EspError, event names)."""
    events = []
    with Device.open(flash, idf_release=idf_release) as dev:
        dev.flash.hooks.extend(hooks)
        try:
            result = api.https_ota(dev, url, cert_pem=ca, on_event=lambda n, d: events.append(n), **options)
        except EspError as err:
            result = err
    return result, events


def unchanged_except(before: bytes, after: bytes, *ranges: tuple[int, int]) -> bool:
    """Whether nothing outside the (start, length) ranges changed."""
    a, b = bytearray(before), bytearray(after)
    for start, length in ranges:
        a[start : start + length] = b[start : start + length] = bytes(length)
    return hashlib.sha256(a).digest() == hashlib.sha256(b).digest()


def boot(flash):
    with Device.open(flash) as dev:
        return dev.boot()


def test_bootloader_ota_with_copy_replaces_the_bootloader(merged_flash, new_bootloader):
    """The image is written to app1, verified as a bootloader (header checks, then esp_image_verify) and
    copied over the 0x7000-byte bootloader region; otadata and the boot partition stay as they were."""
    # app1 holds an old app: sequential erase leaves its sectors past the bootloader image, and the
    # copy takes the staging partition's first 0x7000 bytes, whatever the image's length
    old = random.Random(5).randbytes(SLOT_SIZE)
    with Device.open(merged_flash) as dev:
        dev.flash.write_raw(SLOT, old)
    before = merged_flash.read_bytes()
    with serve_files({"bootloader.bin": new_bootloader}) as srv:
        result, events = run(merged_flash, srv.url("bootloader.bin"), srv.tls.ca_pem,
                             final="bootloader", finalize_with_copy=True)
    assert not isinstance(result, EspError), result
    assert (result.partition, result.final, result.copied) == ("app1", "bootloader", True)
    assert not result.boot_partition_updated and result.bytes_written == len(new_bootloader)
    assert events[:4] == ["ESP_HTTPS_OTA_START", "ESP_HTTPS_OTA_CONNECTED", *CHIP_EVENTS]
    assert events[-1] == "ESP_HTTPS_OTA_FINISH" and "ESP_HTTPS_OTA_UPDATE_BOOT_PARTITION" not in events
    after = merged_flash.read_bytes()
    erased_to = -(-len(new_bootloader) // 0x1000) * 0x1000
    staged = new_bootloader + b"\xff" * (erased_to - len(new_bootloader)) + old[erased_to:BOOTLOADER_SIZE]
    assert after[SLOT : SLOT + BOOTLOADER_SIZE] == staged
    assert after[BOOTLOADER : BOOTLOADER + BOOTLOADER_SIZE] == staged
    assert before[BOOTLOADER : BOOTLOADER + BOOTLOADER_SIZE] != staged
    assert unchanged_except(before, after, (SLOT, SLOT_SIZE), (BOOTLOADER, BOOTLOADER_SIZE))
    assert boot(merged_flash).booted.label == "app0"


def test_bootloader_ota_without_copy_leaves_it_staged(merged_flash, new_bootloader):
    """partitions_ota's unsafe bootloader update: without finalize_with_copy the image stays in the
    staging partition and the app copies it itself (ESP-IDF's example does, after esp_https_ota)."""
    before = merged_flash.read_bytes()
    with serve_files({"bootloader.bin": new_bootloader}) as srv:
        result, _ = run(merged_flash, srv.url("bootloader.bin"), srv.tls.ca_pem, final="bootloader")
    assert (result.final, result.copied) == ("bootloader", False)
    after = merged_flash.read_bytes()
    assert after[SLOT : SLOT + len(new_bootloader)] == new_bootloader
    assert unchanged_except(before, after, (SLOT, SLOT_SIZE))


def test_bootloader_for_another_chip_is_refused_before_writing(merged_flash, realdata):
    s3_bootloader = (realdata / "esp-serial-flasher/hello-world_2025-08/ESP32_S3/bootloader.bin").read_bytes()
    before = merged_flash.read_bytes()
    with serve_files({"bootloader.bin": s3_bootloader}) as srv:
        err, events = run(merged_flash, srv.url("bootloader.bin"), srv.tls.ca_pem,
                          final="bootloader", finalize_with_copy=True)
    assert isinstance(err, EspError) and err.esp_err == "ESP_ERR_INVALID_VERSION"
    assert "chip id 9" in err.message
    assert events[-2:] == ["ESP_HTTPS_OTA_VERIFY_CHIP_ID", "ESP_HTTPS_OTA_ABORT"]
    assert merged_flash.read_bytes() == before


@pytest.mark.parametrize("idf_release, ok", [(V55, False), ("v6.0.2", False), ("newest", True)])
def test_bootloader_maximum_revision_is_checked_before_v6_1(merged_flash, new_bootloader, idf_release, ok):
    """esp_https_ota checked a bootloader's maximum chip revision like an app's until v6.1
    (esp_ota_check_image_validity); esp_image_verify never checks it for a bootloader. The device is
    a v3.0 ESP32; the image says v0.99 at most."""
    image = bytearray(new_bootloader)
    image[17:19] = (99).to_bytes(2, "little")  # max_chip_rev_full (header bytes: no checksum covers them)
    with serve_files({"bootloader.bin": bytes(image)}) as srv:
        result, _ = run(merged_flash, srv.url("bootloader.bin"), srv.tls.ca_pem, idf_release=idf_release,
                        final="bootloader", finalize_with_copy=True)
    if ok:
        assert result.copied
        assert merged_flash.read_bytes()[BOOTLOADER : BOOTLOADER + len(image)] == image
    else:
        assert isinstance(result, EspError) and result.esp_err == "ESP_ERR_INVALID_VERSION"
        assert "<= v0.99" in result.message


def test_partition_table_ota_takes_effect_at_the_next_boot(merged_flash, min_spiffs):
    """The new table replaces the 4 KiB table sector; the running app keeps the table it loaded, the
    next boot reads the new one (app1 grows to 0x1E0000 at 0x1F0000, app0 still boots)."""
    before = merged_flash.read_bytes()
    events = []
    with serve_files({"partition-table.bin": min_spiffs}) as srv, Device.open(merged_flash, idf_release=V55) as dev:
        result = dev.https_ota(srv.url("partition-table.bin"), cert_pem=srv.tls.ca_pem, final="partition_table",
                               finalize_with_copy=True, on_event=lambda n, d: events.append(n))
        assert (result.partition, result.final, result.copied) == ("app1", "partition_table", True)
        assert CHIP_EVENTS[0] not in events  # no image header to check
        after = merged_flash.read_bytes()
        assert after[TABLE : TABLE + 0x1000] == min_spiffs + b"\xff" * (0x1000 - len(min_spiffs))
        assert unchanged_except(before, after, (SLOT, SLOT_SIZE), (TABLE, 0x1000))
        assert dev.partitions.find("app1").offset == SLOT  # what the running app loaded at its boot
        assert dev.boot().booted.label == "app0"
        app1 = dev.partitions.find("app1")
        assert (app1.offset, app1.size) == (0x1F0000, 0x1E0000)
        assert dev.ota.get_next_update_partition(None) == app1
    new_entries = PartitionTable.from_binary(after[TABLE : TABLE + 0xC00]).entries
    assert new_entries == PartitionTable.from_binary(min_spiffs).entries


def test_partition_table_magic_is_checked_at_the_first_write(merged_flash, new_bootloader):
    before = merged_flash.read_bytes()
    with serve_files({"partition-table.bin": new_bootloader}) as srv:
        err, events = run(merged_flash, srv.url("partition-table.bin"), srv.tls.ca_pem,
                          final="partition_table", finalize_with_copy=True)
    assert isinstance(err, EspError) and err.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED"
    assert "expected 0x50AA, saw 0x04e9" in err.message
    assert events[-1] == "ESP_HTTPS_OTA_ABORT"
    after = merged_flash.read_bytes()
    assert after[TABLE : TABLE + 0x1000] == before[TABLE : TABLE + 0x1000]
    assert unchanged_except(before, after, (SLOT, SLOT_SIZE))


def test_partition_table_with_a_bad_md5_is_not_copied(merged_flash, min_spiffs):
    table = bytearray(min_spiffs)
    md5_row = next(i for i in range(0, len(table), 32) if table[i : i + 2] == b"\xeb\xeb")
    table[md5_row + 20] ^= 1
    before = merged_flash.read_bytes()
    with serve_files({"partition-table.bin": bytes(table)}) as srv:
        err, events = run(merged_flash, srv.url("partition-table.bin"), srv.tls.ca_pem,
                          final="partition_table", finalize_with_copy=True)
    assert isinstance(err, EspError) and err.esp_err == "ESP_ERR_OTA_VALIDATE_FAILED"
    assert "Incorrect MD5 checksum" in err.message
    assert events[-1] == "ESP_HTTPS_OTA_FINISH"  # esp_ota_end failed inside esp_https_ota_finish
    after = merged_flash.read_bytes()
    assert after[TABLE : TABLE + 0x1000] == before[TABLE : TABLE + 0x1000]
    assert after[OTADATA : OTADATA + 0x2000] == before[OTADATA : OTADATA + 0x2000]


@pytest.mark.parametrize("final, start, size, why", [
    ("partition_table", TABLE, 0x1000, "Failed to verify partition table (ESP_ERR_INVALID_STATE: partition 0 invalid "
                                       "magic number 0xffff)"),
    ("bootloader", BOOTLOADER, BOOTLOADER_SIZE, "2nd-stage bootloader at 0x1000 is invalid (image at 0x1000 has "
                                                "invalid magic byte"),
])
def test_power_cut_during_the_final_copy_leaves_a_device_that_does_not_boot(
    merged_flash, new_bootloader, min_spiffs, final, start, size, why
):
    """ESP-IDF warns that losing power during the final copy bricks a device without a recovery
    bootloader (the ESP32): cut after the region's erase, the ROM finds no 2nd-stage bootloader, or
    the bootloader no partition table."""

    def cut_at_the_final_write(op):
        if op.kind == "program" and op.addr == start:
            raise PowerCut(op.index)

    image = min_spiffs if final == "partition_table" else new_bootloader
    with serve_files({"image.bin": image}) as srv:
        with pytest.raises(PowerCut):
            run(merged_flash, srv.url("image.bin"), srv.tls.ca_pem, hooks=[cut_at_the_final_write],
                final=final, finalize_with_copy=True)
    assert merged_flash.read_bytes()[start : start + size] == b"\xff" * size
    result = boot(merged_flash)
    assert result.booted is None and result.trace[-1].startswith(why)


def test_data_partition_ota_with_copy(merged_flash):
    """partitions_ota's storage update: no header checks; the copy takes the final partition's size
    from the staging partition, so nvs's last sector gets what app1 held past the 4 erased sectors."""
    data = random.Random(7).randbytes(0x3100)
    with Device.open(merged_flash) as dev:
        dev.flash.write_raw(SLOT, random.Random(8).randbytes(NVS_SIZE))
    before = merged_flash.read_bytes()
    with serve_files({"nvs.bin": data}) as srv:
        result, events = run(merged_flash, srv.url("nvs.bin"), srv.tls.ca_pem, final="nvs", finalize_with_copy=True)
    assert (result.partition, result.final, result.copied, result.bytes_written) == ("app1", "nvs", True, len(data))
    assert events == ["ESP_HTTPS_OTA_START", "ESP_HTTPS_OTA_CONNECTED",
                      *["ESP_HTTPS_OTA_WRITE_FLASH"] * 13, "ESP_HTTPS_OTA_FINISH"]
    after = merged_flash.read_bytes()
    assert after[NVS : NVS + NVS_SIZE] == after[SLOT : SLOT + NVS_SIZE]
    assert after[NVS : NVS + len(data)] == data
    assert after[NVS + 0x4000 : NVS + NVS_SIZE] == before[SLOT + 0x4000 : SLOT + NVS_SIZE] != b"\xff" * 0x1000
    assert unchanged_except(before, after, (SLOT, SLOT_SIZE), (NVS, NVS_SIZE))


def test_copy_to_a_final_partition_larger_than_the_staging_one_fails(merged_flash):
    """esp_partition_copy copies the final partition's size: spiffs (0x160000) does not fit in app1
    (0x140000), so esp_ota_end fails after the download and nothing is erased."""
    before = merged_flash.read_bytes()
    with serve_files({"spiffs.bin": b"\x01" * 0x2000}) as srv:
        err, _ = run(merged_flash, srv.url("spiffs.bin"), srv.tls.ca_pem, final="spiffs", finalize_with_copy=True)
    assert isinstance(err, EspError) and err.esp_err == "ESP_ERR_INVALID_SIZE"
    after = merged_flash.read_bytes()
    assert unchanged_except(before, after, (SLOT, SLOT_SIZE))


def test_staging_and_final_naming_the_same_partition_crash_the_device(merged_flash, new_bootloader):
    with serve_files({"bootloader.bin": new_bootloader}) as srv:
        err, _ = run(merged_flash, srv.url("bootloader.bin"), srv.tls.ca_pem, staging="app1", final="app1")
    assert isinstance(err, EspError) and "LoadProhibited" in err.message


def test_releases_before_v5_5_have_no_staging_or_final_partition(merged_flash, new_bootloader):
    with serve_files({"bootloader.bin": new_bootloader}) as srv:
        with pytest.raises(InputError, match="came in v5.5"):
            run(merged_flash, srv.url("bootloader.bin"), srv.tls.ca_pem, idf_release="v5.4.2", final="bootloader")
        with pytest.raises(InputError, match="no partition 'nope'"):
            run(merged_flash, srv.url("bootloader.bin"), srv.tls.ca_pem, final="nope")


def test_cli_bootloader_and_table_ota(merged_flash, new_bootloader, min_spiffs):
    with serve_files({"bootloader.bin": new_bootloader, "table.bin": min_spiffs}) as srv:
        common = ["--cert-pem", str(srv.tls.ca_pem), "--idf-release", V55, "--finalize-with-copy"]
        out = CliRunner().invoke(cli, ["ota", str(merged_flash), "--url", srv.url("bootloader.bin"), *common,
                                       "--final", "bootloader"])
        assert out.exit_code == 0, out.output
        assert (f"OTA ok: {len(new_bootloader)} bytes written to app1, verified for bootloader and copied there; "
                "the boot partition was NOT switched") in out.output
        out = CliRunner().invoke(cli, ["ota", str(merged_flash), "--url", srv.url("table.bin"), *common,
                                       "--final", "partition_table", "--staging", "spiffs", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output.splitlines()[-1])
    assert {k: report[k] for k in ("partition", "final", "copied", "boot_partition_updated")} == {
        "partition": "spiffs", "final": "partition_table", "copied": True, "boot_partition_updated": False}
    flash = merged_flash.read_bytes()
    assert flash[BOOTLOADER : BOOTLOADER + len(new_bootloader)] == new_bootloader
    assert flash[TABLE : TABLE + len(min_spiffs)] == min_spiffs


def test_scenario_updates_the_bootloader_and_the_table_then_resets(merged_flash, new_bootloader, min_spiffs, tmp_path):
    with serve_files({"bootloader.bin": new_bootloader, "partition-table.bin": min_spiffs}) as srv:
        ca = str(srv.tls.ca_pem)
        path = tmp_path / "s.json"
        path.write_text(json.dumps({"device": {"idf_release": V55}, "steps": [
            {"do": "ota", "url": srv.url("bootloader.bin"), "cert_pem": ca, "final": "bootloader",
             "finalize_with_copy": True},
            {"do": "ota", "url": srv.url("partition-table.bin"), "cert_pem": ca, "final": "partition_table",
             "finalize_with_copy": True},
            {"do": "reset", "expect": {"booted": "app0"}},
        ]}))
        result = CliRunner().invoke(cli, ["scenario", str(path), "--flash", str(merged_flash), "--json"])
    assert result.exit_code == 0, result.output
    with Device.open(merged_flash) as dev:  # the scenario ran on a copy
        assert dev.partitions.find("app1").offset == SLOT


def test_an_app_for_the_factory_partition_is_copied_but_not_selected(realdata, tmp_path):
    """A factory app as the final partition: esp_https_ota does not make it the boot partition (that
    would erase otadata), yet posts UPDATE_BOOT_PARTITION with the factory subtype."""
    csv = (REPO / "partitions" / "factory_two_ota_4MB.csv").read_text()
    flash = make_flash(tmp_path / "flash.bin", realdata, csv, {"factory": sample("v1"), "ota_0": sample("v1")},
                       otadata=(entry(1), None))
    v2 = sample("v2")
    with Device.open(flash) as dev:
        factory, ota_1 = dev.partitions.find("factory"), dev.partitions.find("ota_1")
    before = flash.read_bytes()
    events = []
    with serve_files({"v2.bin": v2}) as srv, Device.open(flash, idf_release=V55) as dev:
        result = dev.https_ota(srv.url("v2.bin"), cert_pem=srv.tls.ca_pem, final="factory", finalize_with_copy=True,
                               on_event=lambda n, d: events.append((n, d)))
        assert dev.running.label == "ota_0"
    assert (result.partition, result.final, result.copied, result.boot_partition_updated) == ("ota_1", "factory", True, False)
    assert events[-2:] == [("ESP_HTTPS_OTA_UPDATE_BOOT_PARTITION", 0x00), ("ESP_HTTPS_OTA_FINISH", None)]
    after = flash.read_bytes()
    assert after[factory.offset : factory.offset + factory.size] == after[ota_1.offset : ota_1.offset + factory.size]
    assert after[factory.offset : factory.offset + len(v2)] == v2
    assert unchanged_except(before, after, (factory.offset, factory.size), (ota_1.offset, ota_1.size))


@pytest.mark.parametrize("final, image_name", [("bootloader", "bootloader.bin"), ("partition_table", "table.bin")])
def test_powercut_campaign_finds_the_brick_window_of_the_final_copy(merged_flash, new_bootloader, min_spiffs,
                                                                     final, image_name):
    """Every cut point of the update: the download and the verification are safe (the old app boots),
    the copy is not. Cut after the final partition's erase (or during it) the device does not boot; a
    program torn late enough may leave a whole image and boot."""
    images = {"bootloader.bin": new_bootloader, "table.bin": min_spiffs}
    with serve_files(images) as srv:
        with Device.open(merged_flash, idf_release=V55):
            pass  # the campaign follows the device's persisted release
        out = CliRunner().invoke(cli, ["powercut", str(merged_flash), "--url", srv.url(image_name), "--cert-pem",
                                       str(srv.tls.ca_pem), "--final", final, "--finalize-with-copy", "--json",
                                       "--jobs", "1"])
    assert out.exit_code == EXIT_NO_BOOTABLE, out.output
    report = json.loads(out.output)
    assert (report["target"], report["final"], report["replay_checked_against_https"]) == ("app1", final, True)
    phases = report["phases"]
    assert phases["copy"]["operations"] == 2  # one erase of the region, one program
    assert phases["download"]["bricked"] == 0 and phases["download"]["old"] == phases["download"]["cut_points"]
    assert report["bricked"] == phases["copy"]["bricked"] >= 2
    assert {f["phase"] for f in report["failures"]} == {"copy"}
    assert "--final" in report["failures"][0]["reproduce"]


def test_resumed_bootloader_update_reads_its_description_from_the_staging_partition(merged_flash, new_bootloader):
    """ota_resumption with a final partition: esp_ota_resume, then esp_ota_set_final_partition (allowed
    once bytes are written because it is a resumption); the advanced API's esp_https_ota_get_bootloader_img_desc
    reads the 80-byte esp_bootloader_desc_t from the staging partition, and the copy runs at the end."""
    with serve_files({"bootloader.bin": new_bootloader}, faults=Faults(drop_after=10_000)) as srv:
        url = srv.url("bootloader.bin")
        err, _ = run(merged_flash, url, srv.tls.ca_pem, resume=True, final="bootloader", finalize_with_copy=True)
        assert err.esp_err == "ESP_FAIL"
        srv.faults.drop_after = None
        srv.requests.clear()
        with Device.open(merged_flash) as dev:
            written = dev.state.resume[url]["bytes_written"]
            config = OtaConfig(HttpConfig(url, cert_pem=srv.tls.ca_pem.read_text()), ota_resumption=True,
                               ota_image_bytes_written=written, final="bootloader", finalize_with_copy=True)
            ota = EspHttpsOta(dev, config)
            ota.begin()
            desc = ota.get_img_desc()
            while ota.perform():
                pass
            assert not ota.finish()  # no boot partition change
        assert [r.range for r in srv.requests] == [f"bytes={written}-"]
    assert desc == new_bootloader[32 : 32 + 80] and desc[0] == 0x50
    assert merged_flash.read_bytes()[BOOTLOADER : BOOTLOADER + len(new_bootloader)] == new_bootloader


def test_data_partition_has_no_image_description(merged_flash):
    with serve_files({"nvs.bin": b"\x00" * 0x2000}) as srv, Device.open(merged_flash, idf_release=V55) as dev:
        dev.power_on_if_needed()
        ota = EspHttpsOta(dev, OtaConfig(HttpConfig(srv.url("nvs.bin"), cert_pem=srv.tls.ca_pem.read_text()),
                                         final="nvs"))
        ota.begin()
        with pytest.raises(EspError, match="no image description in a partition of type 1"):
            ota.get_img_desc()
        ota.abort()


def test_a_table_with_bootloader_and_table_entries_names_them(merged_flash, new_bootloader):
    """ESP-IDF v5.5's gen_esp32part lists the primary bootloader and partition table as partitions
    (types bootloader / partition_table, placed by its offsets): then those entries are the ones
    esp_partition_find gives the app, under their own labels."""
    csv = """PrimaryBTLDR, bootloader, primary, N/A, N/A,
PrimaryPrtTable, partition_table, primary, N/A, N/A,
nvs, data, nvs, 0x9000, 0x5000,
otadata, data, ota, 0xe000, 0x2000,
app0, app, ota_0, 0x10000, 0x140000,
app1, app, ota_1, 0x150000, 0x140000,
"""
    table = PartitionTable.from_csv(csv, primary_bootloader_offset=BOOTLOADER)
    flash = merged_flash
    with Device.open(flash) as dev:
        dev.flash.write_raw(TABLE, table.to_binary())
    with serve_files({"bootloader.bin": new_bootloader}) as srv:
        result, _ = run(flash, srv.url("bootloader.bin"), srv.tls.ca_pem, final="bootloader", finalize_with_copy=True)
    assert (result.final, result.copied) == ("PrimaryBTLDR", True)
    assert flash.read_bytes()[BOOTLOADER : BOOTLOADER + len(new_bootloader)] == new_bootloader
    assert boot(flash).booted.label == "app0"


def test_fleet_refuses_final_partition_updates(merged_flash):
    out = CliRunner().invoke(cli, ["fleet", "--from", str(merged_flash), "--url", "https://127.0.0.1:1/b.bin",
                                   "--devices", "2", "--final", "bootloader"])
    assert out.exit_code == 2 and "a fleet rolls out apps to the next OTA slot" in out.output


@pytest.mark.parametrize("dangerous_writes, esp_err", [("aborts", "ESP_ERR_NOT_SUPPORTED"),
                                                       ("fails", "ESP_ERR_INVALID_ARG"), ("allowed", None)])
def test_copying_over_the_running_app_meets_the_dangerous_write_protection(merged_flash, realdata,
                                                                            dangerous_writes, esp_err):
    """Nothing stops an app from naming its own partition as the final one, but esp_flash guards the
    running app: the copy's erase aborts the app by default, fails with _FAILS, and only with
    CONFIG_SPI_FLASH_DANGEROUS_WRITE_ALLOWED overwrites it (then app1, the staging slot, is selected)."""
    v2 = sample("v2")
    with Device.open(merged_flash, dangerous_writes=dangerous_writes):
        pass
    before = merged_flash.read_bytes()
    with serve_files({"v2.bin": v2}) as srv:
        result, events = run(merged_flash, srv.url("v2.bin"), srv.tls.ca_pem, final="app0", finalize_with_copy=True)
    after = merged_flash.read_bytes()
    if esp_err is not None:
        assert isinstance(result, EspError) and result.esp_err == esp_err
        assert "overlaps the running app 'app0'" in result.message
        assert unchanged_except(before, after, (SLOT, SLOT_SIZE))
        assert after[SLOT : SLOT + len(v2)] == v2
    else:
        assert result.copied and result.boot_partition_updated
        assert events[-2] == "ESP_HTTPS_OTA_UPDATE_BOOT_PARTITION"
        assert after[0x10000 : 0x10000 + len(v2)] == v2
        assert boot(merged_flash).booted.label == "app1"


def test_a_bootloader_update_lifts_the_dangerous_write_protection_until_the_next_reset(merged_flash, new_bootloader):
    with serve_files({"bootloader.bin": new_bootloader}) as srv, Device.open(merged_flash, idf_release=V55) as dev:
        dev.https_ota(srv.url("bootloader.bin"), cert_pem=srv.tls.ca_pem, final="bootloader")
        assert not dev.dangerous_write_protection  # esp_ota_set_final_partition turned it off
        dev.boot()
        assert dev.dangerous_write_protection


def test_the_table_and_bootloader_region_is_guarded_unless_an_update_of_it_lifts_the_guard(merged_flash, min_spiffs):
    """An app writing the partition table on its own (esp_partition_write on a registered table
    partition) meets esp_flash's guard; esp_ota_begin of a partition-table partition lifts it."""
    with Device.open(merged_flash, idf_release=V55) as dev:
        dev.power_on_if_needed()
        table = dev.find_partition("partition_table")
        before = merged_flash.read_bytes()
        with pytest.raises(EspError, match="lies in the bootloader and partition table region"):
            dev.io.erase_range(table, 0, 0x1000)
        assert merged_flash.read_bytes() == before
        handle = dev.ota.begin(table, len(min_spiffs))  # bulk erase of the table sector: allowed now
        dev.ota.write(handle, min_spiffs)
        dev.ota.end(handle)
    assert merged_flash.read_bytes()[TABLE : TABLE + len(min_spiffs)] == min_spiffs
