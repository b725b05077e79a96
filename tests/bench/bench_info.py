"""``info`` on a 16 MB flash, against reading the whole file once (SHA-256) as the baseline.

The flash: the real 4 MB Arduino dump grown to 16 MB, with its app copied into the second slot
and otadata selecting it, so info verifies two 830 KB images and walks a full 16 MB file.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import fastest  # noqa: E402
from esp_ota_emu.device import Device  # noqa: E402
from esp_ota_emu.formats.otadata import build_entry  # noqa: E402
from esp_ota_emu.info import flash_report  # noqa: E402

MERGED = REPO.parent / "shared/realdata/derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"



def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        flash = tmp / "flash16.bin"
        data = bytearray(MERGED.read_bytes())
        data[0x150000 : 0x150000 + 0x140000] = data[0x10000 : 0x10000 + 0x140000]
        data[0xF000 : 0xF000 + 32] = build_entry(2)
        data += b"\xff" * ((16 << 20) - len(data))
        flash.write_bytes(bytes(data))

        def baseline():
            hashlib.sha256(flash.read_bytes()).digest()

        def info():
            with Device.open(flash, readonly=True) as dev:
                assert flash_report(dev)["boot"]["partition"] == "app1"

        def info_cli():
            subprocess.run([sys.executable, "-m", "esp_ota_emu", "info", str(flash)],
                           check=True, stdout=subprocess.DEVNULL)

        b, i, c = fastest(5, baseline, info, info_cli)
        print(f"baseline: read + SHA-256 of the 16 MB file   {b * 1000:8.1f} ms")
        print(f"info (in process), 16 MB flash            {i * 1000:8.1f} ms   ratio {i / b:5.2f}x baseline")
        print(f"esp-ota-emu info (CLI, incl. start-up)     {c * 1000:8.1f} ms   ratio {c / b:5.2f}x baseline")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
