"""The ESP-IDF 2nd-stage bootloader's boot decision, with its writes to flash.

Reproduces bootloader_utility_load_partition_table, bootloader_utility_get_selected_boot_partition
and bootloader_utility_load_boot_image (bootloader_support/src/bootloader_utility.c): the otadata
selection, the rollback transitions (PENDING_VERIFY -> ABORTED, NEW -> PENDING_VERIFY), anti-rollback
filtering and eFuse burns, image verification with fallback through the other slots, factory and
test apps, and the VALID entry written when booting from "initial contents".
A dry run decides the same way without touching the flash (for ``info``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .flash import SECTOR_SIZE
from .formats.app_desc import c_text
from .formats.otadata import OtaState
from .otadata import OtaData, OtaEntry, select_otadata
from .partitions import Partition

if TYPE_CHECKING:
    from .device import Device

FACTORY_INDEX = -1
TEST_APP_INDEX = -2
INVALID_INDEX = -99


@dataclass(frozen=True)
class BootloaderProfile:
    """The bootloader's build configuration that changes what a reset does (a device setting)."""

    rollback: bool = False  # CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
    anti_rollback: bool = False  # CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
    skip_validation_on_power_on: bool = False  # CONFIG_BOOTLOADER_SKIP_VALIDATE_ON_POWER_ON
    skip_validation_always: bool = False  # CONFIG_BOOTLOADER_SKIP_VALIDATE_ALWAYS
    factory_reset_pin: bool = False  # CONFIG_BOOTLOADER_FACTORY_RESET and the pin held at reset
    factory_reset_data: tuple[str, ...] = ()  # CONFIG_BOOTLOADER_DATA_FACTORY_RESET labels
    factory_reset_otadata: bool = True  # CONFIG_BOOTLOADER_OTA_DATA_ERASE
    test_app_pin: bool = False  # CONFIG_BOOTLOADER_APP_TEST and the pin held at reset

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
        return ", ".join(parts)


@dataclass
class BootResult:
    """What one reset did: the app booted (None: "No bootable app partitions"), why, and what it wrote."""

    booted: Partition | None
    trace: list[str] = field(default_factory=list)
    writes: list[tuple[int, int]] = field(default_factory=list)
    burned_secure_version: int | None = None
    image: object | None = None  # the verification result of the booted image

    @property
    def version(self) -> str | None:
        desc = getattr(getattr(self.image, "image", None), "app_desc", None)
        return c_text(desc.version) if desc is not None else None


