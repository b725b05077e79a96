"""HTTPS OTA of a 4 MB image over loopback into a 16 MB flash, against a plain httpx download.

The baseline is the same URL streamed with plain httpx and thrown away, in the same run, so the
ratio (download rate / OTA rate) compares across machines. Its TLS settings are the device's (the
root CA, TLS 1.2 at most, as ESP-IDF's mbedTLS), in a plain ssl.SSLContext, so that both sides run
the same cipher. Goal: ratio >= 0.8. For reference, httpx's own defaults (TLS 1.3) are measured too,
and so is the emulator's transport alone (its HTTP client reading the body, nothing written): it
takes every TLS record that has arrived in one receive, so it is faster than the baseline, and the
OTA's time over it is what the emulation, hashing and verification cost.

Times are medians over interleaved rounds (the fastest runs are printed beside them): the server
shares this process and its GIL, and single downloads now and then get much faster than typical,
which makes a ratio of fastest runs swing by 0.1 from one run of the script to the next.

Memory: tracemalloc's peak during the OTA for a 1 MB and a 4 MB image; it should not grow with the image.

The SHA-256 line: computing the SHA-256 that esp_ota_end checks, alone (hashlib over as many bytes as
the image has, in 256 KiB pieces that stay in the CPU cache; timed in the same rounds). Added to the
download it gives the best ratio an emulation that hashed on the download's thread could reach for
that image, with the NOR writes and everything else free. The emulator hashes all but the image's
last few hundred KiB on a background thread while the download goes on, so that line is not its
floor; it shows what the hashing would cost the download's thread.

The images: the real ESP-IDF v4.4.7 Arduino app of the merged flash (SHA-256 appended, as ESP-IDF
builds apps) and, without one, Arduino 1.0.6's OTA example payload (StartCounter), each grown with
one extra padding segment (load address 0, as esptool emits) of pseudo-random bytes, checksum and
SHA-256 recomputed, so esp_ota_end's verification passes.
"""

from __future__ import annotations

import hashlib
import random
import ssl
import statistics
import struct
import sys
import tempfile
import tracemalloc
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_flash import real_app  # noqa: E402
from timing import interleaved  # noqa: E402
from esp_ota_emu.device import Device  # noqa: E402
from esp_ota_emu.formats.image import ESP_CHECKSUM_MAGIC  # noqa: E402
from esp_ota_emu.https_ota.api import https_ota  # noqa: E402
from esp_ota_emu.https_ota.client import HttpClient  # noqa: E402
from esp_ota_emu.https_ota.config import HttpConfig  # noqa: E402
from esp_ota_emu.idf_release import parse_release  # noqa: E402
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


ROUNDS = 40
_PIECE = random.Random(1).randbytes(256 * 1024)


def sha256_compute(length: int) -> bytes:
    """SHA-256 over ``length`` bytes of one cached 256 KiB piece: the hashing's cost without memory
    stalls."""
    sha = hashlib.sha256()
    for _ in range(length // len(_PIECE)):
        sha.update(_PIECE)
    sha.update(_PIECE[: length % len(_PIECE)])
    return sha.digest()



def line(what: str, runs: list[float], size: float, extra: str = "") -> str:
    """One result: the median time, the fastest run in brackets, the median rate."""
    median = statistics.median(runs)
    return (f"  {what:<46} {median * 1000:6.1f} ms ({min(runs) * 1000:5.1f})  {size / median:6.1f} MB/s"
            + (f"   {extra}" if extra else ""))


def main() -> None:
    apps = {"idf": real_app(REALDATA), "arduino": APP.read_bytes()}
    images = {f"{name}-4MB": grow_image(app, 4 << 20) for name, app in apps.items()}
    images["idf-1MB"] = grow_image(apps["idf"], 1 << 20)
    with tempfile.TemporaryDirectory() as tmp:
        flash = make_flash(Path(tmp))
        with serve_files(images) as srv:
            ca = srv.tls.ca_pem.read_text()
            device_tls = ssl.create_default_context(cafile=str(srv.tls.ca_pem))
            device_tls.maximum_version = ssl.TLSVersion.TLSv1_2
            httpx_default_tls = ssl.create_default_context(cafile=str(srv.tls.ca_pem))

            def download(name: str, context: ssl.SSLContext) -> None:
                with httpx.stream("GET", srv.url(name), verify=context) as r:
                    for _ in r.iter_raw():
                        pass

            def transport(name: str) -> None:
                client = HttpClient(HttpConfig(url=srv.url(name), cert_pem=ca), parse_release("v5.5"))
                client.open()
                while client.read(256 * 1024):
                    pass
                client.cleanup()

            def ota(name: str) -> None:
                with Device.open(flash) as dev:
                    result = https_ota(dev, srv.url(name), cert_pem=ca)
                assert result.boot_partition_updated and result.bytes_written == len(images[name])

            idf_base, idf_tls13, idf_transport, idf_ota, ard_base, ard_ota, sha = interleaved(
                ROUNDS,
                lambda: download("idf-4MB", device_tls),
                lambda: download("idf-4MB", httpx_default_tls),
                lambda: transport("idf-4MB"),
                lambda: ota("idf-4MB"),
                lambda: download("arduino-4MB", device_tls),
                lambda: ota("arduino-4MB"),
                lambda: sha256_compute(len(images["idf-4MB"])),
            )
            peaks = {}
            for name in ("idf-1MB", "idf-4MB"):
                tracemalloc.start()
                ota(name)
                peaks[name] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()

    def ratio(base: list[float], runs: list[float]) -> float:
        return statistics.median(base) / statistics.median(runs)

    size = len(images["idf-4MB"]) / 1e6
    print(f"medians of {ROUNDS} interleaved rounds (fastest run in brackets)")
    print(f"{size:.1f} MB image with its SHA-256 appended (the ESP-IDF v4.4.7 app, grown):")
    print(line("baseline: httpx download, the device's TLS 1.2", idf_base, size))
    print(line("esp_https_ota into a 16 MB flash", idf_ota, size, f"ratio {ratio(idf_base, idf_ota):4.2f} (goal >= 0.8)"))
    print(line("reference: httpx download, its default TLS 1.3", idf_tls13, size,
               f"OTA ratio to it {ratio(idf_tls13, idf_ota):4.2f}"))
    print(line("reference: the emulator's transport alone", idf_transport, size,
               f"OTA ratio to it {ratio(idf_transport, idf_ota):4.2f}"))
    serial = statistics.median(idf_base) + statistics.median(sha)
    print(line("reference: computing its SHA-256 (hashlib)", sha, size,
               f"download, then it: ratio {statistics.median(idf_base) / serial:4.2f}"))
    size = len(images["arduino-4MB"]) / 1e6
    print(f"{size:.1f} MB image without SHA-256 (Arduino 1.0.6's OTA example payload, grown):")
    print(line("baseline: httpx download, the device's TLS 1.2", ard_base, size))
    print(line("esp_https_ota into a 16 MB flash", ard_ota, size, f"ratio {ratio(ard_base, ard_ota):4.2f} (goal >= 0.8)"))
    print(f"peak traced memory during the OTA: 1 MB image {peaks['idf-1MB'] / 1e3:.0f} kB, "
          f"4 MB image {peaks['idf-4MB'] / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
