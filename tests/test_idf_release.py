"""The ESP-IDF release setting: versions, the v4/v5/newest names, and how a change's first releases
per branch decide which releases have it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli
from esp_ota_emu.errors import EXIT_BAD_INPUT, InputError
from esp_ota_emu.idf_release import ALIASES, CHANGES, Change, parse_release
from helpers_flash import make_flash, sample

LAYOUT = """nvs, data, nvs, 0x9000, 0x4000,
otadata, data, ota, 0xd000, 0x2000,
ota_0, app, ota_0, 0x10000, 0x20000,
ota_1, app, ota_1, 0x30000, 0x20000,
"""


@pytest.mark.parametrize("text,version", [("v5.5.2", (5, 5, 2)), ("5.5", (5, 5, 0)), ("v6.0", (6, 0, 0)),
                                          ("v4.3.3", (4, 3, 3)), ("v4.4.1", (4, 4, 1)), ("v6.0.9", (6, 0, 9)),
                                          ("v6.1", (6, 1, 0))])
def test_versions(text, version):
    assert parse_release(text).version == version


def test_names_stand_for_versions():
    assert {name: str(parse_release(name)) for name in ALIASES} == ALIASES
    assert str(parse_release("v5")) == "v5.4.4"


@pytest.mark.parametrize("text", ["v4.2.5", "v4.3.2", "v4.4", "v6.2", "v7", "latest", "5", ""])
def test_unknown_releases_are_refused(text):
    """Before v4.3.3 and in v4.4.0, esp_https_ota read no 1024-byte header and checked no chip id."""
    with pytest.raises(InputError) as err:
        parse_release(text)
    assert "v4.3.3 to v6.1.x except v4.4.0" in str(err.value)


def test_a_change_is_in_later_patches_of_its_branches_and_in_every_later_branch():
    fix = Change("a backported fix", ("4.4.7", "5.0.6", "5.2"))
    has = {v: parse_release(v).has(fix) for v in
           ("v4.3.7", "v4.4.6", "v4.4.7", "v5.0.5", "v5.0.6", "v5.1.7", "v5.2", "v5.4.4", "v6.0")}
    assert has == {"v4.3.7": False, "v4.4.6": False, "v4.4.7": True, "v5.0.5": False, "v5.0.6": True,
                   "v5.1.7": False, "v5.2": True, "v5.4.4": True, "v6.0": True}
    backport_only = Change("in one patch release, not yet in the next branch", ("5.5.5", "6.1"))
    assert [parse_release(v).has(backport_only) for v in ("v5.5.4", "v5.5.5", "v6.0.2")] == [False, True, False]


def test_cli_setting_persists_and_is_shown(realdata, tmp_path):
    flash = make_flash(tmp_path / "f.bin", realdata, LAYOUT, {"ota_0": sample("v1")}, size=1 << 20)
    runner = CliRunner()
    default = runner.invoke(cli, ["info", str(flash)])
    assert "(ESP-IDF v5 = v5.4.4 app behaviour)" in default.output
    chosen = runner.invoke(cli, ["info", str(flash), "--idf-release", "v5.5.2", "--json"])
    report = json.loads(chosen.output)
    assert (report["idf_release"], report["idf_version"]) == ("v5.5.2", "v5.5.2")
    again = runner.invoke(cli, ["info", str(flash)])  # the sidecar keeps it
    assert "(ESP-IDF v5.5.2 app behaviour)" in again.output
    bad = runner.invoke(cli, ["info", str(flash), "--idf-release", "v6.2"])
    assert bad.exit_code == EXIT_BAD_INPUT and "outside the releases the emulator follows" in bad.output


def test_cli_lists_the_changes_and_which_a_release_has():
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["idf-release", "--json"]).output)
    assert listed["release"] is None
    assert [c["name"] for c in listed["changes"]] == [name.lower() for name in CHANGES]
    assert all("has" not in c for c in listed["changes"])
    v552 = json.loads(runner.invoke(cli, ["idf-release", "v5.5.2", "--json"]).output)
    has = {c["name"]: c["has"] for c in v552["changes"]}
    assert v552["release"] == "v5.5.2"
    assert has["begin_invalidates_inactive_otadata"] and not has["rewrite_keeps_selected_slot"]
    assert has == {name.lower(): parse_release("v5.5.2").has(change) for name, change in CHANGES.items()}
    text = runner.invoke(cli, ["idf-release", "newest"]).output
    assert text.startswith("ESP-IDF newest = v6.1.0:\n") and "yes rewrite_keeps_selected_slot (from v6.0)" in text


def test_readme_release_table_names_every_first_release():
    """The README's table of release differences is written by hand: every first release listed in
    idf_release.py appears in it, and it names no other."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("| behaviour | first releases |")
    table = readme[start : readme.index("\n\n", start)]
    documented = {v for row in table.splitlines()[2:] for v in re.findall(r"v\d+\.\d+(?:\.\d+)?", row.split("|")[-2])}
    modelled = {f"v{v}" for name, change in CHANGES.items() if name != "HEADER_FIRST" for v in change.since}
    assert documented == modelled
