"""HTTPS OTA of a 4 MB image over loopback into a 16 MB flash, against a plain httpx download.

The baseline is the same URL streamed with httpx and thrown away, in the same run, so the ratio
(download rate / OTA rate) compares across machines. Goal: ratio >= 0.8. Memory: tracemalloc's peak
during the OTA for a 1 MB and a 4 MB image; it should not grow with the image.

The image: the real Arduino ESP32 app with one extra padding segment (load address 0, as esptool
emits) of pseudo-random bytes, checksum and SHA-256 recomputed, so esp_ota_end's verification passes.
"""

from __future__ import annotations

import hashlib
import random
import ssl
import struct
import sys
import tempfile
import tracemalloc
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import fastest  # noqa: E402
from esp_ota_emu.device import Device  # noqa: E402
from esp_ota_emu.formats.image import ESP_CHECKSUM_MAGIC  # noqa: E402
from esp_ota_emu.https_ota.api import https_ota  # noqa: E402
from esp_ota_emu.image.reader import xor_bytes  # noqa: E402
from esp_ota_emu.mkflash import build_flash  # noqa: E402
from esp_ota_emu.partitions import PartitionTable  # noqa: E402
from esp_ota_emu.testserver import serve_files  # noqa: E402

REALDATA = REPO.parent / "shared/realdata"
MERGED = REALDATA / "derived/esp32_arduino-idf-v4.4.7_fivef_merged_4MB_with_boot_app0.bin"
APP = REALDATA / "arduino-esp32/v1.0.6_idf-v3.3.5/StartCounter.ino.bin"
TABLE = """nvs,data,nvs,0x9000,0x5000,
otadata,data,ota,0xe000,0x2000,
app0,app,ota_0,0x10000,0x600000,
app1,app,ota_1,0x610000,0x600000,
"""


def grow_image(app: bytes, total: int) -> bytes:
    """``app`` with a padding segment appended so that the image is about ``total`` bytes."""
    count = app[1]
    offset, segments = 24, []
    for _ in range(count):
        load, length = struct.unpack_from("<II", app, offset)
        segments.append(app[offset + 8 : offset + 8 + length])
        offset += 8 + length
    pad_len = (total - offset - 8 - 48) & ~3
    pad = random.Random(0).randbytes(pad_len)
    body = bytearray(app[:offset]) + struct.pack("<II", 0, pad_len) + pad
    body[1] = count + 1
    checksum = ESP_CHECKSUM_MAGIC ^ xor_bytes(b"".join(segments) + pad)
    body += b"\x00" * (15 - len(body) % 16) + bytes([checksum])
    if app[23] == 1:
        body += hashlib.sha256(body).digest()
    return bytes(body)


def make_flash(folder: Path) -> Path:
    merged = MERGED.read_bytes()
    return build_flash(
        folder / "flash16.bin",
        partitions=PartitionTable.from_csv(TABLE),
        bootloader=merged[0x1000:0x8000],
        apps={"app0": merged[0x10000 : 0x10000 + 0x140000]},
        size="16MB",
        chip="esp32",
    )



def main() -> None:
    app = APP.read_bytes()
    images = {"4MB": grow_image(app, 4 << 20), "1MB": grow_image(app, 1 << 20)}
    with tempfile.TemporaryDirectory() as tmp:
        flash = make_flash(Path(tmp))
        with serve_files(images) as srv:
            trust = ssl.create_default_context(cafile=str(srv.tls.ca_pem))
            ca = srv.tls.ca_pem.read_text()
            url = srv.url("4MB")

            def download():
                with httpx.stream("GET", url, verify=trust) as r:
                    for _ in r.iter_raw():
                        pass

            def ota(name="4MB"):
                with Device.open(flash) as dev:
                    result = https_ota(dev, srv.url(name), cert_pem=ca)
                assert result.boot_partition_updated and result.bytes_written == len(images[name])

            b, o = fastest(25, download, ota)
            peaks = {}
            for name in ("1MB", "4MB"):
                tracemalloc.start()
                ota(name)
                peaks[name] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        size = len(images["4MB"]) / 1e6
        print(f"baseline: httpx streaming download of {size:.1f} MB   {b * 1000:7.1f} ms  {size / b:7.1f} MB/s")
        print(f"esp_https_ota into a 16 MB flash               {o * 1000:7.1f} ms  {size / o:7.1f} MB/s"
              f"   ratio {b / o:4.2f} (goal >= 0.8)")
        print(f"peak traced memory during the OTA: 1 MB image {peaks['1MB'] / 1e3:.0f} kB, "
              f"4 MB image {peaks['4MB'] / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
