"""An OTA from a local image file through esp_ota_begin / esp_ota_write / esp_ota_end / esp_ota_set_boot_partition.

Reproduces what ESP-IDF's native_ota_example does with the bytes it receives: the next update
partition after the running app, sequential erase, the image written in chunks, verified at the end,
then selected for the next boot. Used by scenarios ("OTA from a file") and by Python users.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, BinaryIO

from .errors import EspError, InputError
from .ota_ops import OTA_WITH_SEQUENTIAL_WRITES
from .partitions import Partition

if TYPE_CHECKING:
    from .device import Device

CHUNK_SIZE = 4096  # the receive buffer of the ESP-IDF OTA examples


def ota_from_stream(
    device: Device,
    stream: BinaryIO,
    *,
    partition: Partition | None = None,
    image_size: int = OTA_WITH_SEQUENTIAL_WRITES,
    chunk_size: int = CHUNK_SIZE,
    set_boot: bool = True,
) -> Partition:
    """Write the image read from ``stream`` into the next OTA slot (or ``partition``); returns that slot.

    Powers the device on first if the emulator never booted it. On any error the OTA is aborted
    (esp_ota_abort) and the EspError is raised; the running app and otadata stay as they were.
    """
    device.power_on_if_needed()
    ota = device.ota
    target = partition or ota.get_next_update_partition(None)
    if target is None:
        raise EspError("ESP_ERR_NOT_FOUND", "the partition table has no OTA app partition to update")
    handle = ota.begin(target, image_size)
    try:
        while chunk := stream.read(chunk_size):
            ota.write(handle, chunk)
    except BaseException:
        ota.abort(handle)
        raise
    ota.end(handle)
    if set_boot:
        ota.set_boot_partition(target)
    return target


def ota_from_file(device: Device, path: str | os.PathLike, **kwargs) -> Partition:
    """:func:`ota_from_stream` on a file; an unreadable file is an InputError."""
    try:
        stream = open(path, "rb")
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None
    with stream:
        return ota_from_stream(device, stream, **kwargs)
