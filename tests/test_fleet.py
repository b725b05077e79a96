"""Fleet mode: many copy-on-write devices from one real flash, updated from a loopback HTTPS server.

The template is the real Arduino-ESP32 (IDF 4.4.7) merged 4 MB flash (app0 runs, app1 is free); the
update is Espressif's ESP32 hello_world (IDF v5.2.2), whose version comes from esptool's golden
image-info output. A fleet device's flash is checked byte for byte against the same steps run on an
ordinary file-backed device.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import statistics

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device, DeviceSettings, DeviceState, sidecar_path
from esp_ota_emu.errors import EXIT_BAD_INPUT, EXIT_NO_BOOTABLE, EXIT_OTA_FAILED, EXIT_USAGE, InputError
from esp_ota_emu.flash import SECTOR_SIZE
from esp_ota_emu.fleet import (
    FleetConfig,
    FlashTemplate,
    FlashTiming,
    Progress,
    TimingModel,
    crashing_devices,
    run_fleet,
    save_flash,
    written_sectors,
)
from esp_ota_emu.fleet.lifecycle import power_on_template
from esp_ota_emu.fleet.report import percentile
from esp_ota_emu.fleet.timing import MIN_SLEEP, TCP_WINDOW, parse_bandwidth
from esp_ota_emu.info import flash_report
from esp_ota_emu.testserver import Faults, serve_files

MERGED = "derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"
HELLO = "esp-serial-flasher/hello-world_2025-08/ESP32/hello_world"


@pytest.fixture(scope="module")
def app(realdata) -> bytes:
    return (realdata / f"{HELLO}.bin").read_bytes()


@pytest.fixture(scope="module")
def app_version(realdata) -> str:
    """The new app's version as esptool image-info printed it (golden file)."""
    for line in (realdata / f"{HELLO}.imageinfo.txt").read_text().splitlines():
        if line.startswith("App version:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no App version in the golden image-info output")


@pytest.fixture
def template(tmp_path, realdata):
    path = tmp_path / "template.bin"
    shutil.copyfile(realdata / MERGED, path)
    return path


