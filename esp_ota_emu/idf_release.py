"""ESP-IDF releases, and which app-side behaviours that changed between them each release has.

A device follows one ESP-IDF release (the ``idf_release`` setting): a version such as ``v5.4.2``,
``5.5`` or ``v6.0``, or one of the names ``v4``, ``v5`` and ``newest`` (see :data:`ALIASES`). Every
behaviour the emulator reproduces differently per release is a :class:`Change` below, with the first
release of each ESP-IDF branch that has it, read from ESP-IDF's release tags (fixes were often
backported to older branches in a later patch release).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .errors import InputError

OLDEST = (4, 3, 3)  # see HEADER_FIRST
NEWEST = (6, 1, 0)  # the newest release whose sources the emulator follows: v6.1 is v6.1-beta1's sources
ALIASES = {
    "v4": "v4.4.6",  # the last release with v4's esp_ota_write erase and esp_https_ota_finish
    "v5": "v5.4.4",  # the v5.x behaviour before v5.5's OTA changes; the default
    "newest": f"v{NEWEST[0]}.{NEWEST[1]}.{NEWEST[2]}",
}
DEFAULT = "v5"


@dataclass(frozen=True)
class Change:
    """One behaviour that changed: ``since`` names the first release of each branch that has it; the
    last one is where it entered the mainline, so every later branch has it too."""

    what: str
    since: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_firsts", tuple(_parse_version(v) for v in self.since))

    def in_release(self, version: tuple[int, int, int]) -> bool:
        """Whether release ``version`` (major, minor, patch) has this behaviour."""
        for first in self._firsts:
            if first[:2] == version[:2]:
                return version >= first
        return version > self._firsts[-1]


@dataclass(frozen=True)
class IdfRelease:
    """The release a device follows, as (major, minor, patch)."""

    version: tuple[int, int, int]

    def has(self, change: Change) -> bool:
        return change.in_release(self.version)

    def __str__(self) -> str:
        return "v{}.{}.{}".format(*self.version)


def _parse_version(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        raise ValueError(text)
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


@functools.lru_cache(maxsize=64)
def parse_release(name: str) -> IdfRelease:
    """``v5.4.2``, ``5.5``, ``v6.0`` or an alias; refuses what the emulator does not know."""
    known = "v{}.{}.{} to v{}.{}.x except v4.4.0, or {}".format(*OLDEST, *NEWEST[:2], ", ".join(ALIASES))
    try:
        version = _parse_version(ALIASES.get(name, name))
    except ValueError:
        raise InputError(f"unknown ESP-IDF release {name!r} (give a version, {known})") from None
    if not OLDEST <= version < (NEWEST[0], NEWEST[1] + 1, 0) or not HEADER_FIRST.in_release(version):
        raise InputError(f"ESP-IDF {name} is outside the releases the emulator follows ({known})")
    return IdfRelease(version)


# -- esp_ota_ops.c ------------------------------------------------------------------------------------
SEQUENTIAL_ERASE_FIX = Change(
    "esp_ota_write: the last sector to erase comes from wrote_size + size - 1 (before: wrote_size + size, "
    "one sector too many when a write ends on a sector boundary), and size 0 returns ESP_OK at once",
    ("4.4.7", "5.0.6", "5.1.3", "5.2"),
)
OTA_RESUME = Change("esp_ota_resume() exists", ("5.3.3", "5.4.2", "5.5"))
BEGIN_REGISTERS_FIRST = Change(
    "esp_ota_begin registers the OTA before it erases, so a failed erase (an image longer than the slot with "
    "bulk erase) leaves it registered until a reset; from v6.1 that refuses every later esp_ota_begin of the slot",
    ("5.3.3", "5.4.2", "5.5"),
)
BEGIN_INVALIDATES_INACTIVE_OTADATA = Change(
    "esp_ota_begin erases the inactive otadata sector when the bootloader has rollback", ("5.5",)
)
REWRITE_KEEPS_SELECTED_SLOT = Change(
    "esp_ota_set_boot_partition of the slot otadata already selects rewrites the same sector, same seq", ("6.0",)
)
SIGNED_DATA_PARTITION = Change(
    "CONFIG_SECURE_SIGNED_DATA_PARTITION (--signed-data-partition): esp_ota_end checks the Secure Boot V2 "
    "signature sector that ends an image for a data partition of subtype undefined",
    ("6.0.1",),
)
SET_BOOT_SKIP_VALIDATE = Change(
    "esp_ota_set_boot_partition_skip_validate(): otadata selects an app without verifying it first "
    "(set-boot --skip-validate)",
    ("6.1",),
)
OTA_ALREADY_IN_PROGRESS = Change(
    "esp_ota_begin and esp_ota_resume refuse a partition that an unfinished OTA is writing or will copy to "
    "(ESP_ERR_OTA_ALREADY_IN_PROGRESS)",
    ("6.1",),
)

# -- esp_https_ota.c, esp_http_client.c, esp-tls and ESP-IDF's mbedTLS build ------------------------------
# Every release the emulator follows has this; the ones before it are refused (parse_release).
HEADER_FIRST = Change(
    "esp_https_ota reads the image header before its first write and checks the chip id in it (before: "
    "neither; such releases are refused)",
    ("4.3.3", "4.4.1"),
)
HEADER_1024 = Change(
    "esp_https_ota reads a 1024-byte image header, also its smallest read buffer, and get_img_desc checks "
    "the description's magic (before: 289 bytes, the image, segment and app description headers and one more)",
    ("5.0",),
)
HEADER_COUNTED_ONCE = Change(
    "the first esp_https_ota_perform counts the header bytes once (before: read_header's count stayed and "
    "the write added it again, so image_len_read ran a header ahead and partial downloads asked for the "
    "wrong ranges)",
    ("5.0.6", "5.1.3", "5.2"),
)
ENC_IMG_HEADER_SIZE = Change(
    "esp_https_ota_config_t.enc_img_header_size: a pre-encrypted image's header is left out of the image "
    "length and the Range offsets",
    ("5.0.6", "5.1.3", "5.2"),
)
VERIFY_WITH_BUNDLE = Change(
    "esp_https_ota_begin counts the CA bundle (and the global CA store) as server verification, not only cert_pem",
    ("4.3.4",),
)
PARTIAL_HTTP_DOWNLOAD = Change("esp_https_ota has partial_http_download", ("4.4",))
ONE_SHOT_OTA_CONFIG = Change(
    "esp_https_ota() takes an esp_https_ota_config_t (before: only the esp_http_client_config_t, so the "
    "one-shot has no partial download, bulk erase or request size)",
    ("5.0",),
)
DECRYPT_CB = Change("esp_https_ota has decrypt_cb (pre-encrypted images)", ("5.0",))
TLS13_KCONFIG = Change(
    "TLS 1.3 can be built in (CONFIG_MBEDTLS_SSL_PROTO_TLS1_3, off by default; before: TLS 1.2 at most)", ("5.0",)
)
HEADERS_TIMEOUT_EAGAIN = Change(
    "no response headers within timeout_ms is ESP_ERR_HTTP_EAGAIN (before: ESP_FAIL)", ("5.0",)
)
HTTPS_OTA_EVENTS = Change("esp_https_ota posts ESP_HTTPS_OTA_EVENT events", ("5.0.1",))
SET_BOOT_ERROR_RETURNED = Change(
    "esp_https_ota_finish returns esp_ota_set_boot_partition's error (before: a shadowed variable logs it "
    "and ESP_OK is returned)",
    ("4.4.7", "5.0.5", "5.1.3", "5.2"),
)
BULK_ERASE_IMAGE_LENGTH = Change(
    "bulk_flash_erase erases the image length when the server announced it (before: the whole slot)", ("5.3",)
)
CHIP_REVISION_CHECK = Change(
    "the first bytes are checked against the chip revision range, after the chip id, with an "
    "ESP_HTTPS_OTA_VERIFY_CHIP_REVISION event (inserted after VERIFY_CHIP_ID, later ids shifted)",
    ("5.5",),
)
CHIP_EVENTS_FIRST = Change(
    "VERIFY_CHIP_ID and VERIFY_CHIP_REVISION are both posted before the chip checks "
    "(esp_ota_check_image_validity; before, a chip id mismatch ended the OTA without VERIFY_CHIP_REVISION), "
    "and a bootloader image's maximum chip revision is no longer checked there",
    ("6.1",),
)
SPI_MODE_CHECK = Change(
    "an app whose descriptor records another SPI flash mode than the running app's is refused before "
    "anything is written (ESP_ERR_OTA_SPI_MODE_MISMATCH; CONFIG_ESP_HTTPS_OTA_VERIFY_SPI_MODE, on by "
    "default); when either app records none (0: built before v6.1) the update passes",
    ("6.1",),
)
HTTP_304_416 = Change("a 304 answer is ESP_ERR_HTTP_NOT_MODIFIED, a 416 ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE", ("5.5",))
IP_SAN_VERIFIED = Change(
    "mbedTLS 3.5: an iPAddress subjectAltName matches a URL whose host is an IP address (before: only a "
    "dNSName spelling the address, or the CN of a certificate without subjectAltName)",
    ("5.0.5", "5.1.2", "5.2"),
)
GET_WITHOUT_CONTENT_LENGTH = Change(
    "GET and HEAD requests carry no Content-Length (before: Content-Length: 0, which some servers, such as "
    "AWS load balancers, answer with 400)",
    ("5.4",),
)
AUTH_RETRY_LIMIT = Change(
    "esp_https_ota gives up after max_authorization_retries 401 answers (before: it asks again forever)", ("5.1",)
)
DIGEST_AUTH_KCONFIG = Change(
    "Digest auth can be left out of the build (CONFIG_ESP_HTTP_CLIENT_ENABLE_DIGEST_AUTH; before: always in)",
    ("4.4",),
)
DIGEST_QOP_ONLY_IF_OFFERED = Change(
    "a Digest answer has qop, nc and a quoted cnonce only when the challenge named a qop (before: always, "
    "the cnonce unquoted and a missing qop printed as (null))",
    ("5.0.7", "5.1.4", "5.2.1"),
)
DIGEST_SHA256 = Change(
    "Digest: SHA-256 for an algorithm token starting SHA256 or SHA-256, the challenge's algorithm token "
    'echoed as is (before: always MD5 and algorithm="MD5"), and the query in the uri',
    ("5.3",),
)
ADD_AUTH_CHECKED = Change(
    "a 401 whose challenge cannot be answered ends the OTA with esp_http_client_add_auth's error", ("5.5",)
)
IPV6_HOST_BRACKETS = Change(
    "an IPv6 address in the Host header is in brackets, [::1]:8443 (before: ::1:8443)", ("5.5",)
)
RANGE_FROM_RESUME_OFFSET = Change(
    "partial download: the first Range starts at the resume offset and ends at the image length", ("5.5",)
)
DESC_FROM_SLOT = Change(
    "esp_https_ota_get_img_desc reads the description from the slot when the header is already there "
    "(a resumed OTA); before, it always read the next bytes of the body",
    ("5.5",),
)
ONE_SHOT_OWN_ERRORS = Change(
    "esp_https_ota() returns esp_https_ota_begin's own error (before: ESP_FAIL) and refuses ota_resumption",
    ("5.5",),
)
PARTITION_OTA = Change(
    "esp_https_ota_config_t.partition: the image goes to a staging partition (any partition, not only the "
    "next OTA slot) and is verified as its final partition's type (app, bootloader, partition table, or "
    "not at all); esp_ota_end copies it there with finalize_with_copy (esp_ota_set_final_partition)",
    ("5.5",),
)
OTA_RESUMPTION = Change("ota_resumption: a download continues from the saved offset with Range: bytes=N-", ("5.5",))
RESUME_OFFSET_ALIGNED = Change(
    "with flash encryption the resume offset is rounded down to 16 bytes (before: taken as saved; the emulator "
    "refuses an unaligned one)",
    ("5.5.3",),
)
RESUMPTION_CHECKED = Change(
    "ota_resumption sends a Range even from byte 0 (bytes=0-), restarts from byte 0 on any answer but 206 and "
    "closes the connection first (before: no Range from byte 0; a 200 answer's whole image is written at the "
    "saved offset, a shifted image that esp_ota_end refuses; a 416 is asked again over the same connection, "
    "which the emulator does not model)",
    ("5.5.4",),
)
RESUMPTION_CHECK_SPARES_PARTIAL = Change(
    "the ota_resumption 206 check leaves partial downloads alone (v5.5.x compiled that exemption out)", ("6.0",)
)
KEEP_ALIVE_BETWEEN_RANGES = Change(
    "partial download: the next Range goes over the same connection when the server keeps it alive "
    "(before: esp_http_client_close, a new connection and TLS handshake per range)",
    ("5.4.4", "5.5.2", "6.0"),
)
HEAD_FALLBACK = Change(
    "partial download: a HEAD answered other than 200 is retried as GET Range: bytes=0-0, and no image "
    "length is an error (before: ESP_FAIL; without a length the whole body came in one GET)",
    ("6.0",),
)
REDIRECT_COUNTED = Change(
    "esp_http_client_set_redirection counts the redirect in redirect_counter, which esp_http_client_add_auth "
    "checks against max_authorization_retries (before: only esp_http_client_perform counted redirects, so "
    "esp_https_ota's own redirects used up no authorization retries)",
    ("5.0.2",),
)
PERFORM_REDIRECT_CHECKED = Change(
    "esp_http_client_perform (the partial download's HEAD) stops at a redirect it cannot follow (no Location, or "
    "one http_parser cannot parse, such as a relative path without a leading /); in v5.0.1 through "
    "ESP_ERROR_CHECK, so the device aborts and resets (before: it asked the same URL again until "
    "ESP_ERR_HTTP_MAX_REDIRECT)",
    ("5.0.1",),
)
PERFORM_REDIRECT_ESP_FAIL = Change(
    "esp_http_client_perform returns ESP_FAIL at a redirect it cannot follow (v5.0.1 aborted)", ("5.0.2",)
)
PERFORM_REDIRECT_ERROR_RETURNED = Change(
    "esp_http_client_perform returns esp_http_client_set_redirection's own error at a redirect it cannot follow "
    "(ESP_ERR_INVALID_ARG, ESP_ERR_HTTP_REDIRECT_DOWNGRADE; before: ESP_FAIL)",
    ("5.5.5", "6.1"),
)
REDIRECT_DOWNGRADE_REFUSED = Change(
    "an https:// origin may only redirect to an https:// Location, even a relative one is refused "
    "(ESP_ERR_HTTP_REDIRECT_DOWNGRADE)",
    ("5.5.5", "6.1"),
)

# Every change above, by name, in the order they are listed (``esp-ota-emu idf-release``).
CHANGES: dict[str, Change] = {name: value for name, value in list(globals().items()) if isinstance(value, Change)}
