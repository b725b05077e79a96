"""ESP-IDF error names and codes, and the tool's exit codes.

Every failure the emulator reports is an :class:`EspError` carrying the ESP-IDF ``esp_err_t`` a
device would have returned (where one exists) and a plain-words explanation.
"""

from __future__ import annotations

# esp_err_t values, as in esp_err.h, esp_ota_ops.h, esp_image_format.h, esp_http_client.h,
# esp_https_ota.h.
ESP_ERR_CODES: dict[str, int] = {
    "ESP_OK": 0x0,
    "ESP_FAIL": -1,
    "ESP_ERR_NO_MEM": 0x101,
    "ESP_ERR_INVALID_ARG": 0x102,
    "ESP_ERR_INVALID_STATE": 0x103,
    "ESP_ERR_INVALID_SIZE": 0x104,
    "ESP_ERR_NOT_FOUND": 0x105,
    "ESP_ERR_NOT_SUPPORTED": 0x106,
    "ESP_ERR_TIMEOUT": 0x107,
    "ESP_ERR_INVALID_RESPONSE": 0x108,
    "ESP_ERR_INVALID_CRC": 0x109,
    "ESP_ERR_INVALID_VERSION": 0x10A,
    "ESP_ERR_NOT_FINISHED": 0x10C,
    "ESP_ERR_NOT_ALLOWED": 0x10D,
    "ESP_ERR_IMAGE_FLASH_FAIL": 0x2001,
    "ESP_ERR_IMAGE_INVALID": 0x2002,
    "ESP_ERR_OTA_PARTITION_CONFLICT": 0x1501,
    "ESP_ERR_OTA_SELECT_INFO_INVALID": 0x1502,
    "ESP_ERR_OTA_VALIDATE_FAILED": 0x1503,
    "ESP_ERR_OTA_SMALL_SEC_VER": 0x1504,
    "ESP_ERR_OTA_ROLLBACK_FAILED": 0x1505,
    "ESP_ERR_OTA_ROLLBACK_INVALID_STATE": 0x1506,
    "ESP_ERR_OTA_ALREADY_IN_PROGRESS": 0x1507,
    "ESP_ERR_OTA_SPI_MODE_MISMATCH": 0x1508,
    "ESP_ERR_HTTP_MAX_REDIRECT": 0x7001,
    "ESP_ERR_HTTP_CONNECT": 0x7002,
    "ESP_ERR_HTTP_WRITE_DATA": 0x7003,
    "ESP_ERR_HTTP_FETCH_HEADER": 0x7004,
    "ESP_ERR_HTTP_INVALID_TRANSPORT": 0x7005,
    "ESP_ERR_HTTP_CONNECTING": 0x7006,
    "ESP_ERR_HTTP_EAGAIN": 0x7007,
    "ESP_ERR_HTTP_CONNECTION_CLOSED": 0x7008,
    "ESP_ERR_HTTP_NOT_MODIFIED": 0x7009,
    "ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE": 0x700A,
    "ESP_ERR_HTTP_REDIRECT_DOWNGRADE": 0x700D,
    "ESP_ERR_HTTPS_OTA_IN_PROGRESS": 0x9001,
    # not an esp_err_t: the esp_https_ota_state value that esp_https_ota_perform returns (and
    # esp_https_ota() passes on) when a decrypt callback gives no bytes
    "ESP_HTTPS_OTA_IN_PROGRESS": 2,
}

# Exit codes of the command line (documented in the README).
EXIT_OK = 0
EXIT_INVALID = 1  # the command ran and its answer is "no": invalid image, failed check, expectation not met
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_BAD_INPUT = 3  # an input file could not be read or is not what it claims to be
EXIT_OTA_FAILED = 4  # an OTA (or another flash-changing operation) failed; the flash is as before
EXIT_NO_BOOTABLE = 5  # the bootloader finds no bootable app / a power-cut run bricked the device
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class EspError(Exception):
    """An operation failed the way ESP-IDF would fail it.

    ``esp_err`` is the ESP-IDF error name (``ESP_ERR_OTA_VALIDATE_FAILED``, ...), ``message`` says in
    plain words what was wrong. ``str(err)`` is the one-line message the CLI prints.
    """

    exit_code = EXIT_INVALID

    def __init__(self, esp_err: str, message: str):
        if esp_err not in ESP_ERR_CODES:
            raise ValueError(f"unknown ESP-IDF error name {esp_err}")
        super().__init__(message)
        self.esp_err = esp_err
        self.message = message

    @property
    def code(self) -> int:
        return ESP_ERR_CODES[self.esp_err]

    def __str__(self) -> str:
        return f"{self.esp_err}: {self.message}"


class InputError(Exception):
    """An input file or value is not usable (truncated, wrong format, out of range).

    Used where ESP-IDF has no error of its own (reading a dump, a CSV, a command-line value).
    """

    exit_code = EXIT_BAD_INPUT
