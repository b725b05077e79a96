"""A device's security configuration turned into ESP-IDF's verification decisions.

* Which signature rule ``esp_image_verify()`` applies: the app's (``CONFIG_SECURE_SIGNED_ON_UPDATE``:
  eFuse digests with Secure Boot V2 enabled, else the running app's own block 0 key) during
  esp_ota_end / esp_ota_set_boot_partition, or the bootloader's (``CONFIG_SECURE_BOOT_V2_ENABLED``:
  eFuse digests, or the image's own keys before any digest is burned) when it loads an app.
  Secure Boot V1 (ESP32): both check the 68-byte ECDSA block with the key built into them.
* The reason a signature check failed, in the words a user needs (which check, which key).
* What the bootloader's first boot burns to enable the configured Secure Boot version.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Callable

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import EspError, InputError
from . import sbv1, sbv2
from .keys import describe_key, load_public_key

if TYPE_CHECKING:
    from ..device import Device
    from ..efuse import Efuses
    from ..image.reader import EspImage
    from ..partitions import Partition

SECURE_BOOT_VERSIONS = ("v1", "v2")


def explain(check: sbv2.SignatureCheck, trusted: list[bytes] | None) -> str:
    """Say which check of the signature sector failed."""
    statuses = [b for b in check.blocks if b.status != "blank"]
    if not check.blocks or not statuses:
        return f"no signature sector at offset {check.sig_offset:#x} (the image is not signed)"
    for verdict in statuses:
        if verdict.status == "untrusted":
            known = ", ".join(d.hex()[:16] + "..." for d in trusted or []) or "none"
            return (
                f"signature block {verdict.index} made with a key whose digest is not trusted "
                f"({verdict.key_digest.hex()[:16]}...; trusted: {known})"
            )
        if verdict.status == "digest-mismatch":
            return f"image digest mismatch: signature block {verdict.index} was made for other image contents"
    return check.reason


def enable_secure_boot(dev: Device, efuses: Efuses, version: str, *, readonly: bool) -> None:
    """What the bootloader's first boot does for its Secure Boot version.

    V2: burn the enable bit. V1 (ESP32 only): ``esp_secure_boot_generate_digest`` and then
    ``esp_secure_boot_permanently_enable``: a random key into BLOCK2 unless one is burned already
    (reflashable mode), the bootloader's digest with a random IV written at 0x0 for the ROM to check
    at every reset, then ABS_DONE_0.
    """
    if version == "v2":
        if not efuses.secure_boot_v2_enabled:
            efuses.enable_secure_boot_v2()
        return
    if efuses.chip != "esp32":
        raise InputError(f"Secure Boot V1 exists on the ESP32 only, not on the {efuses.chip}")
    if efuses.secure_boot_v1_enabled:
        return
    if readonly:
        raise InputError("enabling Secure Boot V1 writes the bootloader's digest at 0x0; "
                         "use a command that writes the flash (boot, ota)")
    region = dev.bootloader_region()
    result = dev.verify_bootloader()  # Secure Boot is not on yet: esp_image_verify alone
    if not result.ok:
        raise InputError(f"Secure Boot V1's first boot digests the 2nd-stage bootloader, and the one at "
                         f"0x{region.offset:x} is invalid: {result.reason}")
    key = efuses.secure_boot_v1_key
    if key is None:  # one-time flash mode: the bootloader makes the key
        key = os.urandom(32)
        efuses.burn_secure_boot_v1_key(key)
    iv = os.urandom(sbv1.IV_LEN)
    image = dev.io.read(region, 0, result.image_len)  # through the cache: decrypted on an encrypted device
    stored = iv + sbv1.bootloader_digest(image, key, iv)
    if dev.io.crypt is not None:  # bootloader_flash_write(..., esp_flash_encryption_enabled())
        stored = dev.io.crypt.encrypt(0, stored)
    dev.flash.erase_range(0, sbv1.IV_DIGEST_SECTOR)
    dev.flash.program(0, stored)
    efuses.burn("ABS_DONE_0", 1)


@functools.lru_cache(maxsize=64)
def rom_v1_bootloader_refusal(image: bytes, iv_digest: bytes, key: bytes | None) -> str | None:
    """The ESP32 ROM's Secure Boot V1 check of the 2nd-stage bootloader ``image``: its digest with the
    BLOCK2 ``key`` and the IV stored at 0x0 must be the digest stored after that IV. None when it
    passes, else why not. Remembered: every reset checks it."""
    if key is None:
        return "no Secure Boot V1 key is burned in BLOCK2"
    iv, digest = iv_digest[: sbv1.IV_LEN], iv_digest[sbv1.IV_LEN : sbv1.IV_LEN + sbv1.DIGEST_LEN]
    if sbv1.bootloader_digest(image, key, iv) != digest:
        return "the bootloader's digest is not the one stored at 0x0 (the bootloader changed since Secure Boot was enabled)"
    return None


def sbv1_verification_key(public_key) -> str:
    """The PEM text of a Secure Boot V1 signature verification key (ECDSA P-256 only)."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise InputError(f"Secure Boot V1 verifies with an ECDSA P-256 key, this key is {describe_key(public_key)}")
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def _sbv1_check(dev: Device) -> Callable[[EspImage, memoryview, int], str | None]:
    """``esp_secure_boot_verify_signature`` of Secure Boot V1 / ECDSA-signed apps: the 68-byte block
    right after the image, checked with the key built into bootloader and app (same rule for both)."""
    pem = dev.settings.signature_verification_key

    def check(image, view, offset):
        if pem is None:
            return "no signature verification key is configured (give --secure-boot-key with --secure-boot v1)"
        try:
            sbv1.verify_image_signature(view[offset:], image.image_len, load_public_key(pem.encode()))
        except EspError as err:
            return err.message
        return None

    return check


