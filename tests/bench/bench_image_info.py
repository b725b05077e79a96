"""``image-info`` on a 1.6 MB app, next to ``esptool image-info`` on the same file in the same run.

The app: the real Arduino ESP32 app of the merged 4 MB dump, its last (IROM) segment grown with
deterministic bytes to make a valid 1.6 MB image (checksum and SHA-256 recomputed; esptool must call
both valid, or the benchmark fails).
"""

from __future__ import annotations

import hashlib
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import fastest  # noqa: E402
from esp_ota_emu.cli.image_info import image_report, open_image_file  # noqa: E402
from esp_ota_emu.image import parse_image  # noqa: E402

MERGED = REPO.parent / "shared/realdata/derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"
APP_OFFSET = 0x10000
TARGET_SIZE = 1_600_000


def make_big_app() -> bytes:
    flash = MERGED.read_bytes()
    app = parse_image(flash, APP_OFFSET)
    last = app.segments[-1]
    grow = (TARGET_SIZE - app.image_len) // 4 * 4
    body = bytearray(flash[APP_OFFSET : last.end])
    body += random.Random(1).randbytes(grow)
    struct.pack_into("<I", body, last.file_offset - APP_OFFSET + 4, last.length + grow)
    body += bytes(15 - len(body) % 16) + b"\0"
    image = parse_image(bytes(body) + bytes(32))
    body[image.checksum_offset] = image.checksum_computed
    return bytes(body) + hashlib.sha256(body).digest()



def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        path = tmp / "app_1600k.bin"
        path.write_bytes(make_big_app())
        bindir = Path(sys.executable).parent

        def ours_in_process():
            with open_image_file(str(path)) as buf:
                assert image_report(buf, len(buf))["valid"]

        def ours_cli():
            subprocess.run([str(bindir / "esp-ota-emu"), "image-info", str(path)], check=True,
                           stdout=subprocess.DEVNULL)

        def esptool_cli():
            out = subprocess.run([sys.executable, "-m", "esptool", "image-info", str(path)], check=True,
                                 capture_output=True, text=True).stdout
            assert out.count("(valid)") == 2, out

        esptool_cli()  # the oracle accepts the image
        e, i, c = fastest(5, esptool_cli, ours_in_process, ours_cli)
        size = path.stat().st_size
        print(f"esptool image-info (CLI), {size} bytes       {e * 1000:8.1f} ms   baseline")
        print(f"esp-ota-emu image-info (CLI)                 {c * 1000:8.1f} ms   ratio {c / e:5.2f}x esptool")
        print(f"image-info (in process)                      {i * 1000:8.1f} ms   ratio {i / e:5.2f}x esptool")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
