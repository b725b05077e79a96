"""Property-based state machine over random OTAs, resets, power cuts, confirmations, invalidations and
flash corruption: after every reset the device runs a verified app whenever the bootloader can reach one,
and an app still PENDING_VERIFY can never start another OTA."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from esp_ota_emu.device import Device
from esp_ota_emu.errors import EspError
from esp_ota_emu.formats.otadata import OtaState
from esp_ota_emu.local_ota import ota_from_file
from esp_ota_emu.otadata import OtaData, get_active_otadata
from helpers_flash import SAMPLES, make_flash, sample
from conftest import REALDATA

HEAD = "nvs, data, nvs, 0x9000, 0x4000,\notadata, data, ota, 0xd000, 0x2000,\n"
LAYOUTS = {
    "factory_2ota": HEAD + "factory, app, factory, 0x10000, 0x20000,\n"
    "ota_0, app, ota_0, 0x30000, 0x20000,\nota_1, app, ota_1, 0x50000, 0x20000,\n",
    "2ota": HEAD + "ota_0, app, ota_0, 0x10000, 0x20000,\nota_1, app, ota_1, 0x30000, 0x20000,\n",
    "3ota": HEAD + "".join(f"ota_{i}, app, ota_{i}, 0x{0x10000 + 0x20000 * i:x}, 0x20000,\n" for i in range(3)),
}


class DeviceLifecycle(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="lifecycle-"))
        self.dev: Device | None = None
        self.last_boot = None

    def teardown(self):
        if self.dev is not None:
            self.dev.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(layout=st.sampled_from(sorted(LAYOUTS)), rollback=st.booleans(), anti_rollback=st.booleans(),
                release=st.sampled_from(["v4", "v4.4.7", "v5.0.5", "v5", "v5.5.2", "newest"]))
    def make_device(self, layout, rollback, anti_rollback, release):
        first = "factory" if layout.startswith("factory") else "ota_0"
        path = make_flash(self.tmp / "f.bin", REALDATA, LAYOUTS[layout], {first: sample("v1")}, size=1 << 20)
        self.dev = Device.open(path, rollback=rollback, anti_rollback=anti_rollback, idf_release=release)
        self._boot(power_on=True)

    # -- what the bootloader can reach -----------------------------------------------------------
    def _bootable(self) -> set[str]:
        dev = self.dev
        out = set()
        for p in dev.partitions.entries:
            if not (p.is_factory or p.is_ota_app):
                continue
            if not dev.verify_partition(p, load=True).ok:
                continue
            sv = dev.app_secure_version(p)
            if dev.settings.anti_rollback and (sv is None or sv < dev.efuse_secure_version):
                continue
            out.add(p.label)
        return out

    def _entries(self):
        return OtaData(self.dev.io, self.dev.partitions.otadata()).read()

    def _boot(self, power_on=False):
        before = self._entries()
        result = self.dev.boot(power_on=power_on)
        after = self._entries()
        if self.dev.settings.rollback:
            for old, new in zip(before, after):
                if old.state == OtaState.PENDING_VERIFY:  # never confirmed: aborted at this reset
                    assert new.state == OtaState.ABORTED and new.seq == old.seq, (old, new)
                if new.state == OtaState.PENDING_VERIFY:  # only a NEW entry becomes PENDING_VERIFY
                    assert old.state == OtaState.NEW, (old, new)
            active = get_active_otadata(after)
            if not self.dev.settings.anti_rollback and active != -1:
                assert after[active].state != OtaState.NEW, after  # the selected NEW app was tried
        else:
            assert after == before or not before[0].valid and not before[1].valid, (before, after)
        bootable = self._bootable()
        if bootable:
            assert result.booted is not None, result.trace
            assert result.booted.label in bootable, (result.booted.label, bootable, result.trace)
        else:
            assert result.booted is None, result.trace
        self.last_boot = result

    def _pending(self) -> bool:
        running = self.dev.running
        if running is None or not running.is_ota_app:
            return False
        try:
            return self.dev.ota.get_state_partition(running) == OtaState.PENDING_VERIFY
        except EspError:
            return False

    # -- events ------------------------------------------------------------------------------------
    @rule(image=st.sampled_from(["v1", "v2", "v3", "broken"]))
    def ota(self, image):
        if self.dev.running is None:
            return
        pending = self.dev.settings.rollback and self._pending()
        try:
            target = ota_from_file(self.dev, SAMPLES / f"sample_{image}.bin")
        except EspError as err:
            if pending:
                assert err.esp_err == "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"
            else:
                assert err.esp_err in ("ESP_ERR_OTA_VALIDATE_FAILED", "ESP_ERR_OTA_SMALL_SEC_VER"), err
            return
        assert not pending, "a PENDING_VERIFY app started an OTA"
        assert self.dev.ota.get_boot_partition() == target

    @rule()
    def reset(self):
        self._boot()

    @rule()
    def power_cut(self):
        self._boot(power_on=True)

    @rule()
    def confirm(self):
        if self.dev.running is None:
            return
        try:
            self.dev.ota.mark_app_valid_cancel_rollback()
        except EspError as err:
            assert err.esp_err == "ESP_FAIL"  # the factory app (no active OTA entry)

    @rule()
    def invalidate(self):
        if self.dev.running is None:
            return
        try:
            self.dev.ota.mark_app_invalid_rollback()
        except EspError as err:
            assert err.esp_err in ("ESP_FAIL", "ESP_ERR_OTA_ROLLBACK_FAILED")
            return
        self._boot()

    @rule(slot=st.integers(0, 3), offset=st.integers(0, 655))
    def corrupt_flash(self, slot, offset):
        """A bit flip in an app image (not the running one)."""
        apps = [p for p in self.dev.partitions.entries if p.is_app and p.label != self.dev.state.running]
        if not apps:
            return
        p = apps[slot % len(apps)]
        byte = self.dev.flash.read(p.offset + offset, 1)[0]
        self.dev.flash.write_raw(p.offset + offset, bytes([byte ^ 0x10]))

    @invariant()
    def running_app_verifies(self):
        if self.dev is not None and self.dev.running is not None and self.last_boot is not None:
            assert self.last_boot.image is not None and self.last_boot.image.ok


TestDeviceLifecycle = DeviceLifecycle.TestCase
TestDeviceLifecycle.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
