"""Fleet: 1000 concurrent emulated devices each doing a 1 MB HTTPS OTA against a local server.

Every device clones the real Arduino ESP32 4 MB flash (copy-on-write), downloads the 1 MB image
into its passive slot through esp_https_ota, resets, confirms the new app and resets again. The
server is ``esp-ota-emu serve`` in its own process, so this process's memory is the devices' alone.

Baseline, same run, same server: as many plain httpx streaming downloads of the image (each with
its own client and TLS context, bytes thrown away) at the same concurrency. Printed: devices per
second and the ratio to downloads per second; memory per device as the growth of resident anonymous
memory at the moment all devices hold their final flash (each waits for the others), divided by
the devices (the baseline's per download, measured the same way, beside it), and the flash sectors
each device stores of its own (the floor: the 1 MB image plus otadata).

``python tests/bench/bench_fleet.py [DEVICES]`` runs another fleet size (default 1000).
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_ota import APP, MERGED, grow_image  # noqa: E402

from esp_ota_emu.device import DeviceSettings, DeviceState  # noqa: E402
from esp_ota_emu.fleet import FleetConfig, FlashTemplate, run_fleet  # noqa: E402
from esp_ota_emu.fleet.runner import rss_anon  # noqa: E402

IMAGE_SIZE = 1 << 20


def start_server(image: Path, tls_dir: Path) -> tuple[subprocess.Popen, str, str]:
    """``esp-ota-emu serve`` on a free port; returns the process, the image URL and the CA (PEM text)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "esp_ota_emu", "serve", str(image), "--port", "0", "--tls-dir", str(tls_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
    )
    ca_line, url = proc.stdout.readline(), proc.stdout.readline().strip()
    ca = Path(ca_line.split(": ", 1)[1].strip()).read_text()
    return proc, url, ca


class AllAtOnce:
    """A barrier for ``parties`` threads that measures memory growth once all of them hold their state."""

    def __init__(self, parties: int):
        self.before = rss_anon() or 0
        self.grown = 0
        self.barrier = threading.Barrier(parties, action=self._measure)

    def _measure(self) -> None:
        self.grown = max((rss_anon() or 0) - self.before, 0)

    def wait(self, *_args) -> None:
        self.barrier.wait()


def baseline(url: str, ca: str, count: int) -> tuple[float, int]:
    """``count`` plain downloads at once: wall seconds, and memory growth while all are open and read."""
    together = AllAtOnce(count)

    def download():
        # the TLS settings a device has (root CA, TLS 1.2) in a plain SSLContext (not the emulator's,
        # whose socket takes several TLS records per receive), then a streaming download thrown away
        context = ssl.create_default_context(cadata=ca)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with httpx.Client(verify=context, timeout=60) as client, client.stream("GET", url) as response:
            for _ in response.iter_raw():
                pass
            together.wait()

    start = time.monotonic()
    threads = [threading.Thread(target=download, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start, together.grown


def main() -> None:
    devices = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "app_1MB.bin"
        image.write_bytes(grow_image(APP.read_bytes(), IMAGE_SIZE))
        size = image.stat().st_size
        server, url, ca = start_server(image, Path(tmp) / "certs")
        try:
            base_wall, base_mem = baseline(url, ca, devices)
            # every device keeps its flash until all have finished, so memory is measured with all of them alive
            together = AllAtOnce(devices)
            with FlashTemplate(MERGED) as template:
                config = FleetConfig(url, devices, concurrency=devices, ota_options={"cert_pem": ca, "timeout_ms": 60000})
                report = run_fleet(template, DeviceSettings(rollback=True), DeviceState(), config,
                                   on_device_done=together.wait)
        finally:
            server.terminate()
            server.wait()
    assert report.outcomes == {"updated": devices}, report.summary()
    fleet_rate, base_rate = devices / report.wall_s, devices / base_wall
    print(f"{devices} devices at once, each a {size / 2**20:.2f} MiB HTTPS OTA, OTA server in its own process")
    print(f"baseline: plain httpx downloads            {base_wall:7.1f} s  {base_rate:7.1f} downloads/s"
          f"  {base_mem / devices / 1e3:6.0f} kB memory per download")
    print(f"fleet: OTA, reset, confirm, reset           {report.wall_s:7.1f} s  {fleet_rate:7.1f} devices/s"
          f"  ratio {fleet_rate / base_rate:4.2f} of baseline")
    print(f"memory per device, all {devices} alive: {together.grown / devices / 1e3:.0f} kB "
          f"(of which its own flash sectors: {report.memory['flash_private_bytes_per_device'] / 1e3:.0f} kB)")
    print(report.summary())


if __name__ == "__main__":
    main()
