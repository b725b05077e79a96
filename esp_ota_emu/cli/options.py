"""Options shared by every command that opens a device (they persist in the device's sidecar file)."""

from __future__ import annotations

import functools
import json

import click

from ..device import DANGEROUS_WRITES, Device
from ..security.policy import SECURE_BOOT_VERSIONS


def _int(value):
    return None if value is None else int(value, 0)


def _chip_rev(value):
    """``3.0`` / ``v3.1`` (major.minor) or ``301`` (major*100+minor)."""
    if value is None:
        return None
    text = value.lower().lstrip("v")
    if "." in text:
        major, minor = text.split(".", 1)
        return int(major) * 100 + int(minor)
    return int(text, 0)


def device_options(func):
    """Adds the device settings as options and passes ``open_device(path, readonly=...)`` to the command."""

    @click.option("--chip", default=None, help="Chip of the device (default: detected from the bootloader).")
    @click.option("--chip-rev", default=None, help="Chip revision, e.g. 3.0 or 301 (major*100+minor).")
    @click.option("--idf-release", default=None, metavar="VERSION",
                  help="Follow this ESP-IDF release where releases differ: v4.3.3 to v6.1 except v4.4.0 (e.g. v5.5.2; "
                  "v6.1 as of v6.1-beta1), or v4 (= v4.4.6), v5 (= v5.4.4, the default), newest (= v6.1).")
    @click.option("--partition-table-offset", default=None, help="Partition table offset (default 0x8000).")
    @click.option("--rollback/--no-rollback", default=None,
                  help="Bootloader built with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE.")
    @click.option("--anti-rollback/--no-anti-rollback", default=None,
                  help="Bootloader built with CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK.")
    @click.option("--skip-validation-on-power-on/--validate-on-power-on", default=None,
                  help="CONFIG_BOOTLOADER_SKIP_VALIDATE_ON_POWER_ON (Arduino's stock bootloaders).")
    @click.option("--skip-validation-always/--no-skip-validation-always", default=None,
                  help="CONFIG_BOOTLOADER_SKIP_VALIDATE_ALWAYS.")
    @click.option("--factory-reset/--no-factory-reset", default=None,
                  help="CONFIG_BOOTLOADER_FACTORY_RESET: a factory-reset pin is wired (boot --hold-factory-reset-pin).")
    @click.option("--factory-reset-data", default=None,
                  help="CONFIG_BOOTLOADER_DATA_FACTORY_RESET: data partitions a factory reset erases (default nvs).")
    @click.option("--factory-reset-otadata/--no-factory-reset-otadata", default=None,
                  help="CONFIG_BOOTLOADER_OTA_DATA_ERASE: a factory reset also erases otadata.")
    @click.option("--app-test/--no-app-test", default=None,
                  help="CONFIG_BOOTLOADER_APP_TEST: a test-app pin is wired (boot --hold-test-pin).")
    @click.option("--dangerous-writes", type=click.Choice(DANGEROUS_WRITES), default=None,
                  help="CONFIG_SPI_FLASH_DANGEROUS_WRITE: what the app's flash writes to the bootloader, the partition "
                       "table or the running app do (default: aborts, as ESP-IDF's).")
    @click.option("--efuse-secure-version", default=None, type=int, help="The anti-rollback eFuse value.")
    @click.option("--secure-boot", type=click.Choice(SECURE_BOOT_VERSIONS), default=None,
                  help="Bootloader and app built with Secure Boot V1 (ESP32 ECDSA-signed apps) or V2; enables it in eFuse.")
    @click.option("--signed-on-update-no-secure-boot/--no-signed-on-update-no-secure-boot", default=None,
                  help="CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT: updates must be signed with the running app's key.")
    @click.option("--signed-data-partition/--no-signed-data-partition", default=None,
                  help="CONFIG_SECURE_SIGNED_DATA_PARTITION (v6.0.1 and newer): an update of a data partition of "
                       "subtype undefined must end with a Secure Boot V2 signature sector (espsecure sign-data).")
    @click.option("--secure-boot-key", "secure_boot_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
                  help="Burn this key's (private or public PEM) Secure Boot V2 digest into eFuse (repeatable); "
                       "with --secure-boot v1: the ECDSA P-256 signature verification key.")
    @click.option("--secure-bootloader-key", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="Secure Boot V1 reflashable mode: burn this 32-byte key (espsecure digest-secure-bootloader's) "
                       "into BLOCK2; without it the first boot makes one (one-time flash mode).")
    @click.option("--flash-encryption-key", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="Burn this flash encryption key file (espsecure's raw key) into eFuse.")
    @click.option("--flash-encryption", is_flag=True, default=None,
                  help="Enable flash encryption: the first boot's encryption of the flash and CRYPT_CNT burn.")
    @click.option("--efuse-file", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="Replace the device's eFuses with this QEMU eFuse file.")
    @functools.wraps(func)
    def wrapper(*args, chip, chip_rev, idf_release, partition_table_offset, rollback, anti_rollback,
                skip_validation_on_power_on, skip_validation_always, factory_reset, factory_reset_data,
                factory_reset_otadata, app_test, dangerous_writes, efuse_secure_version, secure_boot,
                signed_on_update_no_secure_boot, signed_data_partition,
                secure_boot_keys, secure_bootloader_key, flash_encryption_key, flash_encryption, efuse_file, **kwargs):
        settings = dict(
            chip=chip,
            chip_rev=_chip_rev(chip_rev),
            idf_release=idf_release,
            partition_table_offset=_int(partition_table_offset),
            rollback=rollback,
            anti_rollback=anti_rollback,
            skip_validation_on_power_on=skip_validation_on_power_on,
            skip_validation_always=skip_validation_always,
            factory_reset=factory_reset,
            factory_reset_data=factory_reset_data,
            factory_reset_otadata=factory_reset_otadata,
            app_test=app_test,
            dangerous_writes=dangerous_writes,
            efuse_secure_version=efuse_secure_version,
            secure_boot=secure_boot,
            signed_on_update_no_secure_boot=signed_on_update_no_secure_boot,
            signed_data_partition=signed_data_partition,
            efuse_file=efuse_file,
            flash_encryption_key=flash_encryption_key,
            secure_bootloader_key=secure_bootloader_key,
            secure_boot_keys=secure_boot_keys,
            flash_encryption=flash_encryption or None,
        )

        def open_device(path, **kw):
            return Device.open(path, **kw, **settings)

        return func(*args, open_device=open_device, **kwargs)

    return wrapper


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=None, default=str))


