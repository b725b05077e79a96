"""``esp_image_verify()``: the checks ESP-IDF runs on an image before it boots or accepts it, in its order.

The result names the ``esp_err_t`` ESP-IDF returns (``ESP_ERR_IMAGE_INVALID`` for most failures,
``ESP_FAIL`` for a chip or revision mismatch, ``ESP_ERR_INVALID_ARG`` for a region over 16 MiB) and says
in plain words why, the way ESP-IDF's log line does. On failure ``image_len`` is 0: ESP-IDF zeroes the
metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..chips import Chip, chip_by_name, find_chip_by_id
from ..errors import EspError, InputError
from ..formats.app_desc import APP_DESC_SIZE
from ..formats.image import (
    ESP_IMAGE_HEADER_MAGIC,
    ESP_IMAGE_MAX_SEGMENTS,
    IMAGE_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    ImageHeader,
)
from .reader import (
    SECTOR_SIZE,
    EspImage,
    Sha256Of,
    align_up,
    as_view,
    iter_segment_headers,
    need,
    parse_image,
    read_app_desc,
)

SIXTEEN_MB = 0x1000000
SBV2_SIGNATURE_LEN = 4096  # sizeof(ets_secure_boot_signature_t)
SBV1_SIGNATURE_LEN = 68  # sizeof(esp_secure_boot_sig_block_t)
_MMU_PAGE_LOG2_MIN, _MMU_PAGE_LOG2_MAX = 13, 16  # MMU_PAGE_SIZE_MIN (8 KiB) .. MMU_PAGE_SIZE_MAX (64 KiB)
_EFUSE_BLK_REV_OFFSET = 176  # min/max_efuse_blk_rev_full inside esp_app_desc_t (segment 0 data)

# signature_check(image, buffer view, image offset) -> None when the signature verifies, else the reason.
SignatureCheck = Callable[[EspImage, memoryview, int], "str | None"]


@dataclass(frozen=True)
class VerifyResult:
    """What ``esp_image_verify`` returned, why, and the image metadata on success."""

    esp_err: str  # "ESP_OK" or the ESP-IDF error name
    reason: str
    image: EspImage | None
    image_len: int

    @property
    def ok(self) -> bool:
        return self.esp_err == "ESP_OK"

    def raise_for_error(self) -> None:
        """Raise the result as an :class:`EspError` when verification failed."""
        if not self.ok:
            raise EspError(self.esp_err, self.reason)


class _Fail(Exception):
    def __init__(self, esp_err: str, reason: str):
        super().__init__(reason)
        self.esp_err = esp_err
        self.reason = reason


def _rev(value: int) -> str:
    return f"v{value // 100}.{value % 100}"


def _rev_set(value: int) -> bool:
    return value not in (0, 0xFFFF)


def _check_chip(
    header, chip: Chip | None, chip_rev: int | None, is_bootloader: bool, disable_wafer_version_major: bool
) -> None:
    """bootloader_common_check_chip_validity(); the maximum revision is checked for applications only."""
    if chip is None:
        if find_chip_by_id(header.chip_id) is None:
            raise _Fail("ESP_FAIL", f"unknown chip ID {header.chip_id} in the image header")
        return
    if header.chip_id != chip.chip_id:
        raise _Fail("ESP_FAIL", f"mismatch chip ID, expected {chip.chip_id}, found {header.chip_id}")
    if chip_rev is None:
        return
    problem = chip_revision_problem(
        header.min_chip_rev_full, header.max_chip_rev_full, chip_rev,
        check_max=not is_bootloader and not disable_wafer_version_major,
    )
    if problem is not None:
        raise _Fail("ESP_FAIL", problem)


def chip_revision_problem(min_rev: int, max_rev: int, chip_rev: int, *, check_max: bool = True) -> str | None:
    """bootloader_common_check_chip_revision_validity(): what is wrong with the image's chip revision
    range (major*100+minor; a maximum of 0 or 0xFFFF means none) for a chip of ``chip_rev``, or None."""
    if min_rev > chip_rev:
        return f"Image requires chip rev >= {_rev(min_rev)}, but chip is {_rev(chip_rev)}"
    if check_max and _rev_set(max_rev) and chip_rev > max_rev:
        return f"Image requires chip rev <= {_rev(max_rev)}, but chip is {_rev(chip_rev)}"
    return None


def _check_efuse_blk(view: memoryview, data_offset: int, data_len: int, efuse_blk_rev: int) -> None:
    """bootloader_common_check_efuse_blk_validity() on the esp_app_desc_t fields of segment 0."""
    if data_len < _EFUSE_BLK_REV_OFFSET + 4:
        return
    pos = data_offset + _EFUSE_BLK_REV_OFFSET
    min_rev = int.from_bytes(view[pos : pos + 2], "little")
    max_rev = int.from_bytes(view[pos + 2 : pos + 4], "little")
    if _rev_set(min_rev) and min_rev > efuse_blk_rev:
        raise _Fail(
            "ESP_FAIL", f"Image requires efuse blk rev >= {_rev(min_rev)}, but chip is {_rev(efuse_blk_rev)}"
        )
    if _rev_set(max_rev) and efuse_blk_rev > max_rev:
        raise _Fail(
            "ESP_FAIL", f"Image requires efuse blk rev <= {_rev(max_rev)}, but chip is {_rev(efuse_blk_rev)}"
        )


def infer_mmu_page_size(image_segments: list[tuple[int, int]], chip: Chip) -> int:
    """The MMU page size the image was built for: the largest of the chip's configurable sizes under
    which every flash-mapped segment ``(data_offset, load_addr)`` is aligned (64 KiB if none is)."""
    for page in sorted(chip.mmu_page_sizes, reverse=True):
        if all(data % page == addr % page for data, addr in image_segments):
            return page
    return 0x10000


def verify_image(
    buf,
    offset: int,
    region_size: int,
    *,
    chip: Chip | str | None = None,
    chip_rev: int | None = None,
    is_bootloader: bool = False,
    secure_boot: str | None = None,
    load: bool = False,
    mmu_page_size: int | None = None,
    efuse_blk_rev: int | None = None,
    disable_wafer_version_major: bool = False,
    signature_check: SignatureCheck | None = None,
    sha256: Sha256Of | None = None,
) -> VerifyResult:
    """Reproduce ``esp_image_verify(ESP_IMAGE_VERIFY, part, &data)`` on ``buf[offset:offset+region_size]``.

    * ``chip``/``chip_rev`` (major*100+minor): the device; chip None accepts any known chip id, chip_rev
      None skips the revision range check.
    * ``is_bootloader``: the image sits at ESP_BOOTLOADER_OFFSET: its appended SHA-256 is not checked
      unless ``secure_boot == "v2"``, and the eFuse block revision check is skipped.
    * ``secure_boot``: None, "v1" (ESP32 ECDSA signed apps, 68-byte block) or "v2" (4 KiB signature
      sector): counted in the fit-in-region check; ``signature_check`` then replaces the plain hash check.
    * ``load``: the bootloader is loading (ESP_IMAGE_LOAD): RAM segments must lie in the chip's RAM.
    * ``mmu_page_size``: CONFIG_MMU_PAGE_SIZE of the verifier; None takes the image's app descriptor or
      the largest size the image is laid out for.
    * ``efuse_blk_rev``: the chip's eFuse block revision; None skips that check.
    * ``sha256``: how to hash bytes of ``buf`` for the appended SHA-256 (see :func:`parse_image`).
    """
    view = as_view(buf)
    try:
        if isinstance(chip, str):
            chip = chip_by_name(chip)
        image = _verify(
            view, offset, region_size, chip, chip_rev, is_bootloader, secure_boot, load,
            mmu_page_size, efuse_blk_rev, disable_wafer_version_major, signature_check, sha256,
        )
    except _Fail as fail:
        return VerifyResult(fail.esp_err, fail.reason, None, 0)
    image_len = image.image_len
    if signature_check is not None and secure_boot == "v2":
        image_len = align_up(image.end, SECTOR_SIZE) - offset + SBV2_SIGNATURE_LEN
    elif signature_check is not None and secure_boot == "v1" and not is_bootloader:
        image_len += SBV1_SIGNATURE_LEN
    return VerifyResult("ESP_OK", "image valid", image, image_len)


def _verify(
    view, offset, region_size, chip, chip_rev, is_bootloader, secure_boot, load,
    mmu_page_size, efuse_blk_rev, disable_wafer_version_major, signature_check, sha256,
) -> EspImage:
    if region_size > SIXTEEN_MB:
        raise _Fail("ESP_ERR_INVALID_ARG", f"partition size 0x{region_size:x} invalid, larger than 16MB")
    end = len(view)
    try:
        need(end, offset, IMAGE_HEADER_SIZE, "the image header")
        header = ImageHeader.parse(bytes(view[offset : offset + IMAGE_HEADER_SIZE]))
        if header.magic != ESP_IMAGE_HEADER_MAGIC:
            raise _Fail(
                "ESP_ERR_IMAGE_INVALID", f"image at 0x{offset:x} has invalid magic byte (nothing flashed here?)"
            )
        _check_chip(header, chip, chip_rev, is_bootloader, disable_wafer_version_major)
        chip = chip or find_chip_by_id(header.chip_id)
        if header.segment_count > ESP_IMAGE_MAX_SEGMENTS:
            raise _Fail(
                "ESP_ERR_IMAGE_INVALID",
                f"image at 0x{offset:x} segment count {header.segment_count} exceeds max {ESP_IMAGE_MAX_SEGMENTS}",
            )
        first = offset + IMAGE_HEADER_SIZE
        page_size = mmu_page_size
        last_end = first
        for index, pos, load_addr, data_len in iter_segment_headers(view, first, header.segment_count, end):
            if data_len & 3 or data_len >= SIXTEEN_MB:
                raise _Fail("ESP_ERR_IMAGE_INVALID", f"invalid segment length 0x{data_len:x}")
            if index == 0:
                page_size = _segment0_checks(view, offset, pos, data_len, chip, is_bootloader, mmu_page_size, header)
            _check_segment(view, end, chip, index, pos, load_addr, data_len, page_size, load)
            if index == 0 and efuse_blk_rev is not None and not is_bootloader and chip.name != "esp32":
                _check_efuse_blk(view, pos + SEGMENT_HEADER_SIZE, data_len, efuse_blk_rev)
            last_end = pos + SEGMENT_HEADER_SIZE + data_len
        if last_end > 0xFFFFFFFF:
            raise _Fail("ESP_ERR_IMAGE_INVALID", "image offset has wrapped")
        image = parse_image(view, offset, layout="esp32", sha256=sha256)
    except InputError as err:
        raise _Fail("ESP_ERR_IMAGE_INVALID", str(err)) from None

    if not image.checksum_ok:
        raise _Fail(
            "ESP_ERR_IMAGE_INVALID",
            f"Checksum failed. Calculated 0x{image.checksum_computed:x} read 0x{image.checksum_stored:x}",
        )
    sig_len = 0
    if secure_boot == "v2":
        sig_len = align_up(image.end, SECTOR_SIZE) - image.end + SBV2_SIGNATURE_LEN
    elif secure_boot == "v1" and not is_bootloader:
        sig_len = SBV1_SIGNATURE_LEN
    if image.image_len + sig_len > region_size:
        raise _Fail(
            "ESP_ERR_IMAGE_INVALID",
            f"Image length {image.image_len + sig_len} doesn't fit in partition length {region_size}",
        )
    verify_sha = not is_bootloader or secure_boot == "v2"
    if verify_sha and signature_check is not None:
        reason = signature_check(image, view, offset)
        if reason is not None:
            raise _Fail("ESP_ERR_IMAGE_INVALID", f"Secure boot signature verification failed: {reason}")
    elif verify_sha and image.hash_ok is False:
        raise _Fail("ESP_ERR_IMAGE_INVALID", "Image hash failed - image is corrupt")
    return image


def _segment0_checks(view, offset, pos, data_len, chip, is_bootloader, mmu_page_size, header) -> int:
    """Segment 0 of an application must hold an esp_app_desc_t; on chips with a configurable MMU page
    size that descriptor says the page size the image is laid out for. Returns the page size to use."""
    configured = mmu_page_size or 0x10000
    if is_bootloader:
        return configured
    if data_len < APP_DESC_SIZE:
        raise _Fail(
            "ESP_ERR_IMAGE_INVALID", f"Segment 0: length 0x{data_len:x} is too short for app description"
        )
    if len(chip.mmu_page_sizes) == 1:
        return configured
    need(len(view), pos + SEGMENT_HEADER_SIZE, APP_DESC_SIZE, "the app description")
    desc = read_app_desc(view, pos + SEGMENT_HEADER_SIZE, data_len)
    if desc is None:
        raise _Fail("ESP_FAIL", "Failed to fetch app description header!")
    if _MMU_PAGE_LOG2_MIN <= desc.mmu_page_size <= _MMU_PAGE_LOG2_MAX:
        return 1 << desc.mmu_page_size
    if mmu_page_size is not None:
        return mmu_page_size
    return infer_mmu_page_size(_mapped_segments(view, offset, header, chip), chip)


def _mapped_segments(view, offset, header, chip) -> list[tuple[int, int]]:
    """``(data_offset, load_addr)`` of the flash-mapped segments whose headers can be read."""
    mapped = []
    try:
        for _, pos, load_addr, data_len in iter_segment_headers(
            view, offset + IMAGE_HEADER_SIZE, header.segment_count, len(view)
        ):
            if chip.should_map(load_addr):
                mapped.append((pos + SEGMENT_HEADER_SIZE, load_addr))
    except InputError:
        pass
    return mapped


def _check_segment(view, end, chip, index, pos, load_addr, data_len, mmu_page_size, load) -> None:
    """The rest of verify_segment_header() (mapped alignment) and, when loading, verify_load_addresses();
    then the data must exist."""
    data_offset = pos + SEGMENT_HEADER_SIZE
    if chip.should_map(load_addr) and data_offset % mmu_page_size != load_addr % mmu_page_size:
        raise _Fail(
            "ESP_ERR_IMAGE_INVALID",
            f"Segment {index} load address 0x{load_addr:08x}, doesn't match data 0x{data_offset:08x}",
        )
    should_load = not chip.should_map(load_addr) and load_addr >= 0x10000000
    if load and should_load and data_len and not chip.in_ram(load_addr, load_addr + data_len):
        raise _Fail(
            "ESP_ERR_IMAGE_INVALID",
            f"Segment {index} 0x{load_addr:08x}-0x{load_addr + data_len:08x} invalid: bad load address range",
        )
    need(end, data_offset, data_len, f"segment {index}")
