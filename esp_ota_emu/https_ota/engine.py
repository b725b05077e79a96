"""``esp_https_ota.c``: begin / perform / finish / abort, the one-shot ``esp_https_ota()``, resumption.

The pipeline is ESP-IDF's: HTTP client reads (``max(buffer_size, 1024)`` bytes at a time, the first
1024 bytes as the image header; 289 before v5.0) -> optional decrypt stage (``decrypt_cb``) -> ``esp_ota_write``
through the device's :class:`~esp_ota_emu.ota_ops.OtaOps` into the next OTA slot (from v5.5 any staging
partition, verified as its final partition's type and copied there if asked), with the events ESP-IDF
posts, in its order, and its errors. The device's ESP-IDF release (:mod:`esp_ota_emu.idf_release`) picks the
behaviour where releases differ (events, HEAD fallback, Range handling, 304/416, chip revision check,
resumption, bulk erase size, redirects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import EspError, InputError
from ..formats.app_desc import (
    APP_DESC_OFFSET,
    APP_DESC_SIZE,
    ESP_APP_DESC_MAGIC_WORD,
    SPI_FLASH_MODE_OFFSET,
    spi_flash_mode_name,
)
from ..formats.bootloader_desc import BOOTLOADER_DESC_SIZE, ESP_BOOTLOADER_DESC_MAGIC_BYTE
from ..formats.partition_table import APP, BOOTLOADER
from ..idf_release import (
    ADD_AUTH_CHECKED,
    AUTH_RETRY_LIMIT,
    CHIP_EVENTS_FIRST,
    CHIP_REVISION_CHECK,
    DECRYPT_CB,
    DESC_FROM_SLOT,
    DIGEST_AUTH_KCONFIG,
    ENC_IMG_HEADER_SIZE,
    HEADER_1024,
    HEADER_COUNTED_ONCE,
    HEAD_FALLBACK,
    HTTP_304_416,
    KEEP_ALIVE_BETWEEN_RANGES,
    ONE_SHOT_OTA_CONFIG,
    ONE_SHOT_OWN_ERRORS,
    OTA_RESUMPTION,
    PARTIAL_HTTP_DOWNLOAD,
    PARTITION_OTA,
    RANGE_FROM_RESUME_OFFSET,
    RESUME_OFFSET_ALIGNED,
    RESUMPTION_CHECK_SPARES_PARTIAL,
    RESUMPTION_CHECKED,
    SET_BOOT_ERROR_RETURNED,
    SPI_MODE_CHECK,
    TLS13_KCONFIG,
    VERIFY_WITH_BUNDLE,
)
from ..image.reader import describe_non_image
from ..image.verify import chip_revision_problem
from . import events as ev
from .client import REDIRECT_STATUSES, HttpClient
from .config import (
    DEFAULT_MAX_AUTH_RETRIES,
    DEFAULT_REQUEST_SIZE,
    IMAGE_HEADER_SIZE,
    OnEvent,
    OnProgress,
    OtaConfig,
    image_header_size,
    ota_begin_size,
    read_size,
)

if TYPE_CHECKING:
    from ..bootloader import BootResult
    from ..device import Device
    from ..partitions import Partition

# esp_https_ota_state
INIT, BEGIN, IN_PROGRESS, SUCCESS, RESUME = range(5)

# esp_https_ota's own redirect loop has no limit (a device follows a redirect cycle forever), nor,
# before v5.1, its 401 loop; the emulator stops after this many answers in a row and says so.
EMULATOR_REDIRECT_LIMIT = 50

_SPI_FLASH_MODE_AT = APP_DESC_OFFSET + SPI_FLASH_MODE_OFFSET  # the new app's, in the first bytes of the body
_BLOCK = 256 * 1024  # bytes handled per perform() on the fast path (see EspHttpsOta._read_block)


def _server_sent(data: bytes) -> str:
    """Plain words for a download that is not an image (what did the server send instead?)."""
    return "the server did not send an ESP image: " + describe_non_image(bytes(data[:64])).removeprefix(
        "not an ESP image: "
    )


@dataclass
class OtaResult:
    """What an OTA run did."""

    partition: str  # label of the slot written (the staging partition)
    subtype: int
    bytes_written: int  # image bytes in the slot
    image_length: int  # -1 if the server sent no length
    boot_partition_updated: bool  # otadata now selects the new slot (esp_ota_set_boot_partition ran)
    resumed_from: int = 0
    power_on: BootResult | None = None
    reboot: BootResult | None = None
    set_boot_error: EspError | None = None  # logged, not returned, by releases before the fix (idf_release.py)
    image_len_read: int = 0  # esp_https_ota_get_image_len_read: a header more than written before v5.0.6/v5.1.3
    final: str | None = None  # the final partition when it is not the staging one (v5.5 partition.final)
    copied: bool = False  # esp_ota_end copied the image to the final partition (finalize_with_copy)


class EspHttpsOta:
    """One ``esp_https_ota_handle_t``. Call :meth:`begin`, then :meth:`perform` while it returns True,
    then :meth:`finish` (or :meth:`abort` after an error)."""

    def __init__(self, device: Device, config: OtaConfig, on_event: OnEvent | None = None):
        self.dev = device
        self.config = config
        self.idf = device.idf
        self._events = ev.event_names(self.idf)
        self._on_event = on_event
        self.state = INIT
        self.client: HttpClient | None = None
        self.staging: Partition | None = None
        self.final: Partition | None = None  # what the image is verified as (v5.5 partition.final)
        self.finalize_with_copy = False
        self.handle: int | None = None
        self.binary_file_len = 0
        self.image_length = -1
        self.buffer = b""  # the header bytes read by get_img_desc, written by the first perform
        self.max_request = config.max_http_request_size or DEFAULT_REQUEST_SIZE
        self.header_size = image_header_size(self.idf)
        self.buffer_size = read_size(self.idf, config.http.buffer_size)
        self.ota_resumption = config.ota_resumption
        retries = config.http.max_authorization_retries
        self.auth_retries = DEFAULT_MAX_AUTH_RETRIES if retries == 0 else max(retries, 0)
        self.unauthorized = 0  # 401 answers so far, where the release has no max_authorization_retries
        self.redirects = 0  # redirects followed so far (before v5.0.2 the client's redirect_counter leaves them out)
        self.enc_header = (config.enc_img_header_size
                           if config.decrypt is not None and self.idf.has(ENC_IMG_HEADER_SIZE) else 0)
        self.resumed_from = 0
        self.counted_twice = 0  # header bytes binary_file_len counts twice (HEADER_COUNTED_ONCE)
        self.set_boot_error: EspError | None = None  # what esp_ota_set_boot_partition returned in finish

    # -- events ---------------------------------------------------------------------------------
    def post(self, name: str, data: int | None = None) -> None:
        """``esp_https_ota_dispatch_event``: events the running ESP-IDF release does not have are not posted."""
        if name in self._events and self._on_event is not None:
            self._on_event(name, data)

    # -- HTTP ---------------------------------------------------------------------------------------
    def _handle_response_code(self, status: int) -> None:
        """``_http_handle_response_code``."""
        client = self.client
        assert client is not None
        idf = self.idf
        if status in REDIRECT_STATUSES:
            if self.redirects >= EMULATOR_REDIRECT_LIMIT:
                raise EspError(
                    "ESP_ERR_HTTP_MAX_REDIRECT",
                    f"{self.redirects} redirects in a row: esp_https_ota has no redirect limit and "
                    "a device would follow them forever; the emulator stops here",
                )
            client.set_redirection()
            self.redirects += 1
        elif idf.has(HTTP_304_416) and status == 304:
            raise EspError("ESP_ERR_HTTP_NOT_MODIFIED", "the server answered 304 Not Modified")
        elif idf.has(HTTP_304_416) and status == 416:
            raise EspError("ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE", "the server answered 416 Range Not Satisfiable")
        elif status == 401:
            if not idf.has(AUTH_RETRY_LIMIT):
                self.unauthorized += 1
                if self.unauthorized > EMULATOR_REDIRECT_LIMIT:
                    raise EspError(
                        "ESP_FAIL",
                        f"{self.unauthorized - 1} answers 401 Unauthorized in a row: before v5.1 esp_https_ota asks "
                        "again forever; the emulator stops here",
                    )
            elif self.auth_retries == 0:
                raise EspError("ESP_FAIL", "the server kept answering 401 Unauthorized: reached max_authorization_retries")
            else:
                self.auth_retries -= 1
            failed = client.add_auth()
            if failed is not None and idf.has(ADD_AUTH_CHECKED):
                raise EspError(failed.esp_err, f"authorization failed: {failed.message}")
        elif status in (403, 404):
            raise EspError("ESP_FAIL", f"file not found: the server answered {status} for {client.url}")
        elif 400 <= status < 500:
            raise EspError("ESP_FAIL", f"client error: the server answered {status} for {client.url}")
        elif status >= 500:
            raise EspError("ESP_FAIL", f"server error: the server answered {status} for {client.url}")
        elif (self.ota_resumption and status != 206 and idf.has(RESUMPTION_CHECKED)
              and not (self.config.partial_http_download and idf.has(RESUMPTION_CHECK_SPARES_PARTIAL))):
            raise EspError(
                "ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE",
                f"the server ignored the Range header (answered {status}, not 206)",
            )
        if status in REDIRECT_STATUSES or status == 401:
            client.discard_body()

    def _http_connect(self) -> None:
        """``_http_connect``: open, read headers, handle the status; again after a redirect or a 401."""
        client = self.client
        assert client is not None
        while True:
            client.open()
            status = client.status_code
            self._handle_response_code(status)
            if status not in REDIRECT_STATUSES and status != 401:
                return

    def _probe_length(self) -> None:
        """The HEAD request of a partial download (and, from v6.0, the ``Range: bytes=0-0`` fallback)."""
        client = self.client
        assert client is not None
        client.set_method("HEAD")
        client.perform()
        status = client.status_code
        if status == 200:
            self.image_length = client.content_length
        elif not self.idf.has(HEAD_FALLBACK):
            raise EspError("ESP_FAIL", f"the HEAD request got status {status}, not 200")
        else:
            client.set_header("Range", "bytes=0-0")
            client.set_method("GET")
            client.perform()
            status = client.status_code
            if status not in (200, 206):
                raise EspError("ESP_FAIL", f"the length probe (Range: bytes=0-0) got status {status}")
            client.delete_header("Range")
            self.image_length = client.content_length if status == 200 else client.content_range
        if self.image_length == -1 and self.idf.has(HEAD_FALLBACK):
            missing = ("no total in its Content-Range" if status == 206 else "no Content-Length")
            raise EspError("ESP_FAIL", f"the server did not say how long the image is ({missing})")
        self.image_length -= self.enc_header
        client.close()
        if not self.idf.has(RANGE_FROM_RESUME_OFFSET):
            if self.image_length > self.max_request:
                client.set_header("Range", f"bytes=0-{self.max_request - 1}")
        else:
            start = self.binary_file_len
            end = start + self.max_request - 1 if self.image_length > self.max_request + start else self.image_length
            if end - start < self.image_length:
                client.set_header("Range", f"bytes={start}-{end}")
        client.set_method("GET")

    # -- begin ----------------------------------------------------------------------------------
    def begin(self) -> None:
        """``esp_https_ota_begin``."""
        http, idf = self.config.http, self.idf
        if not http.digest_auth and not idf.has(DIGEST_AUTH_KCONFIG):
            raise InputError(f"ESP-IDF {idf} has no CONFIG_ESP_HTTP_CLIENT_ENABLE_DIGEST_AUTH: Digest auth is "
                             "always built in (the option came in v4.4)")
        if http.tls13 and not idf.has(TLS13_KCONFIG):
            raise InputError(f"ESP-IDF {idf}'s mbedTLS has no TLS 1.3 (CONFIG_MBEDTLS_SSL_PROTO_TLS1_3 came in v5.0)")
        config = self.config
        if (config.staging or config.final or config.finalize_with_copy) and not idf.has(PARTITION_OTA):
            raise InputError(f"ESP-IDF {idf}'s esp_https_ota writes only the next OTA slot: the staging and final "
                             "partitions (esp_https_ota_config_t.partition) came in v5.5")
        staging = self.dev.find_partition(config.staging) if config.staging else None
        final = self.dev.find_partition(config.final) if config.final else None
        self.post(ev.START)
        # Only the verification options are checked, not the URL: with cert_pem set, an http:// URL is
        # fetched over plain TCP. Before v4.3.4 only cert_pem counted.
        verifies = http.verifies_server if idf.has(VERIFY_WITH_BUNDLE) else bool(http.cert_pem)
        if not verifies and not self.config.allow_http:
            raise EspError(
                "ESP_ERR_INVALID_ARG",
                "no option for server verification is enabled: give the root certificate (cert_pem)"
                + (" or use the CA bundle" if idf.has(VERIFY_WITH_BUNDLE) else "")
                + ", or allow plain HTTP (CONFIG_ESP_HTTPS_OTA_ALLOW_HTTP)",
            )
        if self.config.partial_http_download and not idf.has(PARTIAL_HTTP_DOWNLOAD):
            raise EspError("ESP_ERR_NOT_SUPPORTED", f"ESP-IDF {idf} has no partial_http_download (v4.4 and newer)")
        if self.config.decrypt is not None and not idf.has(DECRYPT_CB):
            raise EspError("ESP_ERR_NOT_SUPPORTED", f"ESP-IDF {idf} has no decrypt_cb for pre-encrypted images (v5.0 and newer)")
        if self.config.ota_resumption:
            if not idf.has(OTA_RESUMPTION):
                raise EspError("ESP_ERR_NOT_SUPPORTED", f"ESP-IDF {idf} has no ota_resumption (v5.5 and newer)")
            if self.config.decrypt is not None:
                raise EspError("ESP_ERR_NOT_SUPPORTED", "OTA resumption is not supported for pre-encrypted images")
            written = self.config.ota_image_bytes_written
            if written >= IMAGE_HEADER_SIZE:
                if self.dev.flash_encryption_enabled:
                    if idf.has(RESUME_OFFSET_ALIGNED):
                        written &= ~0xF
                    elif written % 16:
                        raise InputError(f"ESP-IDF {idf} resumes a flash-encrypted OTA at the saved offset {written}, "
                                         "which is not 16-byte aligned: not modelled (v5.5.3 rounds it down)")
                self.binary_file_len = written
        self.client = HttpClient(http, idf)
        try:
            self._begin_connect(staging, final)
        except BaseException:
            self.client.cleanup()
            raise

    def _begin_connect(self, staging: Partition | None, final: Partition | None) -> None:
        client = self.client
        assert client is not None
        partial = self.config.partial_http_download
        # before v5.5.4 resumption does nothing from byte 0: no Range, and no restart after a 416
        resuming = self.ota_resumption and bool(self.binary_file_len or self.idf.has(RESUMPTION_CHECKED))
        if resuming and not partial:
            client.set_header("Range", f"bytes={self.binary_file_len}-")
        if partial:
            self._probe_length()
        try:
            self._http_connect()
        except EspError as err:
            if err.esp_err != "ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE" or not resuming:
                raise
            if not self.idf.has(RESUMPTION_CHECKED):
                raise InputError(f"ESP-IDF {self.idf} asks again after a 416 over the same connection, with the 416's "
                                 "body unread: not modelled (v5.5.4 closes the connection first)") from None
            # Resumption failed: drop the Range and download the whole image again from byte 0.
            self.ota_resumption = False
            self.binary_file_len = 0
            client.delete_header("Range")
            if partial and self.image_length > self.max_request:
                client.set_header("Range", f"bytes=0-{self.max_request - 1}")
            client.close()
            self._http_connect()
        self.post(ev.CONNECTED)
        if not partial:
            self.image_length = client.content_length - self.enc_header
        self.staging = staging or self.dev.ota.get_next_update_partition(None)
        if self.staging is None:
            raise EspError("ESP_FAIL", "no passive OTA partition to write the update to")
        # esp_https_ota_begin compares the config's pointers: a final partition that is the configured
        # staging one leaves the handle's final partition NULL
        self.final = self.staging if final is None else None if final == staging else final
        if self.final is not None and self.final != self.staging:
            self.finalize_with_copy = self.config.finalize_with_copy
        self.resumed_from = self.binary_file_len
        self.state = RESUME if self.binary_file_len else BEGIN

    # -- perform --------------------------------------------------------------------------------
    def _read_header(self) -> bytes:
        """``read_header``: exactly the header size (1024 bytes; 289 before v5.0), or ESP_FAIL if the
        body ends first."""
        client = self.client
        assert client is not None
        size = self.header_size
        data = b""
        while len(data) < size and not client.is_complete_data_received():
            piece = client.read(size - len(data))
            if not piece:
                break
            data += piece
        if len(data) < size:
            raise EspError(
                "ESP_FAIL",
                f"complete headers were not received: the image must be at least {size} bytes, "
                f"the server sent {len(data)}" + (f" ({client.body_error})" if client.body_error else "")
                + (f"; {_server_sent(data)}" if data[:1] != b"\xe9" else ""),
            )
        self.binary_file_len = len(data)
        return data

    def _decrypt(self, data: bytes) -> bytes:
        """``esp_https_ota_decrypt_cb``: post DECRYPT_CB, run the decrypt stage."""
        self.post(ev.DECRYPT_CB)
        assert self.config.decrypt is not None
        return self.config.decrypt(data)

    def _verify_image(self, data: bytes) -> None:
        """The checks on the first bytes before anything is written: chip id, then (from v5.5) the chip
        revision range, each after its event. From v6.1 (esp_ota_check_image_validity) both events come
        first, then the chip checks (a bootloader's maximum revision is not checked) and, for an app, the
        SPI flash mode check."""
        chip = self.dev.chip
        if chip is None or chip.chip_id is None:
            raise InputError("the device's chip is not known (no bootloader found): give the chip as a setting")
        chip_id = int.from_bytes(data[12:14], "little")
        min_rev = int.from_bytes(data[15:17], "little")
        events_first = self.idf.has(CHIP_EVENTS_FIRST)
        self.post(ev.VERIFY_CHIP_ID, chip_id)
        if events_first:
            self.post(ev.VERIFY_CHIP_REVISION, min_rev)
        if chip_id != chip.chip_id:
            detail = f"; {_server_sent(data)}" if data[0] != 0xE9 else ""
            raise EspError(
                "ESP_ERR_INVALID_VERSION",
                f"mismatch chip id: the device is {chip.name} (chip id {chip.chip_id}), "
                f"the image is for chip id {chip_id}{detail}",
            )
        if not self.idf.has(CHIP_REVISION_CHECK):
            return
        if not events_first:
            self.post(ev.VERIFY_CHIP_REVISION, min_rev)
        app = self._final().type == APP
        problem = chip_revision_problem(
            min_rev, int.from_bytes(data[17:19], "little"), self.dev.chip_rev,
            check_max=not self.dev.disable_wafer_version_major and (app or not events_first),
        )
        if problem is not None:
            raise EspError("ESP_ERR_INVALID_VERSION", problem)
        if self.idf.has(SPI_MODE_CHECK) and self.config.verify_spi_mode and app:
            self._check_spi_flash_mode(data)

    def _check_spi_flash_mode(self, data: bytes) -> None:
        """The SPI flash mode check of esp_ota_check_image_validity: the byte where the new app's
        descriptor keeps it (read without checking the descriptor's magic, as ESP-IDF does) against the
        running app's; 0 in either (an app built before v6.1) passes."""
        new = data[_SPI_FLASH_MODE_AT] if len(data) > _SPI_FLASH_MODE_AT else 0
        running_desc = self.dev.running_app_desc()
        running = running_desc.spi_flash_mode if running_desc is not None else 0
        if new and running and new != running:
            raise EspError(
                "ESP_ERR_OTA_SPI_MODE_MISMATCH",
                f"SPI flash mode mismatch: the running app was built for {spi_flash_mode_name(running)}, the new app "
                f"for {spi_flash_mode_name(new)} (CONFIG_ESPTOOLPY_FLASHMODE; a device built without "
                "CONFIG_ESP_HTTPS_OTA_VERIFY_SPI_MODE accepts it: --no-verify-spi-mode)",
            )

    def _ota_write(self, data: bytes) -> bool:
        """``_ota_write``: esp_ota_write, then WRITE_FLASH with the running total (posted even on error).

        ``data`` may be a block of several consecutive reads (see :meth:`_read_block`): it is written
        with one esp_ota_write (the flash ends up byte-identical) and one WRITE_FLASH is posted per
        read, with the totals ESP-IDF posts. A block that would run past the slot is written read by
        read, so that the failing write, its events and the flash state are exactly ESP-IDF's.
        """
        assert self.handle is not None and self.staging is not None
        step = self.buffer_size
        if len(data) > step and self.binary_file_len + len(data) > self.staging.size:
            for start in range(0, len(data), step):
                self._ota_write(data[start : start + step])
            return True
        error: EspError | None = None
        before = self.binary_file_len
        try:
            self.dev.ota.write(self.handle, data)
            self.binary_file_len += len(data)
        except EspError as err:
            if self.binary_file_len == 0 and data[:1] != b"\xe9" and self._final().type in (APP, BOOTLOADER):
                err = EspError(err.esp_err, f"{err.message}: {_server_sent(data)}")
            error = err
        if error is None and self._on_event is not None:
            for total in range(before + step, self.binary_file_len, step):
                self.post(ev.WRITE_FLASH, total)
        self.post(ev.WRITE_FLASH, self.binary_file_len)
        if error is not None:
            raise error
        return True

    def _read_block(self) -> bytes:
        """The next read(s) of the body: one ``buffer_size`` read as ESP-IDF does, or, when nothing
        observes single flash operations (no flash hooks) and no decrypt stage needs each read, up to
        256 KiB of consecutive reads at once (the fast path; reads fill the buffer except at the end of
        the body, so the split into ESP-IDF's reads is known)."""
        assert self.client is not None
        step = self.buffer_size
        if self.config.decrypt is not None or self.dev.flash.hooks:
            return self.client.read(step)
        return self.client.read(max(step, _BLOCK // step * step))

    def perform(self) -> bool:
        """``esp_https_ota_perform``: True while in progress (ESP_ERR_HTTPS_OTA_IN_PROGRESS), False when
        done (ESP_OK). Raises EspError on failure (call :meth:`abort` then)."""
        if self.state < BEGIN:
            raise EspError("ESP_FAIL", "esp_https_ota_perform: invalid state (begin did not succeed)")
        client, staging = self.client, self.staging
        assert client is not None and staging is not None
        erase_size = ota_begin_size(self.idf, self.config.bulk_flash_erase, self.image_length)
        if self.state == BEGIN:
            self.handle = self.dev.ota.begin(staging, erase_size)
            self._set_final_partition()
            self.state = IN_PROGRESS
            if self._final().type not in (APP, BOOTLOADER):
                return True  # no header to check: the body is written as it comes
            if self.binary_file_len:  # get_img_desc read the header
                data, self.buffer, self.binary_file_len = self.buffer, b"", 0
            else:
                data = self._read_header()
                if self.idf.has(HEADER_COUNTED_ONCE):
                    self.binary_file_len = 0
                else:
                    self.counted_twice = self.binary_file_len
            if self.config.decrypt is not None:
                try:
                    data = self._decrypt(data)
                except EspError as err:
                    raise EspError("ESP_FAIL", f"decryption of the image header failed: {err}") from None
                if not data:
                    raise EspError("ESP_FAIL", "decryption of the image header failed (the decrypt stage returned nothing)")
            self._verify_image(data)
            return self._ota_write(data)
        if self.state == RESUME:
            self.handle = self.dev.ota.resume(staging, erase_size, self.binary_file_len)
            self._set_final_partition()
            self.state = IN_PROGRESS
        if self.state != IN_PROGRESS:
            raise EspError("ESP_FAIL", "esp_https_ota_perform: invalid state")
        data = self._read_block()
        if data:
            if self.config.decrypt is not None:
                data = self._decrypt(data)
                if not data:
                    raise EspError(
                        "ESP_HTTPS_OTA_IN_PROGRESS",
                        "the decrypt stage returned no bytes: esp_https_ota_perform then returns the state value "
                        "ESP_HTTPS_OTA_IN_PROGRESS (2), not ESP_ERR_HTTPS_OTA_IN_PROGRESS, which ends the OTA",
                    )
            return self._ota_write(data)
        if not client.is_complete_data_received():
            reason = client.body_error or "the server closed the connection"
            raise EspError(
                "ESP_FAIL",
                f"connection closed before complete data was received: got {client.data_process} of "
                f"{client.content_length if client.content_length >= 0 else 'an unknown number of'} bytes ({reason})",
            )
        partial = self.config.partial_http_download
        if not partial or self.image_length == self.binary_file_len:
            self.state = SUCCESS
        if partial and self.state == IN_PROGRESS and self.image_length > self.binary_file_len:
            if not (self.idf.has(KEEP_ALIVE_BETWEEN_RANGES) and client.is_persistent_connection):
                client.close()
            offset = self.binary_file_len + self.enc_header
            if self.image_length - self.binary_file_len > self.max_request:
                client.set_header("Range", f"bytes={offset}-{offset + self.max_request - 1}")
            else:
                client.set_header("Range", f"bytes={offset}-")
            try:
                self._http_connect()
            except EspError as err:
                raise EspError("ESP_FAIL", f"failed to establish HTTP connection for the next range: {err}") from None
            return True
        return False

    def _set_final_partition(self) -> None:
        """esp_ota_set_final_partition right after esp_ota_begin/resume (v5.5 and newer; its error is ignored)."""
        if self.idf.has(PARTITION_OTA) and self.final is not None:
            assert self.handle is not None
            self.dev.ota.set_final_partition(self.handle, self.final, self.finalize_with_copy)

    def _final(self) -> Partition:
        """``handle->partition.final``, whose use crashes the device when it is NULL."""
        if self.final is None:
            raise EspError(
                "ESP_FAIL",
                "the staging and final partitions are the same partition: esp_https_ota then leaves its final "
                "partition NULL and the device crashes here (LoadProhibited) and resets; give only the staging one",
            )
        return self.final

    def get_image_len_read(self) -> int:
        """``esp_https_ota_get_image_len_read``: image bytes written to the slot so far."""
        return self.binary_file_len

    def get_image_size(self) -> int:
        """``esp_https_ota_get_image_size``: the image size the server announced (-1 if it did not)."""
        return self.image_length

    def is_complete_data_received(self) -> bool:
        """``esp_https_ota_is_complete_data_received``."""
        if self.config.partial_http_download:
            return self.image_length == self.binary_file_len
        return self.client is not None and self.client.is_complete_data_received()

    def get_img_desc(self) -> bytes:
        """``esp_https_ota_get_img_desc``: the 256-byte esp_app_desc_t of the image (only before the first
        perform): from the header read off the body, or, from v5.5 when the header is already written
        (a resumed OTA), from the slot. Before v5.0 its magic is not checked. From v5.5, for a bootloader
        final partition, the 80-byte esp_bootloader_desc_t (esp_https_ota_get_bootloader_img_desc)."""
        self.post(ev.GET_IMG_DESC)
        if self.config.decrypt is not None:
            raise EspError("ESP_ERR_NOT_SUPPORTED", "the image description cannot be read from an encrypted image")
        if self.state < BEGIN:
            raise EspError("ESP_ERR_INVALID_STATE", "esp_https_ota_get_img_desc: begin did not succeed")
        final_type = self._final().type
        if final_type not in (APP, BOOTLOADER):
            raise EspError("ESP_FAIL", f"no image description in a partition of type {final_type} (not supported)")
        size = APP_DESC_SIZE if final_type == APP else BOOTLOADER_DESC_SIZE
        if self.binary_file_len >= APP_DESC_OFFSET + size and self.idf.has(DESC_FROM_SLOT):
            # a resumed OTA: the description is already in the slot, and the body continues past it
            assert self.staging is not None
            desc = self.dev.io.read(self.staging, APP_DESC_OFFSET, size)
        else:
            self.buffer = self._read_header()
            desc = self.buffer[APP_DESC_OFFSET : APP_DESC_OFFSET + size]
        if final_type == BOOTLOADER and desc[0] != ESP_BOOTLOADER_DESC_MAGIC_BYTE:
            raise EspError("ESP_FAIL", "incorrect bootloader descriptor magic")
        if final_type == APP and self.idf.has(HEADER_1024) and int.from_bytes(desc[:4], "little") != ESP_APP_DESC_MAGIC_WORD:
            raise EspError("ESP_FAIL", "incorrect app descriptor magic")
        return desc

    # -- finish / abort -------------------------------------------------------------------------
    def _cleanup(self) -> None:
        if self.client is not None:
            self.client.cleanup()

    def finish(self) -> bool:
        """``esp_https_ota_finish``: esp_ota_end (full image verification), then, if all data came,
        esp_ota_set_boot_partition. Returns whether the boot partition was switched."""
        if self.state < BEGIN:
            raise EspError("ESP_FAIL", "esp_https_ota_finish: invalid state")
        error: EspError | None = None
        updated = False
        try:
            if self.state in (SUCCESS, IN_PROGRESS):
                assert self.handle is not None
                self.dev.ota.end(self.handle)
        except EspError as err:
            error = err
        finally:
            self._cleanup()
        final = self._final()  # read whatever happened before: a NULL final partition crashes the device here
        if error is None and self.state == SUCCESS and self.staging is not None and final.is_app:
            try:
                # only an OTA slot is made the boot partition (v5.5: never the factory app, whose
                # selection would erase otadata), yet UPDATE_BOOT_PARTITION names any app final partition
                if final.is_ota_app:
                    self.dev.ota.set_boot_partition(self.staging)
                    updated = True
                self.post(ev.UPDATE_BOOT_PARTITION, final.subtype)
            except EspError as err:
                # Before the fix a shadowed `err` made esp_https_ota_finish log this error and return
                # ESP_OK: the boot partition silently stays as it was.
                self.set_boot_error = err
                if self.idf.has(SET_BOOT_ERROR_RETURNED):
                    error = err
        self.post(ev.FINISH)
        if error is not None:
            raise error
        return updated

    def abort(self) -> None:
        """``esp_https_ota_abort``: post ABORT, forget the OTA handle; nothing else on flash changes."""
        self.post(ev.ABORT)
        try:
            if self.state in (SUCCESS, IN_PROGRESS) and self.handle is not None:
                self.dev.ota.abort(self.handle)
        finally:
            self._cleanup()


def _result(ota: EspHttpsOta, updated: bool) -> OtaResult:
    assert ota.staging is not None
    return OtaResult(
        partition=ota.staging.label,
        subtype=ota.staging.subtype,
        final=ota.final.label if ota.final is not None and ota.final != ota.staging else None,
        copied=ota.finalize_with_copy,
        bytes_written=ota.binary_file_len - ota.counted_twice,
        image_length=ota.image_length,
        boot_partition_updated=updated,
        resumed_from=ota.resumed_from,
        set_boot_error=ota.set_boot_error,
        image_len_read=ota.binary_file_len,
    )


def _perform_all(ota: EspHttpsOta, on_progress: OnProgress | None) -> None:
    """esp_https_ota_perform until done, reporting progress between calls as an app's loop does."""
    while ota.perform():
        if on_progress is not None:
            on_progress(ota.get_image_len_read(), ota.get_image_size())


def esp_https_ota(
    device: Device, config: OtaConfig, on_event: OnEvent | None = None, on_progress: OnProgress | None = None
) -> OtaResult:
    """``esp_https_ota()``: the one-shot update (begin, perform until done, finish; abort on error).
    ``on_progress`` gets what the advanced API's getters say between perform calls."""
    if not device.idf.has(ONE_SHOT_OTA_CONFIG):
        given = [name for name, value in (("partial_http_download", config.partial_http_download),
                                          ("bulk_flash_erase", config.bulk_flash_erase),
                                          ("max_http_request_size", config.max_http_request_size)) if value]
        if given:
            raise InputError(f"ESP-IDF {device.idf}'s esp_https_ota() takes only the HTTP client config: "
                             f"{', '.join(given)} need v5.0 or newer")
    own_errors = device.idf.has(ONE_SHOT_OWN_ERRORS)
    if config.ota_resumption and own_errors:
        raise EspError("ESP_ERR_NOT_SUPPORTED", "OTA resumption is not supported by the one-shot esp_https_ota()")
    ota = EspHttpsOta(device, config, on_event)
    try:
        ota.begin()
    except EspError as err:
        if not own_errors and err.esp_err != "ESP_FAIL":  # older releases return ESP_FAIL whenever begin fails
            raise EspError("ESP_FAIL", f"esp_https_ota_begin failed with {err.esp_err}: {err.message}") from None
        raise
    try:
        _perform_all(ota, on_progress)
        if config.decrypt_end is not None:
            config.decrypt_end()
    except BaseException:
        ota.abort()
        raise
    return _result(ota, ota.finish())


def resumable_https_ota(
    device: Device, config: OtaConfig, on_event: OnEvent | None = None, on_progress: OnProgress | None = None
) -> OtaResult:
    """The advanced-API update with ``ota_resumption`` (ESP-IDF v5.5 and newer), as ESP-IDF's example does it.

    Progress (bytes written to the slot) is kept in the device state under the URL, saved as the
    download goes and when it fails, so that the next run resumes with ``Range: bytes=N-``. A
    server that ignores the Range (200) or answers 416 makes esp_https_ota start again from byte 0
    (before v5.5.4 a 200 answer's whole image is written at the saved offset).
    """
    url = config.http.url
    progress = device.state.resume.get(url)
    target = device.staging_partition(config.staging)
    if progress and target is not None and progress.get("partition") == target.label:
        config.ota_image_bytes_written = int(progress.get("bytes_written", 0))
    config.ota_resumption = True
    saved = [config.ota_image_bytes_written]

    def save(written: int) -> None:
        if target is not None and written != saved[0]:
            device.state.resume[url] = {"partition": target.label, "bytes_written": written}
            device.save()
            saved[0] = written

    def track(name: str, data: int | None) -> None:
        if name == ev.WRITE_FLASH and data is not None and data - saved[0] >= 64 * 1024:
            save(data)
        if on_event is not None:
            on_event(name, data)

    ota = EspHttpsOta(device, config, track)
    ota.begin()
    save(ota.binary_file_len)  # a restart from byte 0 (Range refused) invalidates the old progress at once
    try:
        _perform_all(ota, on_progress)
        if not ota.is_complete_data_received():
            raise EspError("ESP_FAIL", "complete data was not received")
    except BaseException:
        save(ota.binary_file_len)
        ota.abort()
        raise
    updated = ota.finish()
    device.state.resume.pop(url, None)
    device.save()
    return _result(ota, updated)