def _header(value: str) -> tuple[str, str]:
    key, sep, val = value.partition(":")
    if not sep or not key.strip():
        raise click.BadParameter(f"{value!r} is not 'Key: Value'", param_hint="--header")
    return key.strip(), val.strip()


_HTTPS_OTA_OPTIONS = (
    click.option("--cert-pem", type=click.Path(exists=True, dir_okay=False),
                 help="Root CA certificate (PEM) the server's chain must lead to, as given to the device."),
    click.option("--crt-bundle", is_flag=True, help="Verify the server against the default CA bundle."),
    click.option("--allow-http", is_flag=True, help="Allow plain http:// (CONFIG_ESP_HTTPS_OTA_ALLOW_HTTP)."),
    click.option("--verify-spi-mode/--no-verify-spi-mode", default=True, show_default=True,
                 help="v6.1 and newer: refuse an app built for another SPI flash mode than the running app "
                      "(CONFIG_ESP_HTTPS_OTA_VERIFY_SPI_MODE)."),
    click.option("--skip-cert-common-name-check", is_flag=True, help="Do not check the server's host name."),
    click.option("--common-name", help="Check the server certificate against this name instead of the URL's host."),
    click.option("--client-cert", type=click.Path(exists=True, dir_okay=False),
                 help="Mutual TLS: client certificate (PEM)."),
    click.option("--client-key", type=click.Path(exists=True, dir_okay=False), help="Mutual TLS: client key (PEM)."),
    click.option("--tls13", is_flag=True,
                 help="Offer TLS 1.3 too (CONFIG_MBEDTLS_SSL_PROTO_TLS1_3, v5.0 and newer; default: TLS 1.2 only)."),
    click.option("--cert-expiry-check", is_flag=True,
                 help="Refuse expired or not yet valid server certificates (CONFIG_MBEDTLS_HAVE_TIME_DATE; "
                      "off in ESP-IDF's defaults, where the dates are ignored)."),
    click.option("--username", help="User for Basic/Digest auth (default: from the URL)."),
    click.option("--password", help="Password for Basic/Digest auth (default: from the URL)."),
    click.option("--auth-type", type=click.Choice(["none", "basic"]), default="none", show_default=True,
                 help="esp_http_client's auth_type: 'basic' sends the credentials with the first request."),
    click.option("--basic-auth/--no-basic-auth", default=True, show_default=True,
                 help="Answer a Basic challenge (CONFIG_ESP_HTTP_CLIENT_ENABLE_BASIC_AUTH; off in ESP-IDF's defaults)."),
    click.option("--digest-auth/--no-digest-auth", default=True, show_default=True,
                 help="Answer a Digest challenge (CONFIG_ESP_HTTP_CLIENT_ENABLE_DIGEST_AUTH; off in ESP-IDF's "
                      "defaults from v5.0)."),
    click.option("--max-authorization-retries", type=click.IntRange(min=-1), default=0,
                 help="esp_http_client's max_authorization_retries: 401 answers to answer (0: 10, -1: none); "
                      "from v5.0.2 redirects count toward it too."),
    click.option("--timeout-ms", type=click.IntRange(min=1), default=5000, show_default=True,
                 help="esp_http_client's timeout: the wait for response headers and for each read."),
    click.option("--stall-limit", "stall_limit_s", type=click.FloatRange(min=0), default=30.0, show_default=True,
                 help="Seconds to wait for a stalled download (a device retries its timed-out reads for ever)."),
    click.option("--header", "headers", multiple=True, help="Extra request header 'Key: Value' (repeatable)."),
    click.option("--user-agent", help="User-Agent (default 'ESP32 HTTP Client/1.0')."),
    click.option("--buffer-size", type=click.IntRange(min=0), default=0,
                 help="esp_http_client rx buffer; the OTA reads max(this, 1024) bytes at a time."),
    click.option("--buffer-size-tx", type=click.IntRange(min=0), default=0,
                 help="esp_http_client tx buffer (0: 512 bytes): the request line and each header line must fit it."),
    click.option("--partial-download", "partial_http_download", is_flag=True,
                 help="partial_http_download: HEAD, then Range requests."),
    click.option("--max-http-request-size", type=click.IntRange(min=1), default=64 * 1024, show_default=True,
                 help="Bytes per Range request with --partial-download."),
    click.option("--bulk-flash-erase", is_flag=True, help="Erase the image's sectors up front instead of as written."),
    click.option("--staging", metavar="LABEL",
                 help="v5.5 and newer: write the image to this partition instead of the next OTA slot "
                      "(a label, or bootloader / partition_table)."),
    click.option("--final", metavar="LABEL",
                 help="v5.5 and newer: the partition the image is for (a label, or bootloader / partition_table): "
                      "it is verified as that partition's type; only an app in an OTA slot is booted next."),
    click.option("--finalize-with-copy", is_flag=True,
                 help="With --final: esp_ota_end copies the verified image from the staging partition to it."),
)
_HTTPS_OTA_NAMES = (
    "cert_pem", "crt_bundle", "allow_http", "verify_spi_mode", "tls13", "cert_expiry_check",
    "skip_cert_common_name_check", "common_name", "client_cert", "client_key", "username", "password", "auth_type",
    "basic_auth", "digest_auth", "max_authorization_retries", "timeout_ms",
    "stall_limit_s", "headers", "user_agent", "buffer_size", "buffer_size_tx", "partial_http_download",
    "max_http_request_size", "bulk_flash_erase", "staging", "final", "finalize_with_copy",
)


def https_ota_options(func):
    """The esp_https_ota_config_t / esp_http_client_config_t fields as options.

    The command receives them as one ``ota_options`` dict of keyword arguments for
    :func:`esp_ota_emu.https_ota.api.https_ota` (``cert_pem`` is the file's path).
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ota_options = {name: kwargs.pop(name) for name in _HTTPS_OTA_NAMES}
        ota_options["headers"] = tuple(_header(h) for h in ota_options["headers"])
        return func(*args, ota_options=ota_options, **kwargs)

    for option in reversed(_HTTPS_OTA_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
