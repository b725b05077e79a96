"""``esp_ota_ops.c``: the app-side OTA API of one device, byte for byte.

Each method reproduces the ESP-IDF function of the same name (without the ``esp_ota_`` prefix), with
its error codes, its flash operations in the same order, and the differences between ESP-IDF
releases that change the bytes on flash (the device's release, :mod:`esp_ota_emu.idf_release`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import EspError
from .flash import SECTOR_SIZE
from .idf_release import (
    BEGIN_INVALIDATES_INACTIVE_OTADATA,
    BEGIN_REGISTERS_FIRST,
    OTA_ALREADY_IN_PROGRESS,
    OTA_RESUME,
    PARTITION_OTA,
    REWRITE_KEEPS_SELECTED_SLOT,
    SEQUENTIAL_ERASE_FIX,
    SET_BOOT_SKIP_VALIDATE,
)
from .formats.otadata import OtaState
from .formats.partition_table import APP, BOOTLOADER, DATA, DATA_UNDEFINED, ENTRY_MAGIC, PARTITION_TABLE, TABLE_MAX_LEN
from .otadata import OtaData, get_active_otadata, select_otadata
from .partitions import Partition, PartitionTable, PartitionTableInvalid
from .security import sbv2
from .security.policy import data_signature_refusal

if TYPE_CHECKING:
    from .device import Device

OTA_SIZE_UNKNOWN = 0xFFFFFFFF
OTA_WITH_SEQUENTIAL_WRITES = 0xFFFFFFFE

# The slot's running SHA-256 (see OtaOps._follow_sha256) stays this far behind the bytes written, so
# that it never takes in what esp_image_verify leaves out of the image's hash: the appended digest
# itself, a Secure Boot signature sector, or anything a server sends after the image.
_SHA256_LAG = 64 * 1024


@dataclass
class OtaHandle:
    """``ota_ops_entry_t``: one OTA in progress. ``partition`` is where it is written (the staging
    partition); ``final`` what it is for (esp_ota_set_final_partition; None: the staging partition)."""

    handle: int
    partition: Partition
    need_erase: bool
    final: Partition | None = None
    finalize_with_copy: bool = False
    wrote_size: int = 0
    partial: bytearray = field(default_factory=bytearray)  # flash-encryption cache (< 16 bytes)
    partial_fill: bytes = b"\x00"  # the cache is calloc'ed, then refilled with 0xFF after each flush
    resumption: bool = False

    @property
    def final_partition(self) -> Partition:
        return self.final or self.partition


def seq_for_slot(current: int, slot: int, count: int) -> int:
    """compute_ota_seq_for_target_slot(): the smallest ``(slot+1) % count + i*count`` not below ``current``.

    ESP-IDF searches with a uint32 loop; a seq so close to 2**32 that the answer does not fit would make
    that loop wrap around, which we refuse instead of emulating.
    """
    base = (slot + 1) % count
    new = base + max(0, -(-(current - base) // count)) * count
    if new > 0xFFFFFFFF:
        raise EspError("ESP_FAIL", f"otadata seq {current} is too close to 2**32 to select slot {slot}")
    return new


class OtaOps:
    """esp_ota_begin/write/end, esp_ota_set_boot_partition and the rollback API for one device."""

    def __init__(self, device: Device):
        self.dev = device
        self._handles: dict[int, OtaHandle] = {}
        self._last_handle = 0

    # -- helpers --------------------------------------------------------------------------------
    @property
    def _table(self):
        return self.dev.partitions

    def _otadata(self) -> OtaData:
        p = self._table.otadata()
        if p is None:
            raise EspError("ESP_ERR_NOT_FOUND", "the partition table has no otadata partition")
        return OtaData(self.dev.io, p)

    def get_app_partition_count(self) -> int:
        """esp_ota_get_app_partition_count(): consecutive OTA subtypes from ota_0."""
        count = 0
        while count < 16 and self._table.find_first(0x00, 0x10 + count) is not None:
            count += 1
        return count

    def _ota_slot_partition(self, slot: int) -> Partition | None:
        return self._table.find_first(0x00, 0x10 + slot)

    def _new_state(self) -> int:
        """set_new_state_otadata(): NEW when the bootloader monitors first boots, else UNDEFINED."""
        return OtaState.NEW if self.dev.settings.rollback else OtaState.UNDEFINED

    def _image_ok(self, p: Partition) -> bool:
        return self.dev.verify_partition(p).ok

    def _check_partition_conflict(self, partition: Partition) -> None:
        """esp_ota_check_partition_conflict() (v6.1 and newer): one unfinished OTA per partition, staging or final."""
        if self.dev.idf.has(OTA_ALREADY_IN_PROGRESS) and any(
            partition in (h.partition, h.final_partition) for h in self._handles.values()
        ):
            raise EspError(
                "ESP_ERR_OTA_ALREADY_IN_PROGRESS",
                f"an OTA of partition '{partition.label}' is already in progress: end or abort its handle, or reset "
                "(an esp_ota_begin whose erase failed stays registered too)",
            )

    def _check_app_staging(self, partition: Partition) -> None:
        """esp_ota_begin / esp_ota_resume on an app partition: an OTA slot (not factory or test; before
        v5.5 the only kind of partition), and not the running app."""
        if not partition.is_ota_app:
            raise EspError("ESP_ERR_INVALID_ARG", f"partition '{partition.label}' is not an OTA app slot")
        if partition == self.get_running_partition():
            raise EspError("ESP_ERR_OTA_PARTITION_CONFLICT", f"partition '{partition.label}' is the running app")

    def _handle(self, handle: int) -> OtaHandle:
        it = self._handles.get(handle)
        if it is None:
            raise EspError("ESP_ERR_INVALID_ARG", f"no OTA in progress with handle {handle}")
        return it

    # -- partitions -----------------------------------------------------------------------------
    def get_running_partition(self) -> Partition:
        return self.dev.running

    def get_next_update_partition(self, start_from: Partition | None = None) -> Partition | None:
        """esp_ota_get_next_update_partition(): the OTA slot after ``start_from``, else the first one."""
        start = start_from or self.get_running_partition()
        default, next_is_result = None, False
        for sub in range(0x10, 0x20):
            p = self._table.find_first(0x00, sub)
            if p is None:
                continue
            if default is None:
                default = p
            if p == start:
                next_is_result = True
            elif next_is_result:
                return p
        return default

    def get_boot_partition(self) -> Partition | None:
        """esp_ota_get_boot_partition(): what the otadata selects (not checking the image)."""
        if self._table.otadata() is None:
            return None
        entries = self._otadata().read()
        count = self.get_app_partition_count()
        if (entries[0].invalid and entries[1].invalid) or count == 0:
            return self._default_boot_partition()
        active = get_active_otadata(entries)
        if active == -1:
            return self._default_boot_partition()
        return self._ota_slot_partition(entries[active].slot(count))

    def _default_boot_partition(self) -> Partition | None:
        """find_default_boot_partition(): factory, else the lowest OTA subtype, else test."""
        if self._table.factory() is not None:
            return self._table.factory()
        for sub in range(0x10, 0x20):
            p = self._table.find_first(0x00, sub)
            if p is not None:
                return p
        return self._table.test()

    # -- begin / write / end --------------------------------------------------------------------
    def begin(self, partition: Partition | None, image_size: int) -> int:
        """esp_ota_begin(): checks, then erase (whole slot, ``ALIGN_UP(size)``, or nothing if sequential).
        From v5.5 any partition can be written: the app checks apply to app partitions only."""
        if partition is None:
            raise EspError("ESP_ERR_INVALID_ARG", "no partition to update")
        if partition.is_app or not self.dev.idf.has(PARTITION_OTA):
            self._check_app_staging(partition)
            running = self.get_running_partition()
            if self.dev.settings.rollback and running is not None and running.is_ota_app:
                state = self._state_or_none(running)
                if state == OtaState.PENDING_VERIFY:
                    raise EspError(
                        "ESP_ERR_OTA_ROLLBACK_INVALID_STATE",
                        f"the running app '{running.label}' is still PENDING_VERIFY: it must mark itself valid "
                        "(esp_ota_mark_app_valid_cancel_rollback) before another OTA",
                    )
        self._check_partition_conflict(partition)
        self._last_handle += 1
        h = OtaHandle(self._last_handle, partition, need_erase=image_size == OTA_WITH_SEQUENTIAL_WRITES)
        registers_first = self.dev.idf.has(BEGIN_REGISTERS_FIRST)
        if registers_first:
            self._handles[h.handle] = h  # esp_ota_init_entry: a failed erase below leaves it registered
        self._allow_dangerous_writes(partition)
        if image_size != OTA_WITH_SEQUENTIAL_WRITES:
            if image_size in (0, OTA_SIZE_UNKNOWN):
                erase = partition.size
            else:
                erase = (image_size + SECTOR_SIZE - 1) & ~(SECTOR_SIZE - 1)
            if erase > partition.size:
                raise EspError(
                    "ESP_ERR_INVALID_SIZE",
                    f"the image (0x{image_size:x} bytes) is larger than partition '{partition.label}' "
                    f"(0x{partition.size:x} bytes)",
                )
            self.dev.io.erase_range(partition, 0, erase)
        if not registers_first:
            self._handles[h.handle] = h
        if self.dev.idf.has(BEGIN_INVALIDATES_INACTIVE_OTADATA) and self.dev.settings.rollback and partition.is_ota_app:
            self._erase_last_boot(skip_app_erase=True, quiet=True)
        return h.handle

    def resume(self, partition: Partition, erase_size: int, image_offset: int) -> int:
        """esp_ota_resume(): continue an OTA at ``image_offset`` without erasing."""
        if not self.dev.idf.has(OTA_RESUME):
            raise EspError("ESP_ERR_NOT_SUPPORTED", f"ESP-IDF {self.dev.idf} has no esp_ota_resume()")
        if image_offset > partition.size:
            raise EspError("ESP_ERR_INVALID_ARG", "resume offset is past the end of the partition")
        if partition.is_app or not self.dev.idf.has(PARTITION_OTA):
            self._check_app_staging(partition)
        self._check_partition_conflict(partition)
        self._last_handle += 1
        h = OtaHandle(
            self._last_handle,
            partition,
            need_erase=erase_size == OTA_WITH_SEQUENTIAL_WRITES,
            wrote_size=image_offset,
            resumption=True,
        )
        self._handles[h.handle] = h
        self._allow_dangerous_writes(partition)
        if image_offset >= 24:
            self._follow_sha256(partition, self.dev.io.read(partition, 0, 24))
        return h.handle

    def _follow_sha256(self, partition: Partition, header: bytes) -> None:
        """Not ESP-IDF's: when the image header says a SHA-256 is appended (byte 23), hash the slot while
        it is written, so that esp_ota_end's esp_image_verify finds most of that work done (the flash
        drops the running hash if anything rewrites bytes it took). With flash encryption the verify
        hashes a decrypted copy instead."""
        if len(header) >= 24 and header[23] == 1 and not self.dev.io.encrypted(partition):
            self.dev.flash.follow_sha256(partition.offset)

    def write(self, handle: int, data: bytes | memoryview) -> None:
        """esp_ota_write(): sequential erase of the sectors touched, magic check, 16-byte FE caching."""
        size = len(data)
        fixed = self.dev.idf.has(SEQUENTIAL_ERASE_FIX)
        if size == 0 and fixed:
            return  # returns before looking at the handle
        it = self._handle(handle)
        part = it.partition
        if it.need_erase:
            w = it.wrote_size
            first = w // SECTOR_SIZE
            last = (w + size - (1 if fixed else 0)) // SECTOR_SIZE
            if w % SECTOR_SIZE == 0:
                self.dev.io.erase_range(part, w, (last - first + 1) * SECTOR_SIZE)
            elif first != last:
                self.dev.io.erase_range(part, (first + 1) * SECTOR_SIZE, (last - first) * SECTOR_SIZE)
        final_type = it.final_partition.type
        if it.wrote_size == 0 and not it.partial and size > 0:
            if final_type in (APP, BOOTLOADER) and data[0] != 0xE9:
                raise EspError(
                    "ESP_ERR_OTA_VALIDATE_FAILED",
                    f"OTA image has invalid magic byte (expected 0xE9, saw 0x{data[0]:02x})",
                )
            if final_type == PARTITION_TABLE and (magic := int.from_bytes(bytes(data[:2]), "little")) != ENTRY_MAGIC:
                raise EspError(
                    "ESP_ERR_OTA_VALIDATE_FAILED",
                    f"partition table image has invalid magic word (expected 0x50AA, saw 0x{magic:04x})",
                )
        data = bytes(data)
        if it.wrote_size == 0 and not it.partial and final_type == APP:
            self._follow_sha256(part, data)
        if self.dev.flash_encryption_enabled:
            if it.partial:
                take = min(16 - len(it.partial), len(data))
                it.partial += data[:take]
                data = data[take:]
                if len(it.partial) < 16:
                    return
                self.dev.io.write(part, it.wrote_size, bytes(it.partial))
                it.wrote_size += 16
                it.partial = bytearray()
                it.partial_fill = b"\xff"
            tail = len(data) % 16
            if tail:
                it.partial = bytearray(data[-tail:])
                data = data[:-tail]
        if data:
            self.dev.io.write(part, it.wrote_size, data)
        it.wrote_size += len(data)
        self.dev.flash.advance_sha256(part.offset, part.offset + it.wrote_size - _SHA256_LAG)

    def set_final_partition(self, handle: int, final: Partition, finalize_with_copy: bool) -> None:
        """esp_ota_set_final_partition() (v5.5 and newer): verify the staged image as ``final``'s type at
        the end, and with ``finalize_with_copy`` copy it there."""
        if not self.dev.idf.has(PARTITION_OTA):
            raise EspError("ESP_ERR_NOT_SUPPORTED", f"ESP-IDF {self.dev.idf} has no esp_ota_set_final_partition()")
        it = self._handles.get(handle)
        if it is None:
            raise EspError("ESP_ERR_NOT_FOUND", f"no OTA in progress with handle {handle}")
        if not it.resumption and it.wrote_size != 0:
            raise EspError("ESP_ERR_INVALID_STATE", "the final partition must be set before anything is written")
        if final != it.partition:
            it.final, it.finalize_with_copy = final, finalize_with_copy
            self._allow_dangerous_writes(final)

    def _allow_dangerous_writes(self, partition: Partition) -> None:
        """esp_flash_set_dangerous_write_protection(false) for an update of the bootloader or the partition
        table (v5.5): it stays off until the next reset."""
        if partition.type in (BOOTLOADER, PARTITION_TABLE):
            self.dev.dangerous_write_protection = False

    def end(self, handle: int) -> None:
        """esp_ota_end(): flush the FE cache, verify the whole image in the slot as its final partition's
        type, then copy it to the final partition if asked (finalize_with_copy)."""
        it = self._handles.get(handle)
        if it is None:
            raise EspError("ESP_ERR_NOT_FOUND", f"no OTA in progress with handle {handle}")
        try:
            if it.wrote_size == 0:  # bytes still in the flash-encryption cache do not count
                raise EspError("ESP_ERR_INVALID_ARG", "nothing was written" + (
                    f" (only {len(it.partial)} bytes, held for a 16-byte encrypted write)" if it.partial else ""))
            if it.partial:
                try:
                    self.dev.io.write(it.partition, it.wrote_size, bytes(it.partial).ljust(16, it.partial_fill))
                except EspError as err:
                    raise EspError("ESP_ERR_INVALID_STATE", f"writing the last cached bytes failed: {err.message}") from None
                it.wrote_size += 16
            self._verify_staged(it)
            if it.finalize_with_copy:
                self.dev.io.copy(it.final_partition, 0, it.partition, 0, it.final_partition.size)
        finally:
            self._handles.pop(handle, None)

    def _verify_staged(self, it: OtaHandle) -> None:
        """ota_verify_partition(): esp_image_verify for an app or a bootloader, esp_partition_table_verify
        for a partition table (its first 0xC00 bytes), with CONFIG_SECURE_SIGNED_DATA_PARTITION the
        signature of an image for a data partition of subtype undefined, nothing for other partitions."""
        final_type = it.final_partition.type
        if final_type in (APP, BOOTLOADER):
            result = self.dev.verify_partition(it.partition, as_bootloader=final_type == BOOTLOADER)
            if not result.ok:
                raise EspError("ESP_ERR_OTA_VALIDATE_FAILED", f"new image failed verification: {result.reason}")
        elif final_type == PARTITION_TABLE:
            try:
                PartitionTable.from_binary(self.dev.io.read(it.partition, 0, TABLE_MAX_LEN), reader="bootloader",
                                           chip_size=self.dev.flash.size, offset=it.partition.offset)
            except PartitionTableInvalid as err:
                raise EspError("ESP_ERR_OTA_VALIDATE_FAILED", f"new partition table failed verification: {err}") from None
        elif (final_type == DATA and it.final_partition.subtype == DATA_UNDEFINED
              and self.dev.settings.signed_data_partition):
            refusal = data_signature_refusal(self.dev, it.partition, it.wrote_size)
            if refusal is not None:
                raise EspError("ESP_ERR_OTA_VALIDATE_FAILED", f"new data image failed its signature check: {refusal}")

    def abort(self, handle: int) -> None:
        """esp_ota_abort(): forget the handle; nothing on flash changes."""
        if self._handles.pop(handle, None) is None:
            raise EspError("ESP_ERR_NOT_FOUND", f"no OTA in progress with handle {handle}")

    def wrote_size(self, handle: int) -> int:
        return self._handle(handle).wrote_size

    # -- boot partition -------------------------------------------------------------------------
    def set_boot_partition(self, partition: Partition | None) -> None:
        """esp_ota_set_boot_partition(): verify the image, then rewrite otadata (factory: erase it)."""
        if partition is None:
            raise EspError("ESP_ERR_INVALID_ARG", "no partition given")
        result = self.dev.verify_partition(partition)
        if not result.ok:
            raise EspError("ESP_ERR_OTA_VALIDATE_FAILED", f"'{partition.label}': {result.reason}")
        self._set_boot_partition(partition)

    def set_boot_partition_skip_validate(self, partition: Partition | None) -> None:
        """esp_ota_set_boot_partition_skip_validate() (v6.1 and newer): the same without verifying the
        image first, so otadata may select an app the bootloader will refuse."""
        if not self.dev.idf.has(SET_BOOT_SKIP_VALIDATE):
            raise EspError("ESP_ERR_NOT_SUPPORTED",
                           f"ESP-IDF {self.dev.idf} has no esp_ota_set_boot_partition_skip_validate() (v6.1 and newer)")
        if partition is None:
            raise EspError("ESP_ERR_INVALID_ARG", "no partition given")
        self._set_boot_partition(partition)

    def _set_boot_partition(self, partition: Partition) -> None:
        """esp_ota_set_boot_partition_internal(): rewrite otadata (factory: erase it), after the
        anti-rollback check of the app's secure_version."""
        if not partition.is_app:
            raise EspError("ESP_ERR_INVALID_ARG", f"'{partition.label}' is not an app partition")
        if partition.is_factory:
            self._otadata().erase()
            return
        if self.dev.settings.anti_rollback:
            secure_version = self.dev.app_secure_version(partition)
            if secure_version is None:
                raise EspError("ESP_ERR_NOT_FOUND", f"'{partition.label}' has no app description")
            if not self.dev.efuse_secure_version_ok(secure_version):
                self.dev.io.erase_range(partition, 0, partition.size)
                raise EspError(
                    "ESP_ERR_OTA_SMALL_SEC_VER",
                    f"'{partition.label}' has secure_version {secure_version}, lower than the eFuse's "
                    f"{self.dev.efuse_secure_version}: the partition was erased",
                )
        self._rewrite_ota_data(partition)

    def _rewrite_ota_data(self, partition: Partition) -> None:
        """esp_rewrite_ota_data(): the seq arithmetic and which sector is written, per ESP-IDF release."""
        otadata = self._otadata()
        entries = otadata.read()
        count = self.get_app_partition_count()
        slot = partition.subtype & 0x0F
        if slot >= count:
            raise EspError(
                "ESP_ERR_INVALID_ARG", f"'{partition.label}' is outside the {count} consecutive OTA slots"
            )
        active = get_active_otadata(entries)
        if active == -1:
            sector, new_seq = 0, slot + 1
        elif self.dev.idf.has(REWRITE_KEEPS_SELECTED_SLOT) and entries[active].slot(count) == slot:
            sector, new_seq = active, entries[active].seq
        else:
            sector, new_seq = (~active) & 1, seq_for_slot(entries[active].seq, slot, count)
        otadata.write(entries[sector].with_seq(new_seq, self._new_state()))

    # -- rollback API ---------------------------------------------------------------------------
    def _state_or_none(self, partition: Partition) -> int | None:
        try:
            return self.get_state_partition(partition)
        except EspError:
            return None

    def get_state_partition(self, partition: Partition) -> int:
        """esp_ota_get_state_partition(): the state of the first entry whose slot is this partition."""
        if not partition.is_ota_app:
            raise EspError("ESP_ERR_NOT_SUPPORTED", f"'{partition.label}' is not an OTA app partition")
        count = self.get_app_partition_count()
        if self._table.otadata() is None or count == 0:
            raise EspError("ESP_ERR_NOT_FOUND", "no otadata or no OTA slots")
        for e in self._otadata().read():
            if e.slot(count) == partition.subtype - 0x10 and e.crc_ok:
                return e.state
        raise EspError("ESP_ERR_NOT_FOUND", f"no otadata entry selects '{partition.label}'")

    def check_rollback_is_possible(self) -> bool:
        """esp_ota_check_rollback_is_possible(): is there another verifiable app to roll back to?"""
        if self._table.otadata() is None:
            return False
        count = self.get_app_partition_count()
        if count == 0:
            return False
        entries = self._otadata().read()
        valid = [e.valid for e in entries]
        active = select_otadata(entries, valid, True)
        if active == -1:
            return False
        last = (~active) & 1
        if not valid[last] and not self.dev.settings.anti_rollback:
            factory = self._table.factory()
            if factory is not None and self._image_ok(factory):
                return True
        if valid[last]:
            p = self._ota_slot_partition(entries[last].slot(count))
            if p is not None and self._image_ok(p):
                if not self.dev.settings.anti_rollback:
                    return True
                sv = self.dev.app_secure_version(p)
                return sv is not None and self.dev.efuse_secure_version_ok(sv)
        return False

    def _current_ota_is_workable(self, valid: bool) -> None:
        """esp_ota_current_ota_is_workable(): mark the active entry VALID or INVALID."""
        if self._table.otadata() is None:
            raise EspError("ESP_ERR_NOT_FOUND", "the partition table has no otadata partition")
        otadata = self._otadata()
        entries = otadata.read()
        active = get_active_otadata(entries)
        if active == -1 or self.get_app_partition_count() == 0:
            raise EspError("ESP_FAIL", "Running firmware is factory: there is no OTA entry to mark")
        e = entries[active]
        if valid:
            if e.state != OtaState.VALID:
                otadata.write(e.with_seq(e.seq, OtaState.VALID))
                if self.dev.settings.anti_rollback:
                    sv = self.dev.app_secure_version(self.get_running_partition())
                    if sv is not None:
                        self.dev.burn_secure_version(sv)
            return
        if not self.check_rollback_is_possible():
            raise EspError(
                "ESP_ERR_OTA_ROLLBACK_FAILED", "Rollback is not possible: no other app in the slots verifies"
            )
        otadata.write(e.with_seq(e.seq, OtaState.INVALID))

    def mark_app_valid_cancel_rollback(self) -> None:
        self._current_ota_is_workable(True)

    def mark_app_invalid_rollback(self) -> None:
        """esp_ota_mark_app_invalid_rollback(); the ``_and_reboot`` variant is the device's job."""
        self._current_ota_is_workable(False)

    def get_last_invalid_partition(self) -> Partition | None:
        """esp_ota_get_last_invalid_partition(): the INVALID/ABORTED entry with the smallest seq."""
        if self._table.otadata() is None:
            return None
        entries = self._otadata().read()
        marked = [e.seq != 0xFFFFFFFF and e.crc_ok and e.state in (OtaState.INVALID, OtaState.ABORTED) for e in entries]
        idx = select_otadata(entries, marked, False)
        count = self.get_app_partition_count()
        if idx == -1 or count == 0:
            return None
        p = self._ota_slot_partition(entries[idx].slot(count))
        if p is not None and not self._image_ok(p):
            return None
        return p

    def _erase_last_boot(self, *, skip_app_erase: bool, quiet: bool = False) -> None:
        """erase_last_boot_app_partition(): erase the previous app and/or the inactive otadata sector."""
        try:
            otadata = self._otadata()
        except EspError:
            if quiet:
                return
            raise EspError("ESP_FAIL", "the partition table has no otadata partition") from None
        entries = otadata.read()
        active = get_active_otadata(entries)
        count = self.get_app_partition_count()
        why = None
        if active == -1 or count == 0:
            why = "no active otadata entry"
        else:
            inactive = entries[(~active) & 1]
            if inactive.seq == 0xFFFFFFFF or not inactive.crc_ok:
                why = "the inactive otadata entry is blank or its CRC is wrong"
            else:
                p = self._ota_slot_partition(inactive.slot(count))
                if p is None:
                    why = "the inactive entry selects no partition"
                elif self.get_running_partition() in (None, p):
                    why = "the inactive entry selects the running app (or no app runs)"
        if why is not None:
            if quiet:
                return
            raise EspError("ESP_FAIL", why)
        if not skip_app_erase:
            self.dev.io.erase_range(p, 0, p.size)
        otadata.erase_sector(inactive.sector)

    def revoke_secure_boot_public_key(self, index: int) -> None:
        """esp_ota_revoke_secure_boot_public_key(): revoke key digest ``index`` once the running app (VALID,
        with rollback) and the bootloader both verify with another trusted key. Secure Boot V2 on chips
        that can revoke keys (not the ESP32)."""
        dev = self.dev
        if dev.chip is None or dev.chip.name == "esp32":
            raise EspError("ESP_ERR_NOT_SUPPORTED", "this chip can not revoke Secure Boot keys")
        if dev.settings.secure_boot != "v2":
            raise EspError("ESP_FAIL", "Secure boot v2 has not been enabled")
        if index not in (0, 1, 2):
            raise EspError("ESP_ERR_INVALID_ARG", f"Invalid index {index} for public key revocation")
        running = self.get_running_partition()
        if dev.settings.rollback:
            try:
                state = self.get_state_partition(running)
            except EspError as err:
                raise EspError("ESP_FAIL", f"esp_ota_get_state_partition returned {err.esp_err}") from None
            if state != OtaState.VALID:
                raise EspError("ESP_FAIL", "The current running application is not marked as a valid image")
        slots = dev.efuses.secure_boot_key_digests()
        if slots[index]["digest"] is None or slots[index]["revoked"]:
            return  # "Given public key digest is already revoked"
        others = [s["digest"] for s in slots if s["index"] != index and s["digest"] is not None and not s["revoked"]]
        for what, part in (("Application", running), ("Bootloader", dev.bootloader_region())):
            if not self._signed_by_one_of(part, others):
                raise EspError("ESP_FAIL", f"{what} cannot be verified with any key other than the one being revoked")
        dev.revoke_secure_boot_key(index)

    def _signed_by_one_of(self, part: Partition, digests: list[bytes]) -> bool:
        """esp_secure_boot_verify_with_efuse_digest_index() for any of ``digests``."""
        image = self.dev.parse_partition_image(part)
        if image is None:
            return False
        view, base = self.dev.plain_image_region(part)
        return sbv2.verify_image_signatures(view[base : base + part.size], image.image_len, digests).ok

    def erase_last_boot_app_partition(self) -> None:
        self._erase_last_boot(skip_app_erase=False)

    def invalidate_inactive_ota_data_slot(self) -> None:
        self._erase_last_boot(skip_app_erase=True)

