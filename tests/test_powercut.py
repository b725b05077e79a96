"""The power-cut campaign on a real ESP32 flash: every cut point of a real OTA, its reset and confirmation.

The device is the Arduino-ESP32 (IDF 4.4.7) merged 4 MB flash (app0 runs; the update goes to app1);
the update is the real StartCounter app (357 KB, ~440 flash operations).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.device import Device
from esp_ota_emu.errors import EXIT_NO_BOOTABLE, EspError, InputError
from esp_ota_emu.flash import SECTOR_SIZE
from esp_ota_emu.device import DeviceState
from esp_ota_emu.faults import CutInjector, PowerCut
from esp_ota_emu.powercut import Campaign, CutPoint, OtaPlan, ScenarioLog, ScratchDevice, record_https_ota, run_scenario
from esp_ota_emu.testserver import serve_files

MERGED = "derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"
APP = "arduino-esp32/v1.0.6_idf-v3.3.5/StartCounter.ino.bin"
APP1, SLOT_SIZE, OTADATA = 0x150000, 0x140000, 0xE000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image(realdata) -> bytes:
    return (realdata / APP).read_bytes()


@pytest.fixture
def flash(merged_flash):
    return merged_flash


def campaign(flash, image, *, resume=False, seed=0, plan=None, **settings) -> Campaign:
    with Device.open(flash, **settings) as dev:
        return Campaign(dev, plan or OtaPlan(image), seed=seed, resume=resume)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_cut_point_boots_the_old_or_the_new_app(flash, image):
    before = sha(flash)
    with campaign(flash, image) as c:
        # sequential erase: one erase per new sector, one program per 1 KiB read, then otadata and confirmation
        sectors = -(-len(image) // SECTOR_SIZE)
        assert c.phase_operations() == {"download": sectors + -(-len(image) // 1024), "otadata": 2,
                                         "bootloader": 0, "confirm": 2}
        assert all(APP1 <= op.addr < APP1 + SLOT_SIZE for op in c.ops[: c.phase_starts["otadata"]])
        report = c.run(c.every_point())
    assert len(report.results) == 2 * c.op_count + 1
    assert report.bricked == 0 and report.failed == []
    phases = report.by_phase()
    assert phases["download"]["old"] == phases["download"]["cut_points"]  # otadata still selects app0
    assert phases["otadata"]["old"] == 4  # the new entry is erased or torn: CRC fails, app0 stays
    assert phases["after"]["new"] == 1
    # esp_ota_mark_app_valid_cancel_rollback rewrites the active otadata sector in place: a cut between its
    # erase and its program loses the new entry, and the device goes back to the old app (not a brick).
    confirm = {(r.index, r.torn): r.outcome for r in report.results if r.phase == "confirm"}
    erase = c.phase_starts["confirm"]
    assert confirm[(erase, False)] == "new" and confirm[(erase + 1, False)] == "old"
    assert sha(flash) == before  # the campaign works on its own copy


@pytest.mark.parametrize("idf_release,read", [("v4.4.6", 289), ("v5.1.2", 1024)])
def test_older_releases_replay_the_https_runs_flash_operations(flash, image, idf_release, read):
    """v4.x reads 289 bytes at a time, both releases still erase one sector ahead at a sector boundary,
    and v5.1.2 counts the header twice: the replay still makes the HTTPS run's flash operations, and
    the recorded image is the one written, not a header longer."""
    with serve_files({"app.bin": image}) as srv, Device.open(flash, idf_release=idf_release) as dev:
        plan, https_ops = record_https_ota(dev, srv.url("app.bin"), cert_pem=srv.tls.ca_pem)
        assert plan.image == image
        programs = [o.length for o in https_ops if o.kind == "program" and APP1 <= o.addr < APP1 + SLOT_SIZE]
        assert programs[:2] == [read, read] and sum(programs) == len(image)
        with Campaign(dev, plan, https_ops=https_ops) as c:
            assert c.replay_checked
            report = c.run(c.sample_points(30))
    assert report.bricked == 0 and report.failed == []


def test_rollback_bootloader_writes_and_resume_give_identical_slots(flash, image):
    with campaign(flash, image, resume=True, seed=3, rollback=True, idf_release="newest") as c:
        assert c.phase_operations()["bootloader"] == 2  # NEW -> PENDING_VERIFY: erase + program
        points = c.sample_points(120)
        assert {p.index for p in points} >= set(range(c.phase_starts["otadata"], c.op_count + 1))
        report = c.run(points)
    assert report.bricked == 0 and report.failed == []
    phases = report.by_phase()
    # before the new app confirms, every cut rolls back (PENDING_VERIFY -> ABORTED) to the old one
    assert phases["confirm"]["new"] == 0 and phases["confirm"]["old"] == phases["confirm"]["cut_points"]
    resume = report.resume_counts()
    assert resume["tried"] > 100 and resume["identical"] == resume["tried"]
    # cut before the reset's NEW -> PENDING_VERIFY, the power-on writes it itself; cut before the confirmation,
    # the power-on writes ABORTED: a second cut inside those writes (erase, program) must still leave a bootable app
    second = {(r.index, r.torn): r for r in report.results if r.second_cuts}
    assert (c.phase_starts["bootloader"], False) in second and (c.phase_starts["confirm"], False) in second
    assert all(r.second_cuts == 4 and r.phase in ("bootloader", "confirm") for r in second.values())


def test_resume_needs_a_release_with_ota_resumption(flash, image):
    with Device.open(flash) as dev, pytest.raises(InputError, match="v5.5.4 or newer"):
        Campaign(dev, OtaPlan(image), resume=True)


def test_bulk_erase_torn_across_the_slot(flash, image):
    with campaign(flash, image, plan=OtaPlan(image, bulk_flash_erase=True)) as c:
        first = c.ops[0]
        assert (first.kind, first.addr, first.length) == ("erase", APP1, -(-len(image) // SECTOR_SIZE) * SECTOR_SIZE)
        report = c.run([CutPoint(0, True), CutPoint(1, True), CutPoint(c.op_count - 1, True)])
    assert report.bricked == 0 and report.failed == []
    assert report.results[0].left.startswith("erase torn in sector 0x")


def test_a_cut_point_is_reproduced_by_index_and_seed(flash, image):
    with campaign(flash, image, seed=11) as c:
        points = [CutPoint(k, True) for k in (0, 5, 200)]
        first, second = c.run(points), c.run(points[::-1])
    assert [(r.index, r.left) for r in first.results] == [(r.index, r.left) for r in second.results]
    assert len({r.left for r in first.results}) == 3


def test_rewinding_equals_a_real_cut_from_the_start(flash, image, realdata, tmp_path):
    """The campaign rewinds one running scenario by undo log; a cut on a fresh copy, with the scenario
    really stopped by PowerCut, must leave the same flash (same boot outcome, same tear)."""
    with campaign(flash, image, seed=7, rollback=True) as c:
        ks = sorted({0, 1, 2, 100, c.phase_starts["otadata"], c.phase_starts["otadata"] + 1,
                     c.phase_starts["confirm"], c.phase_starts["confirm"] + 1, c.op_count - 1})
        points = [CutPoint(k, torn) for k in ks for torn in (False, True)]
        report = c.run(points)
    by_point = {(r.index, r.torn): r for r in report.results}
    for k in ks:
        for torn in (False, True):
            fresh = tmp_path / f"cut-{k}-{torn}.bin"
            shutil.copyfile(realdata / MERGED, fresh)
            with Device.open(fresh, rollback=True) as dev:
                dev.power_on_if_needed()
                target = dev.ota.get_next_update_partition(None)
                cutter = CutInjector(dev.flash)
                cutter.arm(k, torn=torn, seed=7)
                with pytest.raises(PowerCut):
                    run_scenario(dev, target, OtaPlan(image), ScenarioLog(dev.flash.op_count, dev.flash))
                cutter.detach()
                after = ScratchDevice(dev.flash, dev.settings, DeviceState()).boot(power_on=True)
                outcome = {"app0": "old", "app1": "new"}[after.booted.label]
            assert (outcome, cutter.left) == (by_point[(k, torn)].outcome, by_point[(k, torn)].left), (k, torn)


def test_replay_makes_the_https_runs_flash_operations(flash, image):
    with serve_files({"app.bin": image}) as srv, Device.open(flash) as dev:
        url, ca = srv.url("app.bin"), srv.tls.ca_pem
        plan, https_ops = record_https_ota(dev, url, cert_pem=ca, buffer_size=2048)
        assert plan.image == image and plan.buffer_size == 2048
        with Campaign(dev, plan, https_ops=https_ops) as c:
            assert c.replay_checked
            n = c.phase_starts["bootloader"]
            assert [(o.kind, o.addr, o.length, o.data) for o in c.ops[:n]] == [
                (o.kind, o.addr, o.length, o.data) for o in https_ops
            ]
        # A replay with other read sizes programs other pieces: the campaign refuses to pretend.
        with pytest.raises(EspError, match="differs from the HTTPS run at flash operation"):
            Campaign(dev, OtaPlan(image, buffer_size=1024), https_ops=https_ops)


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_url_json_summary(flash, image):
    with serve_files({"app.bin": image}) as srv:
        result = run_cli("powercut", flash, "--url", srv.url("app.bin"), "--cert-pem", srv.tls.ca_pem,
                         "--samples", 30, "--seed", 4, "--json", "--jobs", 1)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["cut_points"] == 30 and summary["bricked"] == 0 and summary["failures"] == []
    assert summary["replay_checked_against_https"] is True
    assert sum(row["cut_points"] for row in summary["phases"].values()) == 30


def test_cli_plain_http_needs_allow_http(flash, image):
    with serve_files({"app.bin": image}, tls=False) as srv:
        refused = run_cli("powercut", flash, "--url", srv.url("app.bin"), "--at", 3)
        allowed = run_cli("powercut", flash, "--url", srv.url("app.bin"), "--allow-http", "--at", 3, "--torn", "--json")
    assert refused.exit_code == 1 and "CONFIG_ESP_HTTPS_OTA_ALLOW_HTTP" in refused.output
    assert allowed.exit_code == 0, allowed.output
    summary = json.loads(allowed.output.strip().splitlines()[-1])
    assert summary["cut_points"] == 1 and summary["replay_checked_against_https"]


def overlapping_slots(flash) -> None:
    """Move app1 to 0x80000, over the middle of app0's image (the bootloader does not check overlaps)."""
    data = bytearray(flash.read_bytes())
    entry = 0x8000 + 3 * 32
    assert data[entry + 12 : entry + 16] == b"app1"
    data[entry + 4 : entry + 8] = (0x80000).to_bytes(4, "little")
    md5 = 0x8000 + 6 * 32
    data[md5 + 16 : md5 + 32] = hashlib.md5(bytes(data[0x8000:md5])).digest()
    flash.write_bytes(bytes(data))


