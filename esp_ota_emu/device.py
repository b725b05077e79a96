"""The emulated device: a flash file plus its settings and state, persisted in a sidecar file.

A device is what ESP-IDF runs on: a chip (id, revision, eFuses), a bootloader built with some
configuration (rollback, anti-rollback, validation), an ESP-IDF release whose app-side behaviour to
follow, and a running app. ``FLASH.emu.json`` next to the flash file keeps all of it, so ``info``,
``boot`` and the next OTA see the same device. Engines (OTA, bootloader) reach the flash only through
this object.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .bootloader import Bootloader, BootloaderProfile, BootResult
from .chips import CHIPS, Chip, chip_by_name
from .efuse import SUPPORTED_CHIPS, Efuses
from .errors import EspError, InputError
from .esp_partition import PartitionIO
from .flash import SECTOR_SIZE, Flash
from .formats.app_desc import APP_DESC_OFFSET, APP_DESC_SIZE
from .formats.partition_table import BOOTLOADER, PARTITION_TABLE, TABLE_MAX_LEN
from .idf_release import DEFAULT as DEFAULT_RELEASE
from .idf_release import SIGNED_DATA_PARTITION, IdfRelease, parse_release
from .image import VerifyResult, parse_image, verify_image
from .image.reader import read_app_desc
from .interrupts import interrupts_deferred
from .partitions import Partition, PartitionTable
from .security import sbv1, sbv2
from .security.flash_encryption import load_flash_encryption_key
from .security.keys import load_public_key
from .security.device_encryption import device_crypt, encrypt_flash_in_place, plaintext_image_end
from .security.policy import (
    SECURE_BOOT_VERSIONS,
    enable_secure_boot,
    rom_bootloader_refusal,
    rom_v1_bootloader_refusal,
    sbv1_verification_key,
    signature_check,
)

SIDECAR_SUFFIX = ".emu.json"
SIDECAR_VERSION = 1
DANGEROUS_WRITES = ("aborts", "fails", "allowed")  # CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS / _FAILS / _ALLOWED


@dataclass
class DeviceSettings:
    """Options that describe the device; every command accepts them and they persist with the flash."""

    chip: str | None = None  # detected from the bootloader header when not set
    chip_rev: int | None = None  # major*100+minor; default: the chip's newest common revision (ESP32: v3.0)
    idf_release: str = DEFAULT_RELEASE  # the ESP-IDF release whose app-side behaviour to follow (idf_release.py)
    partition_table_offset: int = 0x8000
    rollback: bool = False
    anti_rollback: bool = False
    skip_validation_on_power_on: bool = False
    skip_validation_always: bool = False
    efuse_secure_version: int = 0  # the anti-rollback eFuse value (number of SECURE_VERSION bits burned)
    efuse: dict | None = None  # the chip's eFuse blocks (Efuses.to_dict()); None: a fresh chip's
    secure_boot: str | None = None  # None, "v1" (ESP32 ECDSA signed apps) or "v2" (CONFIG_SECURE_BOOT_V2_ENABLED)
    signature_verification_key: str | None = None  # Secure Boot V1: the PEM public key built into bootloader and app
    signed_on_update_no_secure_boot: bool = False  # CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT
    signed_data_partition: bool = False  # CONFIG_SECURE_SIGNED_DATA_PARTITION (v6.0.1 and newer)
    factory_reset: bool = False  # CONFIG_BOOTLOADER_FACTORY_RESET
    factory_reset_data: str = "nvs"  # CONFIG_BOOTLOADER_DATA_FACTORY_RESET
    factory_reset_otadata: bool = False  # CONFIG_BOOTLOADER_OTA_DATA_ERASE
    app_test: bool = False  # CONFIG_BOOTLOADER_APP_TEST
    dangerous_writes: str = "aborts"  # CONFIG_SPI_FLASH_DANGEROUS_WRITE: "aborts", "fails" or "allowed"

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


class Device:
    """A flash file with its settings; the one object the engines and the CLI work through."""

    def __init__(self, flash: Flash, settings: DeviceSettings, state: DeviceState):
        self.flash = flash
        self.settings = settings
        self.state = state
        self._partitions: PartitionTable | None = None
        self._ota = None
        self._verified: tuple[tuple, VerifyResult] | None = None  # the last esp_image_verify and its inputs
        self._chip = chip_by_name(settings.chip) if settings.chip else detect_chip(flash)
        self._efuses: Efuses | None = None
        # esp_flash's dangerous-write protection (RAM: on again after every reset); esp_ota_begin and
        # esp_ota_set_final_partition turn it off for a bootloader or partition-table update (v5.5)
        self.dangerous_write_protection = True
        self.io = PartitionIO(flash, device_crypt(self.efuses), protect=self.check_dangerous_write)

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
        actions = {key: overrides.pop(key) for key in _EFUSE_ACTIONS if key in overrides}
        changed = False
        for key, value in overrides.items():
            if key not in _SETTING_NAMES:
                raise TypeError(f"unknown device setting {key!r}")
            if value is not None and getattr(settings, key) != value:
                setattr(settings, key, value)
                changed = True
        idf = parse_release(settings.idf_release)  # refuses an unknown release before the flash is opened
        if settings.dangerous_writes not in DANGEROUS_WRITES:
            raise InputError(f"unknown dangerous-writes choice {settings.dangerous_writes!r} "
                             f"(one of {', '.join(DANGEROUS_WRITES)})")
        if settings.secure_boot not in (None, *SECURE_BOOT_VERSIONS):
            raise InputError(f"unknown secure boot version {settings.secure_boot!r} (one of {', '.join(SECURE_BOOT_VERSIONS)})")
        if settings.signed_data_partition:
            if not idf.has(SIGNED_DATA_PARTITION):
                raise InputError(f"ESP-IDF {idf} has no CONFIG_SECURE_SIGNED_DATA_PARTITION (v6.0.1 and newer)")
            if settings.secure_boot != "v2" and not settings.signed_on_update_no_secure_boot:
                raise InputError("CONFIG_SECURE_SIGNED_DATA_PARTITION needs Secure Boot V2 signed apps: give "
                                 "--secure-boot v2 or --signed-on-update-no-secure-boot")
        dev = cls(Flash.open(path, readonly=readonly, strict=strict), settings, state)
        try:
            # Ctrl-C waits for a first boot's security writes (half an encrypted flash boots nothing) and
            # for the sidecar that records the eFuses they burned
            with interrupts_deferred():
                if dev._apply_efuse_actions(readonly=readonly, **actions) or changed:
                    dev.save()
        except BaseException:
            dev.close()
            raise
        return dev

    def _apply_efuse_actions(
        self,
        *,
        readonly: bool,
        efuse_file=None,
        flash_encryption_key=None,
        secure_bootloader_key=None,
        secure_boot_keys=(),
        flash_encryption: bool | None = None,
    ) -> bool:
        """Options that burn eFuses (or replace them with a QEMU eFuse file), then what the bootloader's
        first boot does for the configured security: enable Secure Boot, encrypt the flash."""
        before = self.settings.efuse
        if efuse_file is not None:
            self.import_efuses(Efuses.from_qemu_file(self._efuse_chip(), _read_input(efuse_file, "eFuse file")))
        if flash_encryption_key is not None:
            efuses = self._require_efuses()
            key = load_flash_encryption_key(_read_input(flash_encryption_key, "flash encryption key"),
                                            aes_xts=efuses.chip != "esp32")
            if efuses.flash_encryption_key is None:
                efuses.burn_flash_encryption_key(key)
            elif efuses.flash_encryption_key != key:
                raise EspError("ESP_ERR_INVALID_STATE", "a different flash encryption key is already burned in the eFuses")
        if secure_bootloader_key is not None:
            efuses = self._require_efuses()
            key = _read_input(secure_bootloader_key, "Secure Boot V1 key")
            if efuses.secure_boot_v1_key is None:
                efuses.burn_secure_boot_v1_key(key)
            elif efuses.secure_boot_v1_key != key:
                raise EspError("ESP_ERR_INVALID_STATE", "a different Secure Boot V1 key is already burned in BLOCK2")
        for key_file in secure_boot_keys or ():
            public_key = load_public_key(_read_input(key_file, "secure boot key"))
            if self.settings.secure_boot == "v1":
                self.settings.signature_verification_key = sbv1_verification_key(public_key)
                continue
            efuses = self._require_efuses()
            digest = sbv2.key_digest(public_key)
            if digest not in [s["digest"] for s in efuses.secure_boot_key_digests()]:
                efuses.burn_secure_boot_key_digest(digest)
        if self.settings.secure_boot is not None:
            enable_secure_boot(self, self._require_efuses(), self.settings.secure_boot, readonly=readonly)
        if flash_encryption:
            self._enable_flash_encryption(readonly)
        if self._efuses is None:
            return False
        self._store_efuses(self._efuses)
        return before is not None and self.settings.efuse != before or before is None and self._burned()

    def _burned(self) -> bool:
        """Whether the eFuses differ from a fresh chip's (so that they need recording)."""
        fresh = Efuses.default(self._efuses.chip, self.chip_rev)
        _set_secure_version(fresh, self.settings.efuse_secure_version)
        return fresh.blocks != self._efuses.blocks

    def _enable_flash_encryption(self, readonly: bool) -> None:
        """The bootloader's first boot with flash encryption: encrypt the plaintext flash, burn CRYPT_CNT."""
        efuses = self._require_efuses()
        if efuses.flash_encryption_enabled:
            return
        if efuses.flash_encryption_key is None:
            raise InputError("enabling flash encryption needs the key in the eFuses: give --flash-encryption-key")
        if readonly:
            raise InputError("enabling flash encryption encrypts the flash; use a command that writes it (boot, ota)")
        if efuses.chip == "esp32" and efuses.flash_crypt_config == 0:
            efuses.burn("FLASH_CRYPT_CONFIG", 0xF)  # the bootloader sets all tweak bits before encrypting
        self.partitions  # read while the flash is plaintext
        efuses.enable_flash_encryption()
        self.settings.chip = self._chip.name  # the bootloader header is ciphertext from now on
        self.io.crypt = device_crypt(efuses)
        encrypt_flash_in_place(self)
        self._partitions = None

    def save(self) -> None:
        """Write the sidecar file (settings, eFuses and state) next to the flash."""
        if self._efuses is not None:
            self._store_efuses(self._efuses)
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
    def idf(self) -> IdfRelease:
        """The ESP-IDF release whose app-side behaviour the device follows."""
        return parse_release(self.settings.idf_release)

    @property
    def chip_rev(self) -> int:
        """major*100+minor: the setting, else what the chip's eFuses say (a fresh ESP32 is v3.0, as QEMU's)."""
        if self.settings.chip_rev is not None:
            return self.settings.chip_rev
        efuses = self.efuses
        return efuses.chip_revision if efuses is not None else 0

    @property
    def disable_wafer_version_major(self) -> bool:
        """The chip's DISABLE_WAFER_VERSION_MAJOR eFuse (false for a chip without an eFuse model)."""
        efuses = self.efuses
        return efuses is not None and efuses.disable_wafer_version_major

    @property
    def partitions(self) -> PartitionTable:
        """The partition table the running app knows: read from flash once per boot, as esp_partition
        loads it into RAM (an OTA of the table changes what the next boot reads, not this)."""
        if self._partitions is None:
            self._partitions = self.read_partition_table()
        return self._partitions

    def read_partition_table(self) -> PartitionTable:
        """The partition table on flash now, read the way the bootloader reads it (MD5 optional);
        raises PartitionTableInvalid when esp_partition_table_verify() refuses it."""
        off = self.settings.partition_table_offset
        if off + TABLE_MAX_LEN > self.flash.size:
            raise InputError(f"the flash ({self.flash.size} bytes) ends before a partition table at 0x{off:x}")
        raw = self.flash.read(off, TABLE_MAX_LEN)
        if self.io.crypt is not None:  # the bootloader reads the table through the cache: decrypted
            raw = self.io.crypt.decrypt(off, raw)
        return PartitionTable.from_binary(raw, reader="bootloader", chip_size=self.flash.size, offset=off)

    @property
    def flash_encryption_enabled(self) -> bool:
        return self.io.crypt is not None

    # -- eFuses ---------------------------------------------------------------------------------
    @property
    def efuses(self) -> Efuses | None:
        """The chip's eFuses (None for a chip the eFuse model does not cover, or an unknown chip).

        SECURE_VERSION follows the ``efuse_secure_version`` setting, which may be set directly.
        """
        if self._efuses is None:
            if self._chip is None or self._chip.name not in SUPPORTED_CHIPS:
                return None
            stored = self.settings.efuse
            if stored is not None and stored.get("chip") == self._chip.name:
                self._efuses = Efuses.from_dict(stored)
            else:  # never burned, or recorded for another chip (--chip changed): a fresh chip's
                self._efuses = Efuses.default(self._chip.name, self.settings.chip_rev)
        if self._efuses.secure_version != self.settings.efuse_secure_version:
            _set_secure_version(self._efuses, self.settings.efuse_secure_version)
        return self._efuses

    def _efuse_chip(self) -> str:
        if self._chip is None:
            raise InputError("eFuse options need the chip: give --chip")
        if self._chip.name not in SUPPORTED_CHIPS:
            raise InputError(f"no eFuse model for {self._chip.name} (supported: {', '.join(SUPPORTED_CHIPS)})")
        return self._chip.name

    def _require_efuses(self) -> Efuses:
        self._efuse_chip()
        efuses = self.efuses
        assert efuses is not None
        return efuses

    def import_efuses(self, efuses: Efuses) -> None:
        """Replace the device's eFuses (a QEMU eFuse file read back, or given with ``--efuse-file``)."""
        self.settings.efuse_secure_version = efuses.secure_version
        self._store_efuses(efuses)
        self.io.crypt = device_crypt(efuses)
        self._partitions = None

    def _store_efuses(self, efuses: Efuses) -> None:
        self._efuses = efuses
        self.settings.efuse = {k: v for k, v in efuses.to_dict().items() if k != "summary"}

    @property
    def efuse_secure_version(self) -> int:
        """``esp_efuse_read_secure_version()``: the number of SECURE_VERSION bits burned."""
        return self.settings.efuse_secure_version

    def efuse_secure_version_ok(self, secure_version: int) -> bool:
        """esp_efuse_check_secure_version(): the app's version must reach the eFuse's."""
        return secure_version >= self.efuse_secure_version

    @property
    def secure_version_bits(self) -> int:
        """Width of the eFuse SECURE_VERSION field (CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD default)."""
        efuses = self.efuses
        if efuses is not None:
            return efuses.secure_version_bits
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
            efuses = self.efuses
            if efuses is not None:
                self._store_efuses(efuses)
            self.save()

    def revoke_secure_boot_key(self, index: int) -> None:
        """esp_efuse_set_digest_revoke(): Secure Boot key digest ``index`` is no longer trusted."""
        efuses = self._require_efuses()
        efuses.revoke_secure_boot_key(index)
        self._store_efuses(efuses)
        self.save()

    def bootloader_region(self) -> Partition | None:
        """The 2nd-stage bootloader as a partition (newest ESP-IDF's ``bootloader`` type): from the chip's
        bootloader offset to the partition table."""
        if self._chip is None:
            return None
        offset = self._chip.bootloader_offset
        return Partition("bootloader", BOOTLOADER, 0x00, offset, self.settings.partition_table_offset - offset, 0x1)

    def secure_boot_digest_region(self) -> Partition:
        """The ESP32's Secure Boot V1 IV and bootloader digest (``esp_secure_boot_iv_digest_t``): the sector
        at 0x0, before the bootloader; encrypted with the bootloader when flash encryption is on."""
        return Partition("secure_boot_digest", BOOTLOADER, 0x00, 0x0, sbv1.IV_DIGEST_SECTOR, 0x1)

    def partition_table_region(self) -> Partition:
        """The primary partition table as a partition (ESP-IDF v5.5's ``partition_table`` type): the
        ESP_PARTITION_TABLE_SIZE (4 KiB) sector at the table offset."""
        return Partition("partition_table", PARTITION_TABLE, 0x00, self.settings.partition_table_offset, SECTOR_SIZE, 0x1)

    def find_partition(self, name: str) -> Partition:
        """The partition an app hands esp_https_ota as ``partition.staging`` or ``partition.final``: the
        table's partition of that label; else ``bootloader`` or ``partition_table``: the table's primary
        entry of that type, or, without one, the region registered with esp_partition_register_external
        as ESP-IDF's partitions_ota example does."""
        table = self.partitions
        found = table.find(name)
        if found is not None:
            return found
        regions = {"bootloader": (BOOTLOADER, self.bootloader_region),
                   "partition_table": (PARTITION_TABLE, self.partition_table_region)}
        if name in regions:
            ptype, region = regions[name]
            entry = table.find_first(ptype, 0x00)
            if entry is not None:
                return entry
            registered = region()
            if registered is None:
                raise InputError("the device's chip is not known (no bootloader found): give the chip as a setting")
            overlap = next((p for p in table.entries if p.offset < registered.end and registered.offset < p.end), None)
            if overlap is not None:  # esp_partition_register_external refuses an overlap
                raise InputError(f"cannot register the {name} region 0x{registered.offset:x}+0x{registered.size:x}: "
                                 f"it overlaps partition '{overlap.label}' (ESP_ERR_INVALID_ARG)")
            return registered
        labels = ", ".join(p.label for p in table.entries)
        raise InputError(f"no partition '{name}' (the table has {labels}; or name bootloader / partition_table)")

    def staging_partition(self, staging: str | None) -> Partition | None:
        """Where esp_https_ota writes an update: esp_https_ota_config_t.partition.staging (a name
        :meth:`find_partition` takes), else esp_ota_get_next_update_partition(NULL)."""
        return self.find_partition(staging) if staging else self.ota.get_next_update_partition(None)

    def check_dangerous_write(self, addr: int, length: int) -> None:
        """esp_flash's check of an erase or write (esp_partition_main_flash_region_safe): the bootloader
        and partition table (anything up to the table's end) and the running app are dangerous regions.
        With CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS (the default) touching one aborts the app, with
        _FAILS the operation returns ESP_ERR_INVALID_ARG, with _ALLOWED it goes ahead."""
        if not self.dangerous_write_protection or self.settings.dangerous_writes == "allowed":
            return
        table_end = self.settings.partition_table_offset + TABLE_MAX_LEN
        if addr <= table_end:
            what = f"0x{addr:x} lies in the bootloader and partition table region (up to 0x{table_end:x})"
        elif (running := self.running) is not None and running.offset < addr + length and addr < running.end:
            what = f"0x{addr:x}+0x{length:x} overlaps the running app '{running.label}'"
        else:
            return
        if self.settings.dangerous_writes == "fails":
            raise EspError("ESP_ERR_INVALID_ARG", f"flash write or erase refused: {what} "
                                                  "(CONFIG_SPI_FLASH_DANGEROUS_WRITE_FAILS)")
        raise EspError(
            "ESP_ERR_NOT_SUPPORTED",
            f"flash write or erase at {what}: with CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS (the default) the "
            "device aborts here and resets (--dangerous-writes allowed lets it write)",
        )

    # -- images ---------------------------------------------------------------------------------
    def verify_partition(
        self, p: Partition, *, load: bool = False, validate: bool = True, as_bootloader: bool = False
    ) -> VerifyResult:
        """esp_image_verify() of the image in an app partition, read as the chip reads it (decrypted
        when flash encryption is on), with the signature check the device's security settings ask for.

        ``load``: as the bootloader loads it (ESP_IMAGE_LOAD; the bootloader's signature rule);
        otherwise as the app checks an update (esp_ota_end / esp_ota_set_boot_partition: the
        signed-on-update rule). ``validate=False``: ESP_IMAGE_LOAD_NO_VALIDATE, which only walks the
        segment headers (checksum, hash, signature and chip are not checked). ``as_bootloader``: the
        image is a 2nd-stage bootloader (esp_image_bootloader_offset_set names ``p``'s address).

        The result is remembered until the flash or the device's settings or running app change, so
        that esp_ota_end followed by esp_ota_set_boot_partition costs one pass over the image.
        """
        key = (p.offset, p.size, load, validate, as_bootloader, self.flash.generation, self.state.running,
               repr(self.settings))
        if self._verified is not None and self._verified[0] == key:
            return self._verified[1]
        result = self._verify_partition(p, load=load, validate=validate, as_bootloader=as_bootloader)
        self._verified = (key, result)
        return result

    def _verify_partition(self, p: Partition, *, load: bool, validate: bool, as_bootloader: bool) -> VerifyResult:
        if p.end > self.flash.size:
            return VerifyResult("ESP_ERR_INVALID_ARG", f"partition '{p.label}' ends past the end of the flash", None, 0)
        view, base = self.plain_image_region(p)
        # the image's SHA-256 from the flash itself (and the OTA's running hash) unless it was decrypted
        sha256 = None if self.io.encrypted(p) else self.flash.sha256
        if not validate:
            try:
                image = parse_image(view, base, p.size, layout="esp32", sha256=sha256)
            except InputError as err:
                return VerifyResult("ESP_ERR_IMAGE_INVALID", str(err), None, 0)
            return VerifyResult("ESP_OK", "segment headers readable (not validated)", image, image.image_len)
        check = signature_check(self, load=load)
        return verify_image(
            view, base, p.size, chip=self._chip, chip_rev=self.chip_rev, load=load, is_bootloader=as_bootloader,
            disable_wafer_version_major=self.disable_wafer_version_major,
            # signed apps without Secure Boot use the V2 signature sector scheme
            secure_boot=(self.settings.secure_boot or "v2") if check is not None else None,
            signature_check=check, sha256=sha256,
        )

    def verify_bootloader(self) -> VerifyResult | None:
        """What a reset checks of the 2nd-stage bootloader in flash (read as the chip reads it): with
        Secure Boot enabled in eFuse the ROM's check (V2: its signature; V1: its digest at 0x0), then
        esp_image_verify as a bootloader. None when the chip, and so the bootloader's offset, is not known."""
        region = self.bootloader_region()
        if region is None:
            return None
        view, base = self.plain_image_region(region)
        image = bytes(view[base : base + region.size])
        result = _verify_bootloader_image(image, region.offset, self._chip.name, self.chip_rev,
                                          self.disable_wafer_version_major)
        efuses = self.efuses
        if not result.ok or efuses is None:
            return result
        if efuses.secure_boot_v2_enabled:
            version, refusal = "V2", rom_bootloader_refusal(image, result.image_len, tuple(efuses.trusted_key_digests()),
                                                            efuses.key_digest_slots == 1)
        elif efuses.secure_boot_v1_enabled:
            iv_digest = self.io.read(self.secure_boot_digest_region(), 0, sbv1.IV_LEN + sbv1.DIGEST_LEN)
            version, refusal = "V1", rom_v1_bootloader_refusal(image[: result.image_len], iv_digest,
                                                               efuses.secure_boot_v1_key)
        else:
            return result
        if refusal is None:
            return result
        return VerifyResult("ESP_ERR_IMAGE_INVALID", f"the ROM's Secure Boot {version} check failed: {refusal}",
                            result.image, result.image_len)

    def plain_image_region(self, p: Partition) -> tuple[memoryview, int]:
        """``(buffer, offset)`` of the app image in ``p`` as the CPU sees it: the flash itself, or with
        flash encryption a decrypted copy of the image's part of the partition."""
        if not self.io.encrypted(p):
            return self.flash.view(), p.offset
        return memoryview(self.io.read(p, 0, plaintext_image_end(self, p))), 0

    def parse_partition_image(self, p: Partition):
        """The image in ``p`` parsed without verification (decrypted), None if it cannot be parsed."""
        view, base = self.plain_image_region(p)
        try:
            return parse_image(view, base, p.size, layout="esp32")
        except InputError:
            return None

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

    def running_app_desc(self):
        """``esp_app_get_description()``: the running app's esp_app_desc_t, or None when no app runs or
        its image has none where ESP-IDF puts it (image offset 0x20)."""
        p = self.running
        if p is None:
            return None
        return read_app_desc(memoryview(self.io.read(p, APP_DESC_OFFSET, APP_DESC_SIZE)), 0, APP_DESC_SIZE)

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
        if self.settings.chip is None and self._chip is not None:
            self.settings.chip = self._chip.name  # the chip stays what it is if its bootloader is rewritten
        self._ota = None  # a reset loses every OTA in progress (its handles live in RAM)
        self.dangerous_write_protection = True
        self._partitions = None  # and the table the app had loaded: the booted app reads it anew
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
# Options of Device.open that act on the eFuses (burn, import) instead of being settings.
_EFUSE_ACTIONS = ("efuse_file", "flash_encryption_key", "secure_bootloader_key", "secure_boot_keys", "flash_encryption")


@functools.lru_cache(maxsize=16)
def _verify_bootloader_image(image: bytes, offset: int, chip: str, chip_rev: int, disable_wafer_version_major: bool):
    """esp_image_verify of a bootloader region's bytes, remembered: every reset checks the bootloader,
    and fleets and power-cut campaigns reset thousands of devices that share one. The bytes are put
    back at their flash offset so that the reasons name it."""
    return verify_image(bytes(offset) + image, offset, len(image), chip=chip, chip_rev=chip_rev, is_bootloader=True,
                        disable_wafer_version_major=disable_wafer_version_major)


def _read_input(value, what: str) -> bytes:
    """Bytes given as such, or read from a file path."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    try:
        return Path(value).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {what} {value}: {err.strerror}") from None


def _set_secure_version(efuses: Efuses, secure_version: int) -> None:
    """Make SECURE_VERSION read ``secure_version`` (the emulator's setting may lower it, unlike a chip)."""
    f = efuses.layout.fields["SECURE_VERSION"]
    block = efuses.blocks[f.block]
    value = int.from_bytes(block, "little") & ~(((1 << f.length) - 1) << f.bit)
    block[:] = value.to_bytes(len(block), "little")
    efuses.burn_secure_version(min(secure_version, f.length))
