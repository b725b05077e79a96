"""The ESP-IDF 2nd-stage bootloader's boot decision, with its writes to flash.

Reproduces bootloader_utility_load_partition_table, bootloader_utility_get_selected_boot_partition
and bootloader_utility_load_boot_image (bootloader_support/src/bootloader_utility.c) and the pin
checks of selected_boot_partition (bootloader/subproject/main/bootloader_start.c): the otadata
selection, the rollback transitions (PENDING_VERIFY -> ABORTED, NEW -> PENDING_VERIFY), anti-rollback
filtering and eFuse burns, image verification with fallback through the other slots, factory and
test apps, the factory-reset and test-app pins, and the VALID entry written when booting from
"initial contents". These functions are the same in ESP-IDF v4.4 and v5.x. A dry run decides the same
way without touching the flash (for ``info``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import EspError
from .flash import SECTOR_SIZE
from .formats.app_desc import c_text
from .formats.otadata import SEQ_BLANK, OtaState
from .otadata import OtaData, OtaEntry, select_otadata
from .partitions import Partition, PartitionTable, PartitionTableInvalid

if TYPE_CHECKING:
    from .device import Device

FACTORY_INDEX = -1
TEST_APP_INDEX = -2
INVALID_INDEX = -99
MAX_OTA_SLOTS = 16


@dataclass(frozen=True)
class BootloaderProfile:
    """The bootloader's build configuration that changes what a reset does (a device setting)."""

    rollback: bool = False  # CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
    anti_rollback: bool = False  # CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
    skip_validation_on_power_on: bool = False  # CONFIG_BOOTLOADER_SKIP_VALIDATE_ON_POWER_ON
    skip_validation_always: bool = False  # CONFIG_BOOTLOADER_SKIP_VALIDATE_ALWAYS
    factory_reset: bool = False  # CONFIG_BOOTLOADER_FACTORY_RESET (a factory-reset pin is wired)
    factory_reset_data: str = "nvs"  # CONFIG_BOOTLOADER_DATA_FACTORY_RESET: labels, comma/space separated
    factory_reset_otadata: bool = False  # CONFIG_BOOTLOADER_OTA_DATA_ERASE
    app_test: bool = False  # CONFIG_BOOTLOADER_APP_TEST (a test-app pin is wired)

    def describe(self) -> str:
        parts = [
            f"rollback {'on' if self.rollback else 'off'}",
            f"anti-rollback {'on' if self.anti_rollback else 'off'}",
        ]
        if self.skip_validation_always:
            parts.append("skips image validation always")
        elif self.skip_validation_on_power_on:
            parts.append("skips image validation on power-on")
        else:
            parts.append("validates images")
        if self.factory_reset:
            erases = " ".join(labels(self.factory_reset_data)) or "nothing"
            parts.append(f"factory-reset pin (erases {erases}{' and otadata' if self.factory_reset_otadata else ''})")
        if self.app_test:
            parts.append("test-app pin")
        return ", ".join(parts)


def labels(text: str) -> list[str]:
    """The labels of a CONFIG_BOOTLOADER_DATA_FACTORY_RESET list (bootloader_common_label_search delimiters)."""
    return [x for x in re.split(r"[, ]", text) if x]


@dataclass
class BootResult:
    """What one reset did: the app booted (None: the bootloader resets), why, and what it wrote."""

    booted: Partition | None
    trace: list[str] = field(default_factory=list)
    writes: list[tuple[int, int]] = field(default_factory=list)  # (flash offset, length) erased and rewritten
    burned_secure_version: int | None = None
    image: object | None = None  # the verification result of the booted image

    @property
    def version(self) -> str | None:
        desc = getattr(getattr(self.image, "image", None), "app_desc", None)
        return c_text(desc.version) if desc is not None else None

    def to_json(self) -> dict:
        return {
            "booted": self.booted.label if self.booted else None,
            "version": self.version,
            "trace": self.trace,
            "writes": [{"offset": o, "length": n} for o, n in self.writes],
            "burned_secure_version": self.burned_secure_version,
        }