def test_overlapping_slots_abort_the_update_by_default(flash, image, tmp_path):
    """esp_flash's dangerous-write protection covers the running app: the first erase of a slot that
    overlaps it aborts the app (CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS), before anything is written."""
    overlapping_slots(flash)
    app = tmp_path / "app.bin"
    app.write_bytes(image)
    result = run_cli("powercut", flash, "--image", app, "--samples", 12)
    assert result.exit_code == 1
    assert "the update fails even without a power cut" in result.output
    assert "overlaps the running app 'app0'" in result.output and "aborts here and resets" in result.output


def test_overlapping_slots_brick_and_the_report_says_how_to_reproduce(flash, image, tmp_path):
    """With CONFIG_SPI_FLASH_DANGEROUS_WRITE_ALLOWED the same layout bricks: what the checker finds."""
    overlapping_slots(flash)
    app = tmp_path / "app.bin"
    app.write_bytes(image)
    result = run_cli("powercut", flash, "--image", app, "--samples", 12, "--json", "--jobs", 1,
                     "--dangerous-writes", "allowed")
    assert result.exit_code == EXIT_NO_BOOTABLE, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["bricked"] > 0 and summary["cut_points"] == 12
    failure = next(f for f in summary["failures"] if f["phase"] == "download")
    assert "no bootable app" in failure["failures"][0]
    assert failure["reproduce"].endswith(f"--seed 0 --at {failure['index']}" + (" --torn" if failure["torn"] else ""))
    # the reproduction alone gives the same failure, in the text report
    args = ["powercut", flash, "--image", app, "--at", failure["index"]] + (["--torn"] if failure["torn"] else [])
    again = run_cli(*args)
    assert again.exit_code == EXIT_NO_BOOTABLE
    assert f"FAIL op {failure['index']}" in again.output and "bricked: 1 of 1 cut points" in again.output


