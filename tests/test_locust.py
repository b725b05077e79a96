"""Fleet mode across machines: Locust, headless, runs emulated devices from examples/locustfile.py.

Locust runs in its own process (it monkey-patches the standard library with gevent) against a
loopback HTTPS server in this process; its final statistics (``--json``) and the server's request
log say what happened.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esp_ota_emu.testserver import serve_files

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO / "examples" / "locustfile.py"
MERGED = "derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"
HELLO = "esp-serial-flasher/hello-world_2025-08/ESP32/hello_world"


@pytest.fixture
def template(tmp_path, realdata):
    path = tmp_path / "template.bin"
    shutil.copyfile(realdata / MERGED, path)
    return path


@pytest.fixture(scope="module")
def app_version(realdata) -> str:
    line = next(x for x in (realdata / f"{HELLO}.imageinfo.txt").read_text().splitlines() if x.startswith("App version:"))
    return line.split(":", 1)[1].strip()


def locust(host: str, *args, users: int = 3, run_time: str = "60s") -> tuple[int, list[dict]]:
    """Run Locust headless (``users`` users, each updating 2 devices); return its exit code and final stats.

    Standalone, the run time is only a fallback: the run ends as soon as every user has updated its devices.
    """
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", "10",
         "-t", run_time, "--host", host, "--esp-devices-per-user", "2", "--json", "--skip-log", *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.stdout.strip().startswith("["), proc.stdout + proc.stderr
    assert time.monotonic() - start < 30, "the run did not end when the users were done"
    return proc.returncode, max(json_documents(proc.stdout), key=len)


def json_documents(text: str) -> list:
    """Every JSON document printed one after another (with --processes the workers print theirs too)."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return docs


def rows(stats: list[dict]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(s["method"], s["name"]): (s["num_requests"], s["num_failures"]) for s in stats}


def test_locust_users_are_devices_that_update_and_boot(realdata, template, app_version):
    app = (realdata / f"{HELLO}.bin").read_bytes()
    with serve_files({"fw/app.bin": app}) as srv:
        code, stats = locust(
            srv.base_url, "--esp-template", template, "--esp-path", "/fw/app.bin",
            "--esp-cert-pem", srv.tls.ca_pem, "--esp-rollback",
        )
        requests = list(srv.requests)
    assert code == 0
    assert rows(stats) == {("OTA", "/fw/app.bin"): (6, 0), ("BOOT", f"app1 {app_version}"): (6, 0)}
    ota = next(s for s in stats if s["method"] == "OTA")
    assert ota["total_content_length"] == 6 * len(app)
    assert [(r.method, r.path, r.status) for r in requests] == [("GET", "/fw/app.bin", 200)] * 6
    assert {r.header("User-Agent") for r in requests} == {"ESP32 HTTP Client/1.0"}


def test_locust_counts_failed_updates(realdata, template):
    with serve_files({"app.bin": (realdata / f"{HELLO}.bin").read_bytes()}) as srv:
        code, stats = locust(
            srv.base_url, "--esp-template", template, "--esp-path", "/missing.bin", "--esp-cert-pem", srv.tls.ca_pem,
        )
    assert code == 1  # Locust's exit code when requests failed
    assert rows(stats) == {("OTA", "/missing.bin"): (6, 6)}


def test_locust_master_and_workers(realdata, template, app_version):
    """Locust's distributed mode: a master and two worker processes (--processes), the users spread over them."""
    app = (realdata / f"{HELLO}.bin").read_bytes()
    with serve_files({"app.bin": app}) as srv:
        code, stats = locust(
            srv.base_url, "--processes", "2", "--esp-template", template, "--esp-path", "/app.bin",
            "--esp-cert-pem", srv.tls.ca_pem, users=4, run_time="4s",
        )
        requests = list(srv.requests)
    assert code == 0
    assert rows(stats) == {("OTA", "/app.bin"): (8, 0), ("BOOT", f"app1 {app_version}"): (8, 0)}
    assert len(requests) == 8