class Bootloader:
    """One pass of the 2nd-stage bootloader over a device's flash.

    ``power_on``: the reset reason is a power-on (matters for CONFIG_BOOTLOADER_SKIP_VALIDATE_ON_POWER_ON);
    ``hold_factory_reset_pin`` / ``hold_test_pin``: the pin is held long enough at this reset.
    """

    def __init__(
        self,
        device: Device,
        profile: BootloaderProfile,
        *,
        power_on: bool = True,
        dry_run: bool = False,
        hold_factory_reset_pin: bool = False,
        hold_test_pin: bool = False,
    ):
        self.dev = device
        self.profile = profile
        self.power_on = power_on
        self.dry_run = dry_run
        self.hold_factory_reset_pin = hold_factory_reset_pin
        self.hold_test_pin = hold_test_pin
        self.result = BootResult(None)
        self.table: PartitionTable | None = None
        self.ota_has_initial_contents = False
        self.factory: Partition | None = None
        self.test: Partition | None = None
        self.ota_info: Partition | None = None
        self.ota: dict[int, Partition] = {}
        self.app_count = 0

    # -- plumbing -------------------------------------------------------------------------------
    def _log(self, line: str) -> None:
        self.result.trace.append(line)

    def _write_otadata(self, otadata: OtaData, entry: OtaEntry) -> None:
        """write_otadata(): erase the entry's sector, program the 32-byte entry."""
        self.result.writes.append((otadata.partition.offset + entry.sector * SECTOR_SIZE, SECTOR_SIZE))
        if not self.dry_run:
            otadata.write(entry)

    def _index_to_partition(self, index: int) -> Partition | None:
        """index_to_partition(): factory, test, or ota[index] for 0 <= index < app_count (None: size 0)."""
        if index == FACTORY_INDEX:
            return self.factory
        if index == TEST_APP_INDEX:
            return self.test
        if 0 <= index < min(MAX_OTA_SLOTS, self.app_count):
            return self.ota.get(index)
        return None

    def _check_anti_rollback(self, p: Partition | None) -> bool:
        """check_anti_rollback(): with anti-rollback, the app's secure_version must reach the eFuse value."""
        if not self.profile.anti_rollback:
            return True
        sv = self.dev.app_secure_version(p) if p is not None else None
        if sv is None:
            self._log(f"{p.label if p else 'empty slot'}: no app description (anti-rollback check fails)")
            return False
        return self.dev.efuse_secure_version_ok(sv)

    def _update_anti_rollback(self, p: Partition | None) -> None:
        """update_anti_rollback(): burn the eFuse secure version up to the app's (errors are only logged)."""
        sv = self.dev.app_secure_version(p) if p is not None else None
        if sv is None:
            self._log("anti-rollback: failed to get the partition description, no eFuse burn")
            return
        if sv <= self.dev.efuse_secure_version:
            return
        try:
            self.dev.check_secure_version_fits(sv)
        except EspError as err:
            self._log(f"anti-rollback: {err}")
            return
        self.result.burned_secure_version = sv
        self._log(f"anti-rollback: eFuse secure_version {self.dev.efuse_secure_version} -> {sv}")
        if not self.dry_run:
            self.dev.burn_secure_version(sv)

    # -- the bootloader -------------------------------------------------------------------------
    def run(self) -> BootResult:
        if not self._rom_loads_bootloader():
            return self.result
        try:
            table = self.dev.read_partition_table()
        except PartitionTableInvalid as err:
            self._log(f"Failed to verify partition table ({err.esp_err}: {err}): load partition table error, the "
                      "bootloader resets")
            return self.result
        self.table = table
        self._log(
            f"partition table at 0x{self.dev.settings.partition_table_offset:x}: "
            f"{len(table.entries)} entries, MD5 {table.md5}"
        )
        self._load_partition_table(table)
        index = self._selected_boot_partition()
        if index == INVALID_INDEX:
            self._log("no valid boot index: the bootloader resets")
            return self.result
        self._load_boot_image(index)
        return self.result

    def _rom_loads_bootloader(self) -> bool:
        """The ROM loads the 2nd-stage bootloader from the chip's bootloader offset (with Secure Boot
        enabled, only if it passes the ROM's check: V2 its signature, V1 its digest at 0x0), which then
        checks its own header: an image esp_image_verify refuses as a bootloader (magic, segments,
        checksum, chip) never gets to boot an app."""
        result = self.dev.verify_bootloader()
        if result is not None and not result.ok:
            self._log(f"2nd-stage bootloader at 0x{self.dev.bootloader_region().offset:x} is invalid "
                      f"({result.reason}): the chip resets and tries again, no app runs")
            return False
        return True

    def _load_partition_table(self, table) -> None:
        """bootloader_utility_load_partition_table(): later entries of a kind replace earlier ones."""
        for p in table.entries:
            if p.is_factory:
                self.factory = p
            elif p.is_test:
                self.test = p
            elif p.is_ota_app:
                self.ota[p.subtype & 0x0F] = p
                self.app_count += 1
            elif p.type == 0x01 and p.subtype == 0x00:
                self.ota_info = p
        slots = ", ".join(f"ota_{i}={p.label}" for i, p in sorted(self.ota.items()))
        self._log(f"app_count {self.app_count}" + (f" ({slots})" if slots else ""))

    def _selected_boot_partition(self) -> int:
        """selected_boot_partition() of bootloader_start.c: the otadata decision, then the pins."""
        index = self._get_selected_boot_partition()
        if index == INVALID_INDEX:
            return index
        if self.hold_factory_reset_pin:
            if not self.profile.factory_reset:
                self._log("factory-reset pin held, but the bootloader was built without CONFIG_BOOTLOADER_FACTORY_RESET")
            else:
                self._log("factory-reset pin held: factory reset")
                self._erase_data_partitions()
                return self._get_selected_boot_partition()
        if self.hold_test_pin:
            if not self.profile.app_test:
                self._log("test-app pin held, but the bootloader was built without CONFIG_BOOTLOADER_APP_TEST")
            elif self.test is not None:
                self._log("test-app pin held: boot the test app")
                return TEST_APP_INDEX
            else:
                self._log("test-app pin held, but the partition table has no test app")
                return INVALID_INDEX
        return index

    def _erase_data_partitions(self) -> None:
        """bootloader_common_erase_part_type_data(): listed data partitions (and otadata), in table order."""
        wanted = set(labels(self.profile.factory_reset_data))
        for p in self.table.entries:
            if p.type != 0x01:
                continue
            if (self.profile.factory_reset_otadata and p.subtype == 0x00) or p.label in wanted:
                if p.offset % SECTOR_SIZE or p.size % SECTOR_SIZE:
                    self._log(f"factory reset: '{p.label}' is not sector aligned, the erase fails")
                    continue
                self._log(f"factory reset: erasing '{p.label}' (0x{p.offset:x}, 0x{p.size:x} bytes)")
                self.result.writes.append((p.offset, p.size))
                if not self.dry_run:
                    self.dev.flash.erase_range(p.offset, p.size)

    def _get_selected_boot_partition(self) -> int:
        """bootloader_utility_get_selected_boot_partition()."""
        if self.ota_info is None:
            self._log("no otadata partition -> factory")
            return FACTORY_INDEX
        if self.ota_info.size < 2 * SECTOR_SIZE:
            self._log(f"otadata partition is only 0x{self.ota_info.size:x} bytes (needs 0x2000)")
            return INVALID_INDEX
        otadata = OtaData(self.dev.io, self.ota_info)
        e = otadata.read()
        self.ota_has_initial_contents = False
        for entry in e:
            self._log(entry.describe())
        if self.profile.rollback:
            for i in (0, 1):
                if e[i].state == OtaState.PENDING_VERIFY:
                    self._log(f"entry {i}: PENDING_VERIFY was never confirmed -> ABORTED (rollback)")
                    e[i] = e[i].with_state(OtaState.ABORTED)
                    self._write_otadata(otadata, e[i])
        both_initial = e[0].blank_or_bad_crc and e[1].blank_or_bad_crc
        if not self.profile.anti_rollback:
            if (e[0].invalid and e[1].invalid) or self.app_count == 0:
                why = "no OTA app partitions" if self.app_count == 0 else "both otadata entries invalid"
                if self.factory is not None:
                    self._log(f"{why} -> factory")
                    return FACTORY_INDEX
                self._log(f"{why}, no factory -> ota_0")
                if both_initial:
                    self._log("otadata in initial state: the booted OTA slot will be written to entry 0")
                    self.ota_has_initial_contents = True
                return 0
            active = select_otadata(e, [x.valid for x in e], True)
        else:
            self._log(f"anti-rollback: eFuse secure_version {self.dev.efuse_secure_version}")
            if both_initial:
                self._log("otadata in initial state -> try factory, then the slots; the booted slot is written to entry 0")
                self.ota_has_initial_contents = True
                return FACTORY_INDEX
            active = select_otadata(e, [self._anti_rollback_usable(x) for x in e], True)
        if active == -1:
            if self.factory is not None:
                self._log("no usable otadata entry -> falling back to factory")
            else:
                self._log("no usable otadata entry and no factory -> will try all partitions")
            return FACTORY_INDEX
        boot = e[active].slot(self.app_count)
        self._log(f"active entry {active} (seq {e[active].seq}) -> slot {boot}")
        if self.profile.rollback and e[active].state == OtaState.NEW:
            self._log(f"entry {active}: NEW -> PENDING_VERIFY (first boot of this app)")
            e[active] = e[active].with_state(OtaState.PENDING_VERIFY)
            self._write_otadata(otadata, e[active])
        if self.profile.anti_rollback and e[active].state == OtaState.VALID:
            self._update_anti_rollback(self._index_to_partition(boot))
        return boot

    def _anti_rollback_usable(self, entry: OtaEntry) -> bool:
        """get_active_otadata_with_check_anti_rollback(): a valid entry whose slot's app passes the check."""
        if not entry.valid:
            return False
        if self.app_count == 0:
            # ESP-IDF divides by app_count here; with no OTA slots no entry can be used.
            self._log(f"entry {entry.sector}: no OTA app partitions to map it to")
            return False
        p = self.ota.get(entry.slot(self.app_count))
        if not self._check_anti_rollback(p):
            self._log(f"entry {entry.sector}: the app in slot {entry.slot(self.app_count)} is below the eFuse secure_version")
            return False
        return True

    def _try_load(self, index: int) -> bool:
        """check_anti_rollback() && try_load_partition(); on success set_actual_ota_seq()."""
        p = self._index_to_partition(index)
        if p is None or p.size == 0:
            return False
        if not self._check_anti_rollback(p):
            self._log(f"{p.label}: secure_version below the eFuse value, skipped")
            return False
        skip = self.profile.skip_validation_always or (self.profile.skip_validation_on_power_on and self.power_on)
        result = self.dev.verify_partition(p, load=True, validate=not skip)
        if not result.ok:
            self._log(f"{p.label}: image invalid: {result.reason}")
            return False
        desc = getattr(result.image, "app_desc", None)
        version = c_text(desc.version) if desc is not None else None
        checked = "loaded without validation" if skip else "image valid"
        self._log(f"{p.label}: {checked}" + (f" (version {version})" if version else ""))
        if index >= 0 and self.ota_has_initial_contents:
            self._set_actual_ota_seq(index)
        self.result.booted = p
        self.result.image = result
        self._log(f"boots {p.label}")
        return True

    def _set_actual_ota_seq(self, index: int) -> None:
        """set_actual_ota_seq(): entry 0 = {seq index+1, label all 0xFF, VALID, crc}; anti-rollback burns."""
        entry = OtaEntry(0, SEQ_BLANK, b"\xff" * 20, OtaState.UNDEFINED, SEQ_BLANK).with_seq(index + 1, OtaState.VALID)
        self._log(f"initial otadata: writes entry 0 = seq {index + 1}, state VALID")
        self._write_otadata(OtaData(self.dev.io, self.ota_info), entry)
        if self.profile.anti_rollback:
            self._update_anti_rollback(self._index_to_partition(index))

    def _load_boot_image(self, start: int) -> None:
        """bootloader_utility_load_boot_image(): start, then down to factory, then up, then test."""
        if start == TEST_APP_INDEX:
            if not self._try_load(TEST_APP_INDEX):
                self._log("No bootable test partition in the partition table: the bootloader resets")
            return
        for index in range(start, FACTORY_INDEX - 1, -1):
            if self._try_load(index):
                return
        for index in range(start + 1, self.app_count):
            if self._try_load(index):
                return
        if self.test is not None and self._try_load(TEST_APP_INDEX):
            self._log("fell back to the test app as the only bootable partition")
            return
        self._log("No bootable app partitions in the partition table")
