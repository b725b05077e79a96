"""``make fuzz``: the long fuzzing run, outside ``make test``.

1. The property-based tests (tests/test_fuzz.py, tests/test_faults.py) with many more examples
   (``ESP_OTA_EMU_FUZZ_EXAMPLES``, default 5000 here against 40-60 in the normal suite).
2. Torn-write fuzzing: power-cut campaigns over every cut point of a real OTA, repeated with many
   seeds (each seed tears every operation differently) for each device build of the reliability
   report. Any brick or failed invariant is printed with its reproduction and fails the run.

Options: ``--examples N``, ``--seeds N`` (default 20).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS.parent))
sys.path.insert(0, str(TESTS))

from conftest import REALDATA  # noqa: E402
from reliability import CONFIGS  # noqa: E402
from test_network_faults import APP, MERGED  # noqa: E402

from esp_ota_emu.device import Device  # noqa: E402
from esp_ota_emu.powercut import Campaign, OtaPlan  # noqa: E402


def property_tests(examples: int) -> bool:
    env = {**os.environ, "ESP_OTA_EMU_FUZZ_EXAMPLES": str(examples)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
           str(TESTS / "test_fuzz.py"), str(TESTS / "test_faults.py")]
    print(f"== property tests, {examples} examples each", flush=True)
    return subprocess.run(cmd, cwd=TESTS.parent, env=env).returncode == 0


def torn_write_campaigns(seeds: int) -> bool:
    image = (REALDATA / APP).read_bytes()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, (settings, plan_options, resume) in CONFIGS.items():
            flash = Path(tmp) / "flash.bin"
            shutil.copyfile(REALDATA / MERGED, flash)
            for stale in Path(tmp).glob("flash.bin.*"):
                stale.unlink()
            cuts = bricked = failed = 0
            with Device.open(flash, **settings) as dev:
                campaigns = [Campaign(dev, OtaPlan(image, **plan_options), seed=seed, resume=resume)
                             for seed in range(seeds)]
            for c in campaigns:
                with c:
                    report = c.run(c.every_point(), jobs=os.cpu_count() or 1)
                cuts += len(report.results)
                bricked += report.bricked
                failed += len(report.failed)
                for r in report.failed:
                    print(f"  FAIL seed {c.seed} op {r.index} ({r.variant}, {r.phase}): "
                          f"{'; '.join(r.failures)}")
            print(f"== torn writes, {name}: {seeds} seeds, {cuts} cut points, bricked {bricked}, failed {failed}",
                  flush=True)
            ok &= bricked == 0 and failed == 0
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    ok = property_tests(args.examples)
    ok &= torn_write_campaigns(args.seeds)
    print("fuzz: all properties held" if ok else "fuzz: FAILURES above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
