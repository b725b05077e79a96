"""A rollout to emulated ESP32 devices with Locust: one machine, or many with Locust's master/worker mode.

Every Locust user is a device slot: it clones a device from the template flash, runs esp_https_ota
from ``--host`` + ``--esp-path``, resets, lets the new app confirm itself (or crash, with
``--esp-crash-share``), resets again, and starts over with a new device.

    # a server to try it against (prints the URL; the devices trust ota-certs/ca.pem)
    esp-ota-emu serve new_app.bin --port 8443 &

    # one machine, web UI on http://localhost:8089
    locust -f examples/locustfile.py --host https://127.0.0.1:8443 \\
        --esp-template flash.bin --esp-path /new_app.bin --esp-cert-pem ota-certs/ca.pem --esp-rollback

    # many machines: the same command with --master on one, and on every other machine
    locust -f examples/locustfile.py --worker --master-host MASTER --esp-template flash.bin ...

    # headless: 50 devices at once for a minute, each updating 4 devices, with a slow link and real flash times
    locust -f examples/locustfile.py --headless -u 50 -r 10 -t 60s --host https://ota.example.com \\
        --esp-template flash.bin --esp-path /fw/app.bin --esp-devices-per-user 4 \\
        --esp-bandwidth 1Mbit --esp-rtt-ms 80 --esp-flash-timing typical

The statistics have an ``OTA`` row for the download (failures by ESP-IDF error name) and ``BOOT``
rows per slot and version that the devices boot at the end.
"""

from locust import constant

from esp_ota_emu.locust_user import EspOtaUser


class Esp32Device(EspOtaUser):
    wait_time = constant(0)
