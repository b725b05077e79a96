"""Fleet mode: many emulated devices, each with a byte-accurate copy-on-write flash, against one OTA server."""

from __future__ import annotations

from .cow import FlashTemplate, private_bytes, save_flash, written_sectors
from .lifecycle import OUTCOMES, DeviceOutcome, FleetDevice, clone_device, run_device
from .report import FleetReport
from .runner import FleetConfig, Progress, crashing_devices, run_fleet
from .timing import FLASH_TIMINGS, FlashTiming, TimingModel

__all__ = [
    "FLASH_TIMINGS",
    "OUTCOMES",
    "DeviceOutcome",
    "FlashTemplate",
    "FlashTiming",
    "FleetConfig",
    "FleetDevice",
    "FleetReport",
    "Progress",
    "TimingModel",
    "clone_device",
    "crashing_devices",
    "private_bytes",
    "run_device",
    "run_fleet",
    "save_flash",
    "written_sectors",
]
