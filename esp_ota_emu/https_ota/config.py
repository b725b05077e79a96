"""The configuration structs of esp_http_client and esp_https_ota, reduced to what the emulator uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol

from ..errors import InputError
from ..idf_release import BULK_ERASE_IMAGE_LENGTH, HEADER_1024, IdfRelease
from ..ota_ops import OTA_SIZE_UNKNOWN, OTA_WITH_SEQUENTIAL_WRITES

DEFAULT_USER_AGENT = "ESP32 HTTP Client/1.0"
DEFAULT_TIMEOUT_MS = 5000
DEFAULT_MAX_REDIRECT = 10
DEFAULT_MAX_AUTH_RETRIES = 10
IMAGE_HEADER_SIZE = 1024  # esp_https_ota reads this much before the first flash write
V4_IMAGE_HEADER_SIZE = 24 + 8 + 256 + 1  # before v5.0: image, segment and app description headers, + 1
DEFAULT_BUFFER_SIZE_TX = 512  # esp_http_client's DEFAULT_HTTP_BUF_SIZE
DEFAULT_REQUEST_SIZE = 64 * 1024  # max_http_request_size 0 -> 64 KiB

OnEvent = Callable[[str, "int | None"], None]
# (esp_https_ota_get_image_len_read, esp_https_ota_get_image_size) after each esp_https_ota_perform:
# bytes written so far and the image size (-1 while the server has not said it).
OnProgress = Callable[[int, int], None]


class Decrypter(Protocol):
    """The ``decrypt_cb`` stage of esp_https_ota (``CONFIG_ESP_HTTPS_OTA_DECRYPT_CB``).

    Called with each block read from the server; returns the plaintext to write to flash, or ``b""``
    while it is still buffering (ESP-IDF's ``data_out_len == 0``). Raises EspError to fail the OTA.
    A pre-encrypted-image decrypter also needs ``enc_img_header_size`` set in :class:`OtaConfig`.
    """

    def __call__(self, data_in: bytes) -> bytes: ...


@dataclass
class HttpConfig:
    """``esp_http_client_config_t``: where to fetch from and how to trust the server."""

    url: str
    cert_pem: str | None = None  # PEM text of the root CA the server chain must lead to
    crt_bundle: bool = False  # verify against the default CA bundle (esp_crt_bundle_attach)
    skip_cert_common_name_check: bool = False
    common_name: str | None = None  # check the certificate against this name instead of the URL's host
    client_cert: Path | None = None  # mutual TLS: client certificate (PEM file)
    client_key: Path | None = None
    username: str | None = None
    password: str | None = None
    timeout_ms: int = 0  # 0 -> 5000
    headers: tuple[tuple[str, str], ...] = ()
    user_agent: str | None = None  # None -> "ESP32 HTTP Client/1.0"
    buffer_size: int = 0  # rx buffer; the OTA buffer is max(buffer_size, 1024)
    buffer_size_tx: int = 0  # tx buffer the request line and headers are written through; 0 -> 512
    max_redirection_count: int = 0  # 0 -> 10
    max_authorization_retries: int = 0  # 0 -> 10, -1 -> 0
    # CONFIG_ESP_HTTP_CLIENT_ENABLE_BASIC_AUTH / _DIGEST_AUTH: whether a 401 challenge of that scheme is
    # answered. ESP-IDF's defaults are off (Digest: on in v4.4, always compiled in before); the emulator
    # answers both unless told otherwise.
    basic_auth: bool = True
    digest_auth: bool = True
    # esp_http_client_config_t.auth_type: HTTP_AUTH_TYPE_BASIC sends Basic credentials with the first
    # request (no Kconfig needed for that); otherwise they go out only after a 401 names a scheme
    auth_type: Literal["none", "basic"] = "none"
    # CONFIG_MBEDTLS_HAVE_TIME_DATE: check certificates' validity dates (ESP-IDF's default: no, a device
    # rarely knows the time when it connects; expired or not-yet-valid certificates are then accepted)
    cert_expiry_check: bool = False
    # CONFIG_MBEDTLS_SSL_PROTO_TLS1_3 (v5.0 and newer; off by default): offer TLS 1.3 as well as 1.2
    tls13: bool = False
    # Not ESP-IDF's: a device waits for a stalled body as long as the connection stays open (every read
    # that times out is retried); the emulator gives up after this many seconds.
    stall_limit_s: float = 30.0

    def __post_init__(self) -> None:
        if self.auth_type not in ("none", "basic"):
            raise InputError(
                f"auth_type is 'none' or 'basic' (Digest needs the server's challenge), not {self.auth_type!r}"
            )

    @property
    def verifies_server(self) -> bool:
        """``is_server_verification_enabled()`` of esp_https_ota."""
        return bool(self.cert_pem) or self.crt_bundle


@dataclass
class OtaConfig:
    """``esp_https_ota_config_t`` (plus the Kconfig switches that change esp_https_ota's behaviour)."""

    http: HttpConfig
    allow_http: bool = False  # CONFIG_ESP_HTTPS_OTA_ALLOW_HTTP
    verify_spi_mode: bool = True  # CONFIG_ESP_HTTPS_OTA_VERIFY_SPI_MODE (v6.1 and newer)
    bulk_flash_erase: bool = False
    partial_http_download: bool = False
    max_http_request_size: int = 0  # 0 -> 64 KiB
    decrypt: Decrypter | None = None
    decrypt_end: Callable[[], None] | None = None  # esp_encrypted_img_decrypt_end: the app runs it before finish
    enc_img_header_size: int = 0
    ota_resumption: bool = False  # ESP-IDF v5.5 and newer
    ota_image_bytes_written: int = 0
    # esp_https_ota_config_t.partition (v5.5 and newer), by the names Device.find_partition takes: where
    # the image is written (None: the next OTA slot), what it is for (None: the same partition), and
    # whether esp_ota_end copies it there
    staging: str | None = None
    final: str | None = None
    finalize_with_copy: bool = False


def image_header_size(idf: IdfRelease) -> int:
    """What esp_https_ota reads first as the image header, and its smallest read buffer, in ``idf``."""
    return IMAGE_HEADER_SIZE if idf.has(HEADER_1024) else V4_IMAGE_HEADER_SIZE


def read_size(idf: IdfRelease, buffer_size: int) -> int:
    """The size of each esp_http_client_read after the header: ``max(buffer_size, header size)``."""
    return max(buffer_size, image_header_size(idf))


def ota_begin_size(idf: IdfRelease, bulk_flash_erase: bool, image_length: int) -> int:
    """The ``image_size`` esp_https_ota gives esp_ota_begin: sequential erase, or with bulk erase the
    announced image length (from v5.3; before, and without a length, the whole slot)."""
    if not bulk_flash_erase:
        return OTA_WITH_SEQUENTIAL_WRITES
    return image_length if image_length > 0 and idf.has(BULK_ERASE_IMAGE_LENGTH) else OTA_SIZE_UNKNOWN