class Bootloader:
    """One pass of the 2nd-stage bootloader over a device's flash."""

    def __init__(self, device: Device, profile: BootloaderProfile, *, power_on: bool = True, dry_run: bool = False):
        self.dev = device
        self.profile = profile
        self.power_on = power_on
        self.dry_run = dry_run
        self.result = BootResult(None)
        self.ota_has_initial_contents = False

    # -- plumbing -------------------------------------------------------------------------------
    def _log(self, line: str) -> None:
        self.result.trace.append(line)

    def _write_otadata(self, otadata: OtaData, entry: OtaEntry) -> None:
        """write_otadata(): erase the sector, program the 32-byte entry."""
        addr = otadata.partition.offset + entry.sector * SECTOR_SIZE
        self.result.writes.append((addr, SECTOR_SIZE))
        if not self.dry_run:
            otadata.write(entry)

    def _ota_partition(self, index: int, count: int) -> Partition | None:
        """index_to_partition() for OTA indexes: only ota_0 .. ota_(app_count-1) in table order."""
        return self._ota_slots[index] if 0 <= index < count else None

    def _secure_version_ok(self, p: Partition) -> bool:
        """check_anti_rollback(): the app's secure_version must reach the eFuse value."""
        if not self.profile.anti_rollback:
            return True
        sv = self.dev.app_secure_version(p)
        return sv is not None and self.dev.efuse_secure_version_ok(sv)

    def _burn(self, p: Partition) -> None:
        """update_anti_rollback(): burn the eFuse secure version up to the app's."""
        sv = self.dev.app_secure_version(p)
        if sv is not None and sv > self.dev.efuse_secure_version:
            self.result.burned_secure_version = sv
            self._log(f"anti-rollback: eFuse secure_version {self.dev.efuse_secure_version} -> {sv}")
            if not self.dry_run:
                self.dev.burn_secure_version(sv)

    # -- the bootloader -------------------------------------------------------------------------
    def run(self) -> BootResult:
        table = self.dev.partitions
        self._log(
            f"partition table at 0x{self.dev.settings.partition_table_offset:x}: "
            f"{len(table.entries)} entries, MD5 {table.md5}"
        )
        apps = [p for p in table.entries if p.is_app]
        self._factory = table.factory()
        self._test = table.test()
        # bootloader_utility_load_partition_table(): ota[subtype & 0x0F] = entry; app_count = number of OTA entries.
        self._ota_slots: dict[int, Partition] = {}
        count = 0
        for p in table.entries:
            if p.is_ota_app:
                self._ota_slots[p.subtype & 0x0F] = p
                count += 1
        self._count = count
        if not apps:
            self._log("no app partitions in the table")
            return self.result
        index = self._selected_boot_partition(table)
        if index == INVALID_INDEX:
            self._log("no valid boot index: the bootloader resets")
            return self.result
        if self.profile.factory_reset_pin:
            index = self._factory_reset(table)
        if self.profile.test_app_pin:
            self._log("test-app pin held")
            index = TEST_APP_INDEX if self._test is not None else INVALID_INDEX
            if index == INVALID_INDEX:
                self._log("no test partition: the bootloader resets")
                return self.result
        self._load_boot_image(index)
        return self.result

    def _selected_boot_partition(self, table) -> int:
        """bootloader_utility_get_selected_boot_partition()."""
        otadata_part = table.otadata()
        if otadata_part is None:
            self._log("no otadata partition -> factory")
            return FACTORY_INDEX
        if otadata_part.size < 2 * SECTOR_SIZE:
            self._log(f"otadata partition is only 0x{otadata_part.size:x} bytes (needs 0x2000)")
            return INVALID_INDEX
        otadata = OtaData(self.dev.io, otadata_part)
        e = otadata.read()
        for entry in e:
            self._log(entry.describe())
        if self.profile.rollback:
            for i in (0, 1):
                if e[i].state == OtaState.PENDING_VERIFY:
                    self._log(f"entry {i}: PENDING_VERIFY was never confirmed -> ABORTED (rollback)")
                    e[i] = e[i].with_state(OtaState.ABORTED)
                    self._write_otadata(otadata, e[i])
        count = self._count
        both_initial = e[0].blank_or_bad_crc and e[1].blank_or_bad_crc
        if not self.profile.anti_rollback:
            if (e[0].invalid and e[1].invalid) or count == 0:
                why = "no OTA slots" if count == 0 else "both otadata entries invalid"
                if self._factory is not None:
                    self._log(f"{why} -> factory")
                    return FACTORY_INDEX
                self._log(f"{why}, no factory -> ota_0")
                if both_initial:
                    self.ota_has_initial_contents = True
                return 0
            usable = [x.valid for x in e]
        else:
            if both_initial:
                self._log("otadata in initial state (anti-rollback) -> try factory, then the slots")
                self.ota_has_initial_contents = True
                return FACTORY_INDEX
            usable = []
            for x in e:
                ok = x.valid
                if ok and count:
                    p = self._ota_partition(x.slot(count), count)
                    ok = p is not None and self._secure_version_ok(p)
                    if not ok:
                        self._log(f"entry {x.sector}: its app's secure_version is below the eFuse's")
                usable.append(ok)
        active = select_otadata(e, usable, True)
        if active == -1:
            self._log("no usable otadata entry -> factory (or try every slot)")
            return FACTORY_INDEX
        boot = e[active].slot(count)
        self._log(f"active entry {active} (seq {e[active].seq}) -> slot {boot}")
        if self.profile.rollback and e[active].state == OtaState.NEW:
            self._log(f"entry {active}: NEW -> PENDING_VERIFY (first boot of this app)")
            e[active] = e[active].with_state(OtaState.PENDING_VERIFY)
            self._write_otadata(otadata, e[active])
        if self.profile.anti_rollback and e[active].state == OtaState.VALID:
            p = self._ota_partition(boot, count)
            if p is not None:
                self._burn(p)
        return boot

    def _factory_reset(self, table) -> int:
        """The factory-reset pin: erase the listed data partitions (and otadata), then decide again."""
        self._log("factory-reset pin held")
        for label in self.profile.factory_reset_data:
            p = table.find(label)
            if p is not None:
                self._log(f"erasing '{label}'")
                self.result.writes.append((p.offset, p.size))
                if not self.dry_run:
                    self.dev.io.erase_range(p, 0, p.size)
        otadata_part = table.otadata()
        if self.profile.factory_reset_otadata and otadata_part is not None:
            self._log("erasing otadata")
            self.result.writes.append((otadata_part.offset, otadata_part.size))
            if not self.dry_run:
                OtaData(self.dev.io, otadata_part).erase()
        if not self.dry_run:
            return self._selected_boot_partition(table)
        # A dry run cannot re-read the erased otadata: decide as for blank entries.
        if self._factory is not None:
            return FACTORY_INDEX
        self.ota_has_initial_contents = True
        return 0

    def _try(self, index: int) -> bool:
        """try_load_partition() with check_anti_rollback(); on success set_actual_ota_seq()."""
        p = self._factory if index == FACTORY_INDEX else self._test if index == TEST_APP_INDEX else self._ota_partition(index, self._count)
        if p is None:
            return False
        if not self._secure_version_ok(p):
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
            seq = index + 1
            entry = OtaEntry(0, 0, b"\xff" * 20, 0, 0).with_seq(seq, OtaState.VALID)
            self._log(f"initial otadata: writes entry 0 = seq {seq}, state VALID")
            otadata_part = self.dev.partitions.otadata()
            if otadata_part is not None:
                self._write_otadata(OtaData(self.dev.io, otadata_part), entry)
            if self.profile.anti_rollback:
                self._burn(p)
        self.result.booted = p
        self.result.image = result
        self._log(f"boots {p.label}")
        return True

    def _load_boot_image(self, start: int) -> None:
        """bootloader_utility_load_boot_image(): start, then down to factory, then up, then test."""
        if start == TEST_APP_INDEX:
            if not self._try(TEST_APP_INDEX):
                self._log("test app failed to load: the bootloader resets")
            return
        for index in range(start, FACTORY_INDEX - 1, -1):
            if self._try(index):
                return
        for index in range(start + 1, self._count):
            if self._try(index):
                return
        if self._test is not None:
            self._log("falling back to the test app")
            if self._try(TEST_APP_INDEX):
                return
        self._log("No bootable app partitions in the partition table")