def _running_image(dev: Device) -> tuple[memoryview, int] | None:
    """The running app's image (decrypted) and its esp_image length, for its signature blocks."""
    running = dev.running
    if running is None:
        return None
    view, base = dev.plain_image_region(running)
    image = dev.parse_partition_image(running)
    if image is None:
        return None
    return view[base:], image.image_len


def signature_check(dev: Device, *, load: bool) -> Callable[[EspImage, memoryview, int], str | None] | None:
    """The check ``esp_image_verify()`` runs in place of the plain SHA-256 check, or None when the
    device's configuration verifies no signatures there.

    ``load`` is the bootloader loading an app; otherwise the app checks an update.
    """
    settings = dev.settings
    if settings.secure_boot == "v1":
        return _sbv1_check(dev)
    efuses = dev.efuses
    if efuses is None:
        return None
    if load:
        if settings.secure_boot != "v2":
            return None

        def at_boot(image, view, offset):
            check = sbv2.verify_at_boot(view[offset:], image.image_len, efuses)
            trusted = efuses.trusted_key_digests()
            return None if check.ok else explain(check, trusted)

        return at_boot
    if settings.secure_boot != "v2" and not settings.signed_on_update_no_secure_boot:
        return None

    def on_update(image, view, offset):
        running = None if efuses.secure_boot_v2_enabled else _running_image(dev)
        return _update_refusal(sbv2.verify_app_update(view[offset:], image.image_len, efuses, running=running),
                               efuses, running)

    return on_update


@functools.lru_cache(maxsize=64)
def rom_bootloader_refusal(image: bytes, image_len: int, trusted: tuple[bytes, ...], only_block0: bool) -> str | None:
    """The ROM's check of the 2nd-stage bootloader with Secure Boot V2 enabled: a signature block after
    ``image`` (padded to 4 KiB) made with a ``trusted`` key (the eFuse digests; block 0 alone on the
    ESP32). None when it passes, else why not. Remembered: every reset of every device checks it."""
    if not trusted:
        return "no secure boot key digest is burned in eFuse"
    check = sbv2.verify_image_signatures(image, image_len, list(trusted), only_block0=only_block0)
    return None if check.ok else explain(check, list(trusted))


def _update_refusal(check: sbv2.SignatureCheck, efuses: Efuses, running) -> str | None:
    """None when the app's check of an update passed, else why not (which keys it trusted)."""
    if check.ok:
        return None
    if check.esp_err == "ESP_FAIL":  # no key to trust at all
        return check.reason
    if efuses.secure_boot_v2_enabled:
        trusted = efuses.trusted_key_digests()
    elif running is not None:
        trusted = sbv2.image_key_digests(*running)
    else:
        trusted = []
    return explain(check, trusted)


def data_signature_refusal(dev: Device, partition: Partition, wrote_size: int) -> str | None:
    """``ota_verify_data_partition_signature`` (CONFIG_SECURE_SIGNED_DATA_PARTITION, v6.0.1 and newer):
    esp_ota_end's check of an image for a data partition of subtype undefined. The last whole 4 KiB
    sector written is the signature sector, everything before it the signed data; the keys trusted are
    an app update's. None when it passes, else why not."""
    if wrote_size < sbv2.SIG_SECTOR_SIZE:
        return (f"only {wrote_size} bytes were written: a signed data image ends with a "
                f"{sbv2.SIG_SECTOR_SIZE}-byte signature sector")
    efuses = dev.efuses
    if efuses is None:
        chip = dev.chip.name if dev.chip is not None else "unknown"
        return f"the emulator has no eFuse model of the {chip} chip to take trusted keys from"
    data_length = wrote_size // sbv2.SIG_SECTOR_SIZE * sbv2.SIG_SECTOR_SIZE - sbv2.SIG_SECTOR_SIZE
    end = data_length + sbv2.SIG_SECTOR_SIZE
    if dev.io.encrypted(partition):
        view = memoryview(dev.io.read(partition, 0, end))
    else:
        view = dev.flash.view(partition.offset, end)
    running = None if efuses.secure_boot_v2_enabled else _running_image(dev)
    check = sbv2.verify_update(view[:data_length], view[data_length:], data_length, efuses, running=running)
    return _update_refusal(check, efuses, running)