def test_cli_usage_errors(flash, image, tmp_path):
    assert run_cli("powercut", flash).exit_code == 2
    assert run_cli("powercut", flash, "--image", flash, "--torn").exit_code == 2
    short = tmp_path / "short.bin"
    short.write_bytes(image[:512])
    result = run_cli("powercut", flash, "--image", short)
    assert result.exit_code == 3 and "1024-byte header" in result.output


def test_anti_rollback_update_that_raises_the_secure_version(flash):
    """sample_v3 (secure_version 2) over the real app0 (secure_version 0), anti-rollback on: the eFuse is
    burned only after the confirmation is written, so no cut point leaves an eFuse that refuses both apps."""
    image = (REPO / "firmware_samples" / "sample_v3.bin").read_bytes()
    with campaign(flash, image, rollback=True, anti_rollback=True) as c:
        report = c.run(c.every_point())
    assert report.bricked == 0 and report.failed == []
    phases = report.by_phase()
    assert phases["after"]["new"] == 1 and phases["confirm"]["new"] == 0


def test_text_report_lists_the_first_failures_and_counts_the_rest(flash, image, tmp_path):
    overlapping_slots(flash)
    app = tmp_path / "app.bin"
    app.write_bytes(image)
    result = run_cli("powercut", flash, "--image", app, "--samples", 40, "--bulk-flash-erase", "--jobs", 1,
                     "--dangerous-writes", "allowed")
    assert result.exit_code == EXIT_NO_BOOTABLE
    lines = result.output.splitlines()
    assert sum(line.startswith("FAIL op ") for line in lines) == 20
    assert any(line.startswith("... and ") and "more failures" in line for line in lines)
    reproduce = next(line for line in lines if "reproduce:" in line)
    assert "--bulk-flash-erase" in reproduce and "--seed 0 --at " in reproduce
    assert run_cli("powercut", flash, "--image", app, "--every", "--samples", 3).exit_code == 2


