"""The emulated device: a flash file plus its settings and state, persisted in a sidecar file.

A device is what ESP-IDF runs on: a chip (id, revision, eFuses), a bootloader built with some
configuration (rollback, anti-rollback, validation), an ESP-IDF release whose app-side behaviour to
follow, and a running app. ``FLASH.emu.json`` next to the flash file keeps all of it, so ``info``,
``boot`` and the next OTA see the same device. Engines (OTA, bootloader) reach the flash only through
this object.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .bootloader import Bootloader, BootloaderProfile, BootResult
from .chips import CHIPS, Chip, chip_by_name
from .errors import EspError, InputError
from .esp_partition import PartitionIO
from .flash import Flash
from .image import VerifyResult, parse_image, verify_image
from .partitions import Partition, PartitionTable

SIDECAR_SUFFIX = ".emu.json"
SIDECAR_VERSION = 1
IDF_RELEASES = ("v4", "v5", "newest")


@dataclass
class DeviceSettings:
    """Options that describe the device; every command accepts them and they persist with the flash."""

    chip: str | None = None  # detected from the bootloader header when not set
    chip_rev: int | None = None  # major*100+minor; default: the chip's newest common revision (ESP32: v3.0)
    idf_release: str = "v5"  # whose esp_ota_ops behaviour to follow where releases differ
    partition_table_offset: int = 0x8000
    rollback: bool = False
    anti_rollback: bool = False
    skip_validation_on_power_on: bool = False
    skip_validation_always: bool = False
    efuse_secure_version: int = 0  # the anti-rollback eFuse value (number of bits burned)
    factory_reset: bool = False  # CONFIG_BOOTLOADER_FACTORY_RESET
    factory_reset_data: str = "nvs"  # CONFIG_BOOTLOADER_DATA_FACTORY_RESET
    factory_reset_otadata: bool = False  # CONFIG_BOOTLOADER_OTA_DATA_ERASE
    app_test: bool = False  # CONFIG_BOOTLOADER_APP_TEST

    def profile(self) -> BootloaderProfile:
        return BootloaderProfile(
            rollback=self.rollback,
            anti_rollback=self.anti_rollback,
            skip_validation_on_power_on=self.skip_validation_on_power_on,
            skip_validation_always=self.skip_validation_always,
            factory_reset=self.factory_reset,
            factory_reset_data=self.factory_reset_data,
            factory_reset_otadata=self.factory_reset_otadata,
            app_test=self.app_test,
        )


@dataclass
class DeviceState:
    """What the device is doing: which app runs (None: never powered on by the emulator)."""

    running: str | None = None
    boots: int = 0
    resume: dict[str, Any] = field(default_factory=dict)  # OTA resumption progress, by URL


def sidecar_path(flash_path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(flash_path)}{SIDECAR_SUFFIX}")


def detect_chip(flash: Flash) -> Chip | None:
    """Find the bootloader: the chip whose bootloader offset holds an image header with its chip id."""
    for chip in CHIPS:
        off = chip.bootloader_offset
        if chip.chip_id is None or off + 24 > flash.size:
            continue
        head = flash.read(off, 24)
        if head[0] == 0xE9 and int.from_bytes(head[12:14], "little") == chip.chip_id:
            return chip
    return None


DEFAULT_CHIP_REV = {"esp32": 300}


class Device:
    """A flash file with its settings; the one object the engines and the CLI work through."""

    def __init__(self, flash: Flash, settings: DeviceSettings, state: DeviceState):
        self.flash = flash
        self.settings = settings
        self.state = state
        self.io = PartitionIO(flash)
        self._partitions: PartitionTable | None = None
        self._ota = None
        self._chip = chip_by_name(settings.chip) if settings.chip else detect_chip(flash)

    # -- opening, saving ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, *, readonly: bool = False, strict: bool = False, **overrides) -> Device:
        """Open a flash file and its sidecar; ``overrides`` (settings given as options) are applied and persisted."""
        side = sidecar_path(path)
        settings, state = DeviceSettings(), DeviceState()
        if side.exists():
            try:
                data = json.loads(side.read_text())
                settings = DeviceSettings(**{k: v for k, v in data.get("settings", {}).items() if k in _SETTING_NAMES})
                state = DeviceState(**{k: v for k, v in data.get("state", {}).items() if k in _STATE_NAMES})
            except (ValueError, TypeError) as err:
                raise InputError(f"{side} is not a device settings file: {err}") from None
        changed = False
        for key, value in overrides.items():
            if key not in _SETTING_NAMES:
                raise TypeError(f"unknown device setting {key!r}")
            if value is not None and getattr(settings, key) != value:
                setattr(settings, key, value)
                changed = True
        if settings.idf_release not in IDF_RELEASES:
            raise InputError(f"unknown ESP-IDF release {settings.idf_release!r} (one of {', '.join(IDF_RELEASES)})")
        dev = cls(Flash.open(path, readonly=readonly, strict=strict), settings, state)
        if changed:
            dev.save()
        return dev

    def save(self) -> None:
        """Write the sidecar file (settings and state) next to the flash."""
        data = {"version": SIDECAR_VERSION, "settings": asdict(self.settings), "state": asdict(self.state)}
        tmp = sidecar_path(self.flash.path).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, sidecar_path(self.flash.path))

    def close(self) -> None:
        self.flash.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what the device is ---------------------------------------------------------------------
    @property
    def chip(self) -> Chip | None:
        return self._chip

    @property
    def chip_rev(self) -> int:
        if self.settings.chip_rev is not None:
            return self.settings.chip_rev
        return DEFAULT_CHIP_REV.get(self._chip.name if self._chip else "", 0)

    @property
    def partitions(self) -> PartitionTable:
        """The partition table, read the way the bootloader reads it (MD5 optional)."""
        if self._partitions is None:
            off = self.settings.partition_table_offset
            if off + 0xC00 > self.flash.size:
                raise InputError(f"the flash ({self.flash.size} bytes) ends before a partition table at 0x{off:x}")
            self._partitions = PartitionTable.from_binary(
                self.flash.read(off, 0xC00), reader="bootloader", chip_size=self.flash.size, offset=off
            )
        return self._partitions

    @property
    def flash_encryption_enabled(self) -> bool:
        return self.io.crypt is not None

    @property
    def efuse_secure_version(self) -> int:
        return self.settings.efuse_secure_version

    def efuse_secure_version_ok(self, secure_version: int) -> bool:
        """esp_efuse_check_secure_version(): the app's version must reach the eFuse's."""
        return secure_version >= self.settings.efuse_secure_version

    @property
    def secure_version_bits(self) -> int:
        """Width of the eFuse SECURE_VERSION field (CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD default)."""
        return self._chip.efuse_secure_version_bits if self._chip is not None else 32

    def check_secure_version_fits(self, secure_version: int) -> None:
        """esp_efuse_update_secure_version() refuses a version wider than the eFuse field."""
        if secure_version > self.secure_version_bits:
            raise EspError(
                "ESP_ERR_INVALID_ARG",
                f"Max secure version is {self.secure_version_bits}; version {secure_version} can not be burned",
            )

    def burn_secure_version(self, secure_version: int) -> None:
        """esp_efuse_update_secure_version(): bits are only ever added, up to the field's width."""
        self.check_secure_version_fits(secure_version)
        if secure_version > self.settings.efuse_secure_version:
            self.settings.efuse_secure_version = secure_version
            self.save()

    # -- images ---------------------------------------------------------------------------------
    def verify_partition(self, p: Partition, *, load: bool = False, validate: bool = True) -> VerifyResult:
        """esp_image_verify() of the image in an app partition.

        ``load``: as the bootloader loads it (ESP_IMAGE_LOAD); ``validate=False``: ESP_IMAGE_LOAD_NO_VALIDATE,
        which only walks the segment headers (checksum, hash and chip are not checked).
        """
        if p.end > self.flash.size:
            return VerifyResult("ESP_ERR_INVALID_ARG", f"partition '{p.label}' ends past the end of the flash", None, 0)
        if not validate:
            try:
                image = parse_image(self.flash.view(), p.offset, p.size, layout="esp32")
            except InputError as err:
                return VerifyResult("ESP_ERR_IMAGE_INVALID", str(err), None, 0)
            return VerifyResult("ESP_OK", "segment headers readable (not validated)", image, image.image_len)
        return verify_image(
            self.flash.view(), p.offset, p.size, chip=self._chip, chip_rev=self.chip_rev, load=load
        )

    def app_secure_version(self, p: Partition) -> int | None:
        """The ``secure_version`` of the app descriptor at offset 0x20 of a partition, None if there is none."""
        head = self.io.read(p, 0x20, 8)
        if int.from_bytes(head[:4], "little") != 0xABCD5432:
            return None
        return int.from_bytes(head[4:8], "little")

    # -- running ---------------------------------------------------------------------------------
    @property
    def ota(self):
        if self._ota is None:
            from .ota_ops import OtaOps

            self._ota = OtaOps(self)
        return self._ota

    @property
    def running(self) -> Partition | None:
        """The partition of the running app (None until a boot found one)."""
        if self.state.running is None:
            return None
        return self.partitions.find(self.state.running)

    def boot_decision(self) -> BootResult:
        """What the bootloader would boot on the next reset, without writing anything."""
        return Bootloader(self, self.settings.profile(), dry_run=True).run()

    def boot(self, *, power_on: bool = False, hold_factory_reset_pin: bool = False, hold_test_pin: bool = False) -> BootResult:
        """One reset (``power_on``: a power cycle): run the bootloader with its writes; the booted app then runs."""
        result = Bootloader(
            self,
            self.settings.profile(),
            power_on=power_on,
            hold_factory_reset_pin=hold_factory_reset_pin,
            hold_test_pin=hold_test_pin,
        ).run()
        self.state.running = result.booted.label if result.booted else None
        self.state.boots += 1
        self.save()
        return result

    def https_ota(self, url: str, **options):
        """Run an OTA from ``url`` as esp_https_ota() would (see :func:`esp_ota_emu.https_ota.api.https_ota`)."""
        from .https_ota.api import https_ota

        return https_ota(self, url, **options)

    def power_on_if_needed(self) -> BootResult | None:
        """Power the device on (a bootloader pass) if the emulator never booted this flash."""
        if self.state.running is not None and self.running is not None:
            return None
        result = self.boot(power_on=True)
        if result.booted is None:
            raise EspError("ESP_FAIL", "the device has no bootable app: " + "; ".join(result.trace[-2:]))
        return result


_SETTING_NAMES = {f.name for f in fields(DeviceSettings)}
_STATE_NAMES = {f.name for f in fields(DeviceState)}
