"""Scenario files: the shipped examples, failures that name their step, JSON/TOML, OTA from a URL, bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.errors import EXIT_BAD_INPUT, EXIT_INVALID
from esp_ota_emu.formats.app_desc import APP_DESC_OFFSET, AppDesc, c_text
from esp_ota_emu.testserver import serve_files
from helpers_flash import REPO, make_flash, real_app, sample

EXAMPLES = REPO / "examples" / "scenarios"
TWO_OTA = (REPO / "partitions" / "two_ota_4MB.csv").read_text()


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def device(realdata, tmp_path):
    return make_flash(tmp_path / "device.bin", realdata, TWO_OTA, {"ota_0": sample("v1")})


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.iterdir()))
def test_examples_pass_on_a_fresh_device(device, name):
    before = device.read_bytes()
    result = run("scenario", EXAMPLES / name, "--flash", device, "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert r["ok"] and all(step["ok"] for step in r["steps"])
    assert device.read_bytes() == before  # ran on a copy


def test_json_and_toml_twins_agree(device):
    outs = [json.loads(run("scenario", EXAMPLES / f"unconfirmed_update_rolls_back.{ext}", "--flash", device,
                           "--json").output) for ext in ("toml", "json")]
    assert outs[0] == outs[1]
    assert [s["booted"] for s in outs[0]["steps"]] == ["ota_0", "ota_0", "ota_1", "ota_1", "ota_0", "ota_0"]


def _write(tmp_path, steps, **top):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**top, "steps": steps}))
    return path


def test_a_wrong_expectation_names_the_step_and_exits_1(device, tmp_path):
    v2 = str(REPO / "firmware_samples" / "sample_v2.bin")
    path = _write(tmp_path, [
        {"do": "ota", "file": v2},
        {"do": "reset", "expect": {"booted": "ota_1"}},
        {"do": "power-cut", "expect": {"booted": "ota_1", "version": "2.0.0"}},  # no rollback: it stays
        {"do": "reset", "expect": {"booted": "ota_0"}},  # wrong on purpose
        {"do": "reset"},
    ], flash="device.bin", device={"rollback": False})
    (tmp_path / "device.bin").write_bytes(device.read_bytes())
    result = CliRunner().invoke(cli, ["scenario", str(path)], catch_exceptions=False)
    assert result.exit_code == EXIT_INVALID
    assert "scenario failed at step 4 (reset): expected booted 'ota_0', got 'ota_1'" in result.stderr
    assert "step 5" not in result.stdout  # stops at the failure
    assert "step 3 (power-cut): running ota_1 2.0.0" in result.stdout


def test_set_boot_skip_validate_step(device, tmp_path):
    """set-boot with skip_validate (v6.1) selects the empty ota_1; the reset falls back to ota_0. Without
    it the same step fails with ESP_ERR_OTA_VALIDATE_FAILED."""
    path = _write(tmp_path, [
        {"do": "set-boot", "partition": "ota_1", "expect": {"error": "ESP_ERR_OTA_VALIDATE_FAILED"}},
        {"do": "set-boot", "partition": "ota_1", "skip_validate": True},
        {"do": "reset", "expect": {"booted": "ota_0"}},
    ], flash="device.bin", device={"idf_release": "v6.1"})
    (tmp_path / "device.bin").write_bytes(device.read_bytes())
    result = run("scenario", path, "--json")
    assert result.exit_code == 0, result.output
    assert [step["ok"] for step in json.loads(result.output)["steps"]] == [True, True, True]


def test_ota_from_a_url(realdata, tmp_path):
    app = real_app(realdata)
    flash = make_flash(tmp_path / "device.bin", realdata, TWO_OTA, {"ota_0": sample("v1")})
    with serve_files({"app.bin": app}) as srv:
        path = _write(tmp_path, [
            {"do": "ota", "url": srv.url("app.bin"), "cert_pem": str(srv.tls.ca_pem), "expect": {"booted": "ota_0"}},
            {"do": "reset", "expect": {"booted": "ota_1", "state": "PENDING_VERIFY"}},
            {"do": "confirm", "expect": {"state": "VALID"}},
            {"do": "ota", "url": srv.url("missing.bin"), "cert_pem": str(srv.tls.ca_pem), "expect": {"error": "ESP_FAIL"}},
            {"do": "ota", "url": srv.url("app.bin") + "?" + "x" * 600, "cert_pem": str(srv.tls.ca_pem),
             "buffer_size_tx": 1024, "tls13": True, "expect": {"booted": "ota_1"}},
        ], device={"rollback": True})
        result = run("scenario", path, "--flash", flash, "--json")
    r = json.loads(result.output)
    assert result.exit_code == 0, r
    version = c_text(AppDesc.parse(app[APP_DESC_OFFSET : APP_DESC_OFFSET + AppDesc.sizeof()]).version)
    assert [s["version"] for s in r["steps"]] == ["1.0.0", version, version, version, version]
    assert srv.requests[-1].tls_version == "TLSv1.3" and len(srv.requests[-1].path) > 600
    assert r["steps"][3]["error"].startswith("ESP_FAIL")


@pytest.mark.parametrize("content,message", [
    ('{"steps": [{"do": "jump"}]}', "unknown action 'jump'"),
    ('{"steps": []}', "no steps"),
    ('{"steps": [{"do": "ota"}]}', "either 'file' or 'url'"),
    ('{"device": {"rollbak": true}, "steps": [{"do": "reset"}]}', "unknown device setting(s) rollbak"),
    ('{"steps": [{"do": "reset", "expect": {"boot": "x"}}]}', "'expect' takes"),
    ('{"device": {"rollback": "yes"}, "steps": [{"do": "reset"}]}', "rollback must be a bool"),
    ("[[step]\ndo = reset", "not valid TOML"),
    ('{"steps": [', "not valid JSON"),
])
def test_bad_scenarios_are_input_errors(device, tmp_path, content, message):
    path = tmp_path / ("s.json" if content.startswith("{") else "s.toml")
    path.write_text(content)
    result = CliRunner().invoke(cli, ["scenario", str(path), "--flash", str(device)])
    assert result.exit_code == EXIT_BAD_INPUT and message in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_missing_ota_file_and_flash(device, tmp_path):
    path = _write(tmp_path, [{"do": "ota", "file": "nope.bin"}])
    assert run("scenario", path, "--flash", device).exit_code == EXIT_BAD_INPUT
    assert run("scenario", path).exit_code == EXIT_BAD_INPUT  # no flash at all
