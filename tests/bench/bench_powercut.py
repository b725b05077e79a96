"""Every cut point of a 1 MB OTA (clean and torn, plus the reset and the confirmation) on 2 cores.

Device: the real Arduino-ESP32 merged 4 MB flash (app0 runs); update: the real StartCounter app grown
to 1 MB with a padding segment (``bench_ota.grow_image``), into app1 (1.25 MB). Baseline, measured in
the same run: one uncut pass of the same scenario (restore + OTA + reset + confirmation + a power-on
check), so "cost per cut point / baseline" compares across machines. Goal: the whole campaign in
under a minute on 2 cores.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_ota import APP, MERGED, grow_image  # noqa: E402

from esp_ota_emu.device import Device  # noqa: E402
from esp_ota_emu.powercut import AFTER, Campaign, CutPoint, OtaPlan  # noqa: E402

JOBS = 2
GOAL_SECONDS = 60


def main() -> int:
    image = grow_image(APP.read_bytes(), 1 << 20)
    with tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp) / "flash.bin"
        shutil.copyfile(MERGED, flash)
        with Device.open(flash) as dev:
            campaign = Campaign(dev, OtaPlan(image))
        with campaign:
            uncut = CutPoint(campaign.op_count, False)
            campaign.run([uncut])  # warm-up
            start = time.perf_counter()
            for _ in range(3):
                campaign.run([uncut])
            baseline = (time.perf_counter() - start) / 3
            points = campaign.every_point()
            report = campaign.run(points, jobs=JOBS)
    per_cut = report.seconds / len(points)
    phases = report.by_phase()
    print(f"image {len(image) / 1e6:.2f} MB, {report.operations} flash operations "
          f"({', '.join(f'{p} {n}' for p, n in report.phase_operations.items())})")
    print(f"baseline: one uncut scenario + power-on check   {baseline * 1000:7.1f} ms")
    print(f"{len(points)} cut points on {JOBS} cores            {report.seconds:7.1f} s   "
          f"{per_cut * 1000:5.1f} ms per cut point = {per_cut / baseline:4.2f} x baseline   (goal < {GOAL_SECONDS} s)")
    print(f"bricked {report.bricked}, other failures {len(report.failed) - report.bricked}, "
          f"old app {sum(r['old'] for r in phases.values())}, new app {sum(r['new'] for r in phases.values())}, "
          f"after the end: {phases[AFTER]['new']} new")
    return 0 if report.bricked == 0 and not report.failed and report.seconds < GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