def test_an_update_that_fails_anyway_is_reported_as_such(flash, tmp_path):
    broken = tmp_path / "broken.bin"
    shutil.copyfile(REPO / "firmware_samples" / "sample_broken.bin", broken)
    result = run_cli("powercut", flash, "--image", broken)
    assert result.exit_code == 1
    assert "ESP_ERR_OTA_VALIDATE_FAILED: the update fails even without a power cut" in result.output


def test_flash_encryption_device(tmp_path, realdata):
    """A device with flash encryption on (ESP32 AES, key burned, flash encrypted at first boot) built from
    a real bootloader and sample_v1: the campaign reads, tears and rewinds ciphertext and still finds
    every cut point bootable."""
    from helpers_flash import make_flash, sample

    csv = (REPO / "partitions" / "two_ota_4MB.csv").read_text()
    flash = make_flash(tmp_path / "fe.bin", realdata, csv, {"ota_0": sample("v1")})
    key = tmp_path / "fe.key"
    key.write_bytes(bytes(range(32)))
    with Device.open(flash, rollback=True, flash_encryption_key=key, flash_encryption=True) as dev:
        assert dev.flash_encryption_enabled
        c = Campaign(dev, OtaPlan(sample("v2")), seed=2)
    with c:
        report = c.run(c.sample_points(40))
    assert report.bricked == 0 and report.failed == []
    assert report.by_phase()["after"]["new"] == 1