@pytest.fixture(scope="module")
def old_version(realdata, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("old") / "t.bin"
    shutil.copyfile(realdata / MERGED, path)
    with Device.open(path, readonly=True) as dev:
        return next(a["version"] for a in flash_report(dev)["apps"] if a["partition"] == "app0")


@pytest.fixture(scope="module")
def server(app):
    with serve_files({"app.bin": app}) as srv:
        yield srv


def ota_options(srv, **extra):
    return {"cert_pem": srv.tls.ca_pem.read_text(), **extra}


def fleet(template, srv, devices, *, settings=None, on_device_done=None, on_progress=None, url=None, **config):
    options = config.pop("ota_options", {})
    with FlashTemplate(template) as tmpl:
        return run_fleet(
            tmpl, settings or DeviceSettings(rollback=True), DeviceState(),
            FleetConfig(url or srv.url("app.bin"), devices, ota_options=ota_options(srv, **options), **config),
            on_device_done=on_device_done, on_progress=on_progress,
        )


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- copy-on-write flash ------------------------------------------------------------------------
def test_clones_share_the_template_and_keep_their_writes(template):
    before = sha(template)
    with FlashTemplate(template) as tmpl:
        a, b = tmpl.clone(), tmpl.clone()
        a.erase_range(0x150000, SECTOR_SIZE)
        a.program(0x150000, b"device a")
        assert a.read(0x150000, 9) == b"device a\xff"
        assert b.read(0x150000, 16) == template.read_bytes()[0x150000:0x150010]
        assert written_sectors(a) == 1 and written_sectors(b) == 0
        out = save_flash(a, template.parent / "a.bin")
        a.close()
        b.close()
    expected = bytearray(template.read_bytes())
    expected[0x150000:0x151000] = b"device a".ljust(SECTOR_SIZE, b"\xff")
    assert out.read_bytes() == bytes(expected)
    assert sha(template) == before
    assert not sidecar_path(template).exists()


def test_template_must_be_a_readable_file(tmp_path):
    with pytest.raises(InputError, match="not a file"):
        FlashTemplate(tmp_path / "missing.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        FlashTemplate(tmp_path / "empty.bin")


# -- the device path, against an ordinary file-backed device ---------------------------------------
def reference_device(path, url, ca, *, crash):
    """The rollout on a normal flash file through the public API: OTA, reset, confirm or crash, reset."""
    with Device.open(path, rollback=True) as dev:
        result = dev.https_ota(url, cert_pem=ca)
        first = dev.boot()
        assert first.booted.label == result.partition
        if not crash:
            dev.ota.mark_app_valid_cancel_rollback()
        final = dev.boot()
        return final.booted.label, list(dev.flash.erase_count), list(dev.flash.program_count)


def test_fleet_flash_is_byte_identical_to_a_file_device(template, server, tmp_path, app_version, old_version):
    before = sha(template)
    devices, seed = 6, 3
    crashing = crashing_devices(devices, 0.5, seed)
    assert len(crashing) == 3
    saved = {}

    def keep(dev, outcome):
        saved[outcome.index] = (
            save_flash(dev.flash, tmp_path / f"fleet{outcome.index}.bin"),
            list(dev.flash.erase_count),
            list(dev.flash.program_count),
        )

    report = fleet(template, server, devices, concurrency=3, crash_share=0.5, seed=seed, on_device_done=keep)
    ca = server.tls.ca_pem.read_text()
    for crash in (False, True):
        ref = tmp_path / f"ref{crash}.bin"
        shutil.copyfile(template, ref)
        booted, erases, programs = reference_device(ref, server.url("app.bin"), ca, crash=crash)
        assert booted == ("app0" if crash else "app1")
        for d in report.devices:
            if (d.index in crashing) != crash:
                continue
            path, d_erases, d_programs = saved[d.index]
            assert path.read_bytes() == ref.read_bytes(), f"device {d.index}"
            assert (d_erases, d_programs) == (erases, programs)
            assert d.private_bytes == SECTOR_SIZE * sum(1 for e, p in zip(erases, programs) if e or p)
            assert (d.outcome, d.booted, d.version, d.crashed) == (
                ("rolled_back", "app0", old_version, True) if crash else ("updated", "app1", app_version, False)
            )
    assert sha(template) == before


def test_report_counts_outcomes_versions_statuses_and_bytes(template, server, app, app_version, old_version):
    snapshots = []
    report = fleet(template, server, 8, concurrency=4, crash_share=0.25, seed=1, on_progress=snapshots.append)
    assert report.outcomes == {"updated": 6, "rolled_back": 2}
    assert report.booted == [
        {"slot": "app1", "version": app_version, "devices": 6},
        {"slot": "app0", "version": old_version, "devices": 2},
    ]
    assert report.errors == {} and report.http_status == {"200": 8}
    assert all(d.http_status == [200] and d.bytes_written == len(app) and d.ota_slot == "app1" for d in report.devices)
    data = report.to_json()
    assert data["throughput"]["bytes"] == 8 * len(app)
    assert set(data["download_s"]) == {"min", "p50", "p90", "p95", "p99", "max", "mean"}
    assert data["download_s"]["min"] <= data["download_s"]["p50"] <= data["download_s"]["p99"] <= data["download_s"]["max"]
    assert [d["index"] for d in data["device_results"]] == list(range(8))
    assert data["memory"]["peak_in_flight"] <= 4
    image_sectors = -(-len(app) // SECTOR_SIZE)
    assert image_sectors * SECTOR_SIZE < data["memory"]["flash_private_bytes_per_device"] <= (image_sectors + 2) * SECTOR_SIZE
    assert report.summary().startswith("8 devices in ")
    assert "6 updated, 2 rolled back" in report.summary() and "HTTP 200x8" in report.summary()
    last = snapshots[-1]
    assert (last.devices, last.started, last.done, last.in_flight) == (8, 8, 8, 0)
    assert dict(last.outcomes) == {"updated": 6, "rolled_back": 2}


def test_without_rollback_a_crashing_app_keeps_booting(template, server, app_version):
    report = fleet(template, server, 2, settings=DeviceSettings(rollback=False), crash_share=1.0)
    assert [(d.outcome, d.booted, d.version, d.crashed) for d in report.devices] == [
        ("crash_loop", "app1", app_version, True)
    ] * 2


def test_server_errors_are_reported_with_esp_idf_names(template, app, old_version):
    with serve_files({"app.bin": app}, faults=Faults(status=503)) as srv:
        report = fleet(template, srv, 3)
    assert report.outcomes == {"ota_failed": 3}
    assert report.errors == {"ESP_FAIL": 3} and report.http_status == {"503": 3}
    assert all(d.booted == "app0" and d.version == old_version and "503" in d.message for d in report.devices)
    assert "3 ota failed (ESP_FAIL 3)" in report.summary()


def test_redirects_show_in_the_status_codes(template, app):
    with serve_files({"app.bin": app}, faults=Faults(redirects=2)) as srv:
        report = fleet(template, srv, 2)
    assert report.outcomes == {"updated": 2}
    assert all(d.http_status == [302, 302, 200] for d in report.devices)
    assert report.http_status == {"200": 2, "302": 4}


def test_dropped_connection_and_corrupt_image(template, app):
    with serve_files({"app.bin": app}, faults=Faults(drop_after=50_000)) as srv:
        dropped = fleet(template, srv, 2)
    assert dropped.errors == {"ESP_FAIL": 2}
    assert all("connection closed before complete data" in d.message and d.bytes_written < len(app) for d in dropped.devices)
    broken = app[:-1] + bytes([app[-1] ^ 0xFF])  # the appended SHA-256 no longer matches
    with serve_files({"app.bin": broken}) as srv:
        report = fleet(template, srv, 2)
    assert report.errors == {"ESP_ERR_OTA_VALIDATE_FAILED": 2}
    assert all(d.booted == "app0" for d in report.devices)


def test_devices_against_a_stalling_server(template, app):
    """Devices wait out a stall longer than their read timeout; the emulator's stall limit ends the wait."""
    with serve_files({"app.bin": app}, faults=Faults(stall_after=8192, stall_seconds=1.0)) as srv:
        patient = fleet(template, srv, 2, ota_options={"timeout_ms": 200})
        limited = fleet(template, srv, 2, ota_options={"timeout_ms": 200, "stall_limit_s": 0.3})
    assert patient.outcomes == {"updated": 2}
    assert limited.errors == {"ESP_ERR_HTTP_EAGAIN": 2}


def test_ramp_spreads_the_starts(template, server):
    report = fleet(template, server, 4, concurrency=4, ramp=0.4)
    starts = [d.start - report.t0 for d in report.devices]
    for i, start in enumerate(starts):
        assert start >= 0.1 * i - 0.005
    assert report.outcomes == {"updated": 4}


def test_written_device_flash_boots_with_info(template, server, tmp_path, app_version):
    def keep(dev, outcome):
        save_flash(dev.flash, tmp_path / "d.bin")

    fleet(template, server, 1, on_device_done=keep)
    with Device.open(tmp_path / "d.bin", readonly=True) as dev:
        r = flash_report(dev)
    assert r["boot"]["partition"] == "app1"
    assert {a["partition"]: a["ota_state"] for a in r["apps"]}["app1"] == "VALID"
    assert {a["partition"]: a["version"] for a in r["apps"]}["app1"] == app_version


# -- timing model ---------------------------------------------------------------------------------
def test_flash_commands_follow_esp_flash_erase_region():
    t = FlashTiming(sector_erase=1.0, block_erase=10.0, page_program=0.5)
    assert t.erase_seconds(0x10000, 0x20000) == 20.0  # two aligned 64 KiB blocks
    assert t.erase_seconds(0x11000, 0x10000) == 16.0  # not block aligned: 16 sectors
    assert t.erase_seconds(0x10000, 0x11000) == 11.0  # a block, then one sector
    assert t.erase_seconds(0xF000, 0x12000) == 1.0 + 10.0 + 1.0
    assert t.program_seconds(0, 256) == 0.5 and t.program_seconds(0xFF, 2) == 1.0 and t.program_seconds(0, 1024) == 2.0


def test_bandwidth_parsing():
    assert [parse_bandwidth(x) for x in ("1Mbit", "250kbit", "2mbps", "9600", "1.5M/s")] == [1e6, 2.5e5, 2e6, 9600, 1.5e6]
    for bad in ("fast", "-3", "0", "1Tbit"):
        with pytest.raises(InputError):
            parse_bandwidth(bad)


FLASH_TIMES = FlashTiming(sector_erase=0.006, block_erase=0.05, page_program=0.0001)


@pytest.mark.parametrize(
    "model",
    [TimingModel(flash=FLASH_TIMES), TimingModel(bandwidth=4e6), TimingModel(rtt=0.05),
     TimingModel(bandwidth=8e6, rtt=0.02, flash=FLASH_TIMES)],
    ids=["flash", "bandwidth", "rtt", "all"],
)
def test_timing_model_slows_devices_down(template, server, app, model):
    report = fleet(template, server, 2, concurrency=2, timing=model)
    flash = 0.0
    if model.flash is not None:  # sequential writes: each sector erased as the data reaches it, 1 KiB programs
        sectors, pages = -(-len(app) // SECTOR_SIZE), -(-len(app) // 256)
        flash = sectors * model.flash.sector_erase + pages * model.flash.page_program
    # the link: all but the first TCP window at the link rate, paced in steps of MIN_SLEEP
    link = (len(app) - TCP_WINDOW) / (model.bandwidth / 8) - MIN_SLEEP if model.bandwidth else 0.0
    least = 4 * model.rtt + max(flash, link)  # the link runs on while the flash erases, as far as the TCP window lets it
    assert report.outcomes == {"updated": 2}
    assert all(d.download_s >= least for d in report.devices), (least, [d.download_s for d in report.devices])
    assert report.timing == model.to_json()


def test_link_pacing_without_ota_events(template, server, app):
    """ESP-IDF v4.4 posts no ESP_HTTPS_OTA_EVENTs: the link is still paced and the bytes counted."""
    model = TimingModel(bandwidth=4e6)
    report = fleet(template, server, 1, settings=DeviceSettings(rollback=True, idf_release="v4.4.7"), timing=model)
    link = (len(app) - TCP_WINDOW) / (model.bandwidth / 8) - MIN_SLEEP
    assert report.outcomes == {"updated": 1}
    assert report.devices[0].bytes_written == len(app) and report.devices[0].download_s >= link


# -- report arithmetic ----------------------------------------------------------------------------
def test_percentiles_match_the_statistics_module():
    values = sorted(random.Random(5).uniform(0, 10) for _ in range(101))
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for p in (1, 50, 90, 95, 99):
        assert percentile(values, p) == pytest.approx(cuts[p - 1])
    assert percentile([4.0], 99) == 4.0


def test_crashing_devices_is_exact_and_seeded():
    assert len(crashing_devices(1000, 0.1, 7)) == 100
    assert crashing_devices(10, 0.3, 1) == crashing_devices(10, 0.3, 1)
    assert crashing_devices(10, 0.0, 1) == frozenset() and crashing_devices(4, 1.0, 0) == frozenset(range(4))


# -- the command ----------------------------------------------------------------------------------
def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_fleet_report_devices_and_template_settings(template, server, tmp_path, app_version):
    Device.open(template, rollback=True).close()  # the template's sidecar enables rollback
    side_before, flash_before = sidecar_path(template).read_text(), sha(template)
    out_dir, one, report_file = tmp_path / "devices", tmp_path / "one.bin", tmp_path / "report.json"
    result = run(
        "fleet", "--from", template, "--url", server.url("app.bin"), "--cert-pem", server.tls.ca_pem,
        "--devices", 4, "--concurrency", 2, "--crash-share", 0.5, "--seed", 2, "--json",
        "--report", report_file, "--out-dir", out_dir, "--write-device", 1, "-o", one,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert json.loads(report_file.read_text()) == data
    assert data["devices"] == 4 and data["outcomes"] == {"updated": 2, "rolled_back": 2}
    crashing = crashing_devices(4, 0.5, 2)
    assert {d["index"] for d in data["device_results"] if d["outcome"] == "rolled_back"} == set(crashing)
    assert sorted(p.name for p in out_dir.iterdir()) == [
        f"device-{i}.bin{s}" for i in range(4) for s in ("", ".emu.json")
    ]
    assert one.read_bytes() == (out_dir / "device-1.bin").read_bytes()
    for d in data["device_results"]:
        info = run("info", out_dir / f"device-{d['index']}.bin", "--json")
        assert json.loads(info.output)["boot"]["partition"] == d["booted"]
    side = json.loads(sidecar_path(one).read_text())
    assert side["settings"]["rollback"] is True and side["state"]["running"] == data["device_results"][1]["booted"]
    assert sidecar_path(template).read_text() == side_before and sha(template) == flash_before


def test_cli_summary_and_exit_code_when_devices_fail(template, server):
    result = run("fleet", "--from", template, "--url", server.url("missing.bin"), "--cert-pem", server.tls.ca_pem,
                 "--devices", 2)
    assert result.exit_code == EXIT_OTA_FAILED
    lines = result.output.splitlines()
    assert lines[0].startswith("2 devices in ") and "2 ota failed (ESP_FAIL 2)" in lines[0] and "HTTP 404x2" in lines[0]
    assert lines[1].startswith("first failure: device 0 ota failed: ESP_FAIL: file not found")


def test_cli_rejects_bad_options(template, server):
    url = server.url("app.bin")
    bad = run("fleet", "--from", template, "--url", url, "--devices", 2, "--write-device", 2, "-o", "x.bin")
    assert bad.exit_code == EXIT_USAGE and "numbered 0 to 1" in bad.output
    alone = run("fleet", "--from", template, "--url", url, "--devices", 2, "--write-device", 0)
    assert alone.exit_code == EXIT_USAGE
    speed = run("fleet", "--from", template, "--url", url, "--devices", 1, "--bandwidth", "fast")
    assert speed.exit_code == EXIT_BAD_INPUT and "not a bandwidth" in speed.output
    not_flash = template.parent / "notes.txt"
    not_flash.write_text("hello")
    chip = run("fleet", "--from", not_flash, "--url", url, "--devices", 1)
    assert chip.exit_code == EXIT_BAD_INPUT, chip.output


def test_template_that_never_ran_is_powered_on_once(template, server, app_version):
    data = bytearray(template.read_bytes())
    data[0xE000:0x10000] = b"\xff" * 0x2000  # blank otadata: the bootloader boots ota_0 from initial contents
    template.write_bytes(bytes(data))
    with FlashTemplate(template) as tmpl:
        settings = DeviceSettings(rollback=True)
        state = power_on_template(tmpl, settings, DeviceState())
        assert state.running == "app0" and state.boots == 1
        report = run_fleet(tmpl, settings, state, FleetConfig(server.url("app.bin"), 2, ota_options=ota_options(server)))
    assert [(d.outcome, d.booted, d.version) for d in report.devices] == [("updated", "app1", app_version)] * 2


def test_template_without_a_bootable_app_stops_the_fleet(template, server):
    data = bytearray(template.read_bytes())
    data[0x10000:0x11000] = b"\xff" * 0x1000  # app0's header is gone and app1 is empty
    template.write_bytes(bytes(data))
    result = run("fleet", "--from", template, "--url", server.url("app.bin"), "--cert-pem", server.tls.ca_pem,
                 "--devices", 2)
    assert result.exit_code == EXIT_NO_BOOTABLE
    assert result.output.startswith("error: ESP_FAIL: the device has no bootable app")


def test_progress_line(capsys):
    from esp_ota_emu.cli.fleet import _Progress

    _Progress()(Progress(10, 6, 4, 2, {"updated": 3, "ota_failed": 1}, 1.25))
    assert capsys.readouterr().err.rstrip() == "\rfleet: 4/10 done (3 updated, 1 ota failed), 2 in flight, 1.2 s"
