"""``make bench``: run every ``bench_*.py`` beside this file, each in its own process, and print its lines.

Each benchmark measures its own baseline in the same run and prints ratios against it, so the
numbers compare across machines. A benchmark that fails is reported and makes the run exit 1.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"== {script.stem}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], cwd=HERE.parents[1])
        print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
        if proc.returncode:
            failed.append(script.stem)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
