"""``https_ota(device, url, ...)``: the whole update as an app would run it, for the CLI and Python users.

Powers the device on first if the emulator never booted this flash (a bootloader pass: the OTA target
is the slot after the running app), runs ``esp_https_ota()`` (or, with ``resume=True``, the
advanced API with ``ota_resumption``), and resets the device at the end if asked (``esp_restart()``).
Until that reset the old app keeps running.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..security.encrypted_img import EncryptedImageDecrypter
from ..security.keys import load_private_key
from .config import Decrypter, HttpConfig, OnEvent, OnProgress, OtaConfig
from .engine import OtaResult, esp_https_ota, resumable_https_ota

if TYPE_CHECKING:
    from ..device import Device


def pem_text(value: str | Path | None) -> str | None:
    """PEM text given as such, or read from a file path."""
    if value is None:
        return None
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value
    try:
        text = Path(value).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read certificate {value}: {getattr(err, 'strerror', None) or err}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise InputError(f"{value} is not a PEM certificate")
    return text


def _key_bytes(value: bytes | str | Path) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read key {value}: {err.strerror}") from None


def https_ota(
    device: Device,
    url: str,
    *,
    on_event: OnEvent | None = None,
    on_progress: OnProgress | None = None,
    cert_pem: str | Path | None = None,
    resume: bool = False,
    reboot: bool = False,
    allow_http: bool = False,
    verify_spi_mode: bool = True,
    bulk_flash_erase: bool = False,
    partial_http_download: bool = False,
    max_http_request_size: int = 0,
    decrypt: Decrypter | None = None,
    enc_img_header_size: int = 0,
    decrypt_key: bytes | str | Path | None = None,
    staging: str | None = None,
    final: str | None = None,
    finalize_with_copy: bool = False,
    **http_options,
) -> OtaResult:
    """Update ``device`` from ``url`` as ESP-IDF's esp_https_ota would; raises EspError on failure.

    ``decrypt_key`` (PEM bytes or a file: RSA-3072 or P-256 private key) makes it a pre-encrypted OTA
    as ESP-IDF's pre_encrypted_ota example runs it: the download goes through esp_encrypted_img's
    decrypt stage (DECRYPT_CB events), whose end (GCM tag, length) is checked before the finish.

    ``staging`` / ``final`` / ``finalize_with_copy`` are esp_https_ota_config_t.partition (ESP-IDF v5.5 and
    newer): partitions named by label, or ``bootloader`` / ``partition_table`` for the primary ones
    (:meth:`Device.find_partition`). The image is written to ``staging`` (default: the next OTA slot),
    verified as ``final``'s type and, with ``finalize_with_copy``, copied there by esp_ota_end; only an
    app in an OTA slot becomes the boot partition.

    ``on_event`` gets ESP-IDF's events; ``on_progress(written, image_size)`` is called between
    esp_https_ota_perform calls (image_size -1 while unknown), as an app showing progress does.

    ``http_options`` are :class:`HttpConfig` fields (``crt_bundle``, ``common_name``,
    ``skip_cert_common_name_check``, ``client_cert``, ``client_key``, ``username``, ``password``,
    ``timeout_ms``, ``headers``, ``user_agent``, ``buffer_size``, ``buffer_size_tx``, and the Kconfig
    switches ``tls13``, ``cert_expiry_check``, ``basic_auth``, ``digest_auth``, ...).
    """
    decrypt_end = None
    if decrypt_key is not None:
        decrypter = EncryptedImageDecrypter(load_private_key(_key_bytes(decrypt_key)))
        decrypt, decrypt_end, enc_img_header_size = decrypter.feed, decrypter.finish, decrypter.header_size
    power_on = device.power_on_if_needed()
    config = OtaConfig(
        HttpConfig(url=url, cert_pem=pem_text(cert_pem), **http_options),
        allow_http=allow_http,
        verify_spi_mode=verify_spi_mode,
        bulk_flash_erase=bulk_flash_erase,
        partial_http_download=partial_http_download,
        max_http_request_size=max_http_request_size,
        decrypt=decrypt,
        decrypt_end=decrypt_end,
        enc_img_header_size=enc_img_header_size,
        staging=staging,
        final=final,
        finalize_with_copy=finalize_with_copy,
    )
    result = (resumable_https_ota if resume else esp_https_ota)(device, config, on_event, on_progress)
    result.power_on = power_on
    if reboot:
        result.reboot = device.boot()
    return result
