"""``make demo``: a whole OTA on a host, offline, with the commands a user would type.

Builds a 4 MB ESP32 flash with firmware sample v1 in ota_0, serves sample v2 over HTTPS on
loopback (``esp-ota-emu serve`` with a CA it generates), runs the OTA against it, and shows
``info`` before and after and what changed (``diff``): ota_1 is selected, and after a reset the
bootloader boots v2.
Everything is written under ``demo-out/``.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo-out"
EMU = [sys.executable, "-m", "esp_ota_emu"]


def show(*args: str, check: bool = True) -> None:
    """Print a command as a user would type it, then run it."""
    print(f"\n$ esp-ota-emu {shlex.join(args)}", flush=True)
    subprocess.run([*EMU, *args], cwd=REPO, check=check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, server: subprocess.Popen, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the demo server stopped before it was ready")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the demo server did not listen on port {port}")


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    flash = "demo-out/flash.bin"
    show(
        "mkflash", "-o", flash,
        "--partitions", "partitions/two_ota_4MB.csv",
        "--bootloader", "firmware_samples/bootloader_stub.bin",
        "--app", "ota_0=firmware_samples/sample_v1.bin",
        "--size", "4MB",
    )
    show("info", flash)
    shutil.copyfile(REPO / flash, OUT / "before.bin")

    port = free_port()
    serve = ["serve", "firmware_samples/sample_v2.bin", "--port", str(port), "--tls-dir", "demo-out/tls"]
    print(f"\n$ esp-ota-emu {shlex.join(serve)} &", flush=True)
    server = subprocess.Popen([*EMU, *serve], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(port, server)
        show(flash, "--url", f"https://127.0.0.1:{port}/sample_v2.bin", "--cert-pem", "demo-out/tls/ca.pem")
    finally:
        server.terminate()
        server.wait()

    show("info", flash)
    show("diff", "demo-out/before.bin", flash, check=False)  # exit 1: the dumps differ
    show("boot", flash)
    print("\nThe flash now holds v1 in ota_0 and v2 in ota_1, otadata selects ota_1, and the device runs v2.")
    print(f"Files: {OUT.relative_to(REPO)}/ (flash.bin, its settings flash.bin.emu.json, the demo CA in tls/)")


if __name__ == "__main__":
    main()
