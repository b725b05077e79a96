"""``make reliability``: how the OTA path survives power cuts and network faults, as Markdown tables.

Device: the real Arduino-ESP32 (IDF 4.4.7) merged 4 MB flash (app0 runs). Update: the real
StartCounter app (357 KB) into app1. Power cuts: every cut point (each flash operation cut cleanly
and torn, plus the end) of the OTA, the reset and the confirmation, for several device builds; a
deliberately broken layout (app1 overlapping app0) shows what a brick looks like in the table.
Network faults: the cases of tests/test_network_faults.py against the loopback HTTPS server.
Exit 1 if a sound configuration bricks or fails, or a network fault is not survived.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from conftest import REALDATA  # noqa: E402
from test_network_faults import (  # noqa: E402
    APP, FAULTS, MERGED, RESUME_FAULTS, TLS_CASES, bad_bodies, device_ca, make_pki,
)

from esp_ota_emu.device import Device  # noqa: E402
from esp_ota_emu.errors import EspError  # noqa: E402
from esp_ota_emu.https_ota.api import https_ota  # noqa: E402
from esp_ota_emu.powercut import PHASES, Campaign, OtaPlan, Report  # noqa: E402
from esp_ota_emu.testserver import Faults, serve_files  # noqa: E402

APP1, SLOT_SIZE = 0x150000, 0x140000

CONFIGS = {
    "v5, rollback off, sequential erase": ({"idf_release": "v5"}, {}, False),
    "v5, rollback on": ({"idf_release": "v5", "rollback": True}, {}, False),
    "v4, rollback off": ({"idf_release": "v4"}, {}, False),
    "v5, bulk flash erase": ({"idf_release": "v5"}, {"bulk_flash_erase": True}, False),
    "v5, skip validation on power-on (Arduino)": ({"skip_validation_on_power_on": True}, {}, False),
    "newest, rollback on, resume after each cut": ({"idf_release": "newest", "rollback": True}, {}, True),
}
# With ESP-IDF's default CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS the app aborts at the first erase in app0,
# before anything is written: the negative control lets the writes through to show what a brick looks like.
BROKEN = "broken layout: app1 overlaps app0, dangerous writes allowed (negative control)"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def overlap_app1_with_app0(flash: Path) -> None:
    """Move app1 to 0x80000 in the table (and fix its MD5): the bootloader does not check overlaps."""
    data = bytearray(flash.read_bytes())
    entry, md5 = 0x8000 + 3 * 32, 0x8000 + 6 * 32
    data[entry + 4 : entry + 8] = (0x80000).to_bytes(4, "little")
    data[md5 + 16 : md5 + 32] = hashlib.md5(bytes(data[0x8000:md5])).digest()
    flash.write_bytes(bytes(data))


def campaign(folder: Path, name: str, settings: dict, plan_options: dict, resume: bool, image: bytes) -> Report:
    flash = folder / f"{abs(hash(name))}.bin"
    shutil.copyfile(REALDATA / MERGED, flash)
    if name == BROKEN:
        overlap_app1_with_app0(flash)
    with Device.open(flash, **settings) as dev:
        c = Campaign(dev, OtaPlan(image, **plan_options), resume=resume)
    with c:
        return c.run(c.every_point(), jobs=os.cpu_count() or 1)


def power_cut_tables(image: bytes) -> tuple[str, bool]:
    rows, ok, phases = [], True, None
    with tempfile.TemporaryDirectory() as tmp:
        for name, (settings, plan_options, resume) in {**CONFIGS, BROKEN: ({"dangerous_writes": "allowed"}, {}, False)}.items():
            report = campaign(Path(tmp), name, settings, plan_options, resume, image)
            outcomes = report.by_phase()
            resumed = report.resume_counts()
            rows.append([
                name, report.operations, len(report.results),
                sum(r["old"] for r in outcomes.values()), sum(r["new"] for r in outcomes.values()),
                report.bricked, len(report.failed),
                f"{resumed['identical']}/{resumed['tried']}" if resumed["tried"] else "-",
                report.second_cuts,
                f"{report.seconds:.1f}",
            ])
            if name != BROKEN:
                ok &= report.bricked == 0 and not report.failed
            else:
                ok &= report.bricked > 0  # the checker must see a brick where there is one
            if name == "v5, rollback on":
                phases = outcomes
    main = table(["device build", "flash ops", "cut points", "old app", "new app", "bricked", "failed",
                  "resume identical", "2nd cuts in power-on", "seconds"], rows)
    per_phase = table(
        ["phase (v5, rollback on)", "flash ops", "cut points", "old app", "new app", "bricked"],
        [[p, phases[p]["operations"], phases[p]["cut_points"], phases[p]["old"], phases[p]["new"], phases[p]["bricked"]]
         for p in (*PHASES, "after") if p in phases],
    )
    return main + "\n\n" + per_phase, ok


def boots(flash: Path) -> str | None:
    with Device.open(flash, readonly=True) as dev:
        decision = dev.boot_decision()
        if decision.booted is None or not dev.verify_partition(decision.booted).ok:
            return None
        return decision.booted.label


def fresh_flash(folder: Path) -> Path:
    flash = folder / "flash.bin"
    shutil.copyfile(REALDATA / MERGED, flash)
    for stale in folder.glob("flash.bin.*"):
        stale.unlink()
    return flash


def attempt(flash: Path, url: str, ca: Path, release: str = "v5", **options) -> str:
    """One OTA; the ESP-IDF error name it failed with, or "(no error)"."""
    try:
        with Device.open(flash, idf_release=release) as dev:
            https_ota(dev, url, cert_pem=ca, **options)
    except EspError as err:
        return err.esp_err
    return "(no error)"


def survived(flash: Path, image: bytes, error: str, old_boots: bool, url: str, ca: Path, release: str = "v5",
             **options) -> tuple[list[str], bool]:
    """After a fault: the next OTA (or resume) from a sound server must give app1 == image and boot it."""
    recovery = attempt(flash, url, ca, release, **options)
    identical = recovery == "(no error)" and flash.read_bytes()[APP1 : APP1 + len(image)] == image and boots(flash) == "app1"
    return [error, "yes" if old_boots else "NO", "yes" if identical else "NO"], old_boots and identical


def network_table(image: bytes) -> tuple[str, bool]:
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pki = make_pki(folder / "pki")
        with serve_files({"app.bin": image, **bad_bodies(image)}, tls=pki["good"]) as srv:
            url, ca = srv.url("app.bin"), pki["good"].ca_pem
            for name, (faults, expected, _, options) in FAULTS.items():
                flash = fresh_flash(folder)
                release = options.get("idf_release", "v5")
                http = {k: v for k, v in options.items() if k != "idf_release"}
                srv.faults = faults
                error = attempt(flash, url, ca, release, **http)
                old_boots = boots(flash) == "app0"
                srv.faults = Faults()
                row, good = survived(flash, image, error, old_boots, url, ca, release, **http)
                rows.append([name, *row])
                ok &= good and error == expected
            flash = fresh_flash(folder)
            srv.faults = Faults(chunked=True)
            error = attempt(flash, url, ca)
            srv.faults = Faults()
            exact = flash.read_bytes()[APP1 : APP1 + len(image)] == image and boots(flash) == "app1"
            rows.append(["chunked body, no Content-Length (not a fault)", error, "-", "yes" if exact else "NO"])
            ok &= error == "(no error)" and exact
            for body in bad_bodies(image):
                flash = fresh_flash(folder)
                srv.faults = Faults(content_encoding="gzip" if body == "gzip" else None)
                error = attempt(flash, srv.url(body), ca)
                srv.faults = Faults()
                row, good = survived(flash, image, error, boots(flash) == "app0", url, ca)
                rows.append([f"{body} body instead of the image" + (" (Content-Encoding: gzip)" if body == "gzip" else ""),
                             *row])
                ok &= good and error != "(no error)"
            for name, range_fault in RESUME_FAULTS.items():
                flash = fresh_flash(folder)
                srv.faults = Faults(drop_after=200_000)
                error = attempt(flash, url, ca, "newest", resume=True)
                old_boots = boots(flash) == "app0"
                srv.faults = Faults(**({range_fault: True} if range_fault else {}))
                row, good = survived(flash, image, error, old_boots, url, ca, "newest", resume=True)
                rows.append([f"dropped at 200000, resumed; server answers {name}", *row])
                ok &= good
            srv.faults = Faults()
        for case in TLS_CASES:
            flash = fresh_flash(folder)
            with serve_files({"app.bin": image}, tls=pki[case]) as bad:
                error = attempt(flash, bad.url("app.bin"), device_ca(pki, case), **TLS_CASES[case])
            with serve_files({"app.bin": image}, tls=pki["good"]) as good_srv:
                row, good = survived(flash, image, error, boots(flash) == "app0", good_srv.url("app.bin"), ca)
            checked = " (with --cert-expiry-check)" if TLS_CASES[case] else ""
            rows.append([f"TLS: {case} certificate{checked}", *row])
            ok &= good and error != "(no error)"
    header = ["network fault", "error", "old app still boots", "next OTA / resume byte-identical and boots"]
    return table(header, rows), ok


def main() -> int:
    image = (REALDATA / APP).read_bytes()
    start = time.perf_counter()
    cuts, cuts_ok = power_cut_tables(image)
    net, net_ok = network_table(image)
    print(f"## Power cuts (OTA of {len(image)} bytes into app1 of the real Arduino-ESP32 flash; "
          "each operation cut cleanly and torn, seed 0)\n")
    print(cuts + "\n")
    print("## Network faults (loopback HTTPS test server)\n")
    print(net + "\n")
    print(f"({time.perf_counter() - start:.0f} s; `make reliability`)")
    return 0 if cuts_ok and net_ok else 1


if __name__ == "__main__":
    sys.exit(main())
