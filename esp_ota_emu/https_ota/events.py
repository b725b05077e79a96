"""``ESP_HTTPS_OTA_EVENT`` ids and names, per ESP-IDF release (the numbering changed)."""

from __future__ import annotations

START = "ESP_HTTPS_OTA_START"
CONNECTED = "ESP_HTTPS_OTA_CONNECTED"
GET_IMG_DESC = "ESP_HTTPS_OTA_GET_IMG_DESC"
VERIFY_CHIP_ID = "ESP_HTTPS_OTA_VERIFY_CHIP_ID"
VERIFY_CHIP_REVISION = "ESP_HTTPS_OTA_VERIFY_CHIP_REVISION"
DECRYPT_CB = "ESP_HTTPS_OTA_DECRYPT_CB"
WRITE_FLASH = "ESP_HTTPS_OTA_WRITE_FLASH"
UPDATE_BOOT_PARTITION = "ESP_HTTPS_OTA_UPDATE_BOOT_PARTITION"
FINISH = "ESP_HTTPS_OTA_FINISH"
ABORT = "ESP_HTTPS_OTA_ABORT"

# esp_https_ota_event_t in enum order: v5.x has no VERIFY_CHIP_REVISION, newest inserted it after
# VERIFY_CHIP_ID, shifting every later id by one.
EVENT_IDS: dict[str, tuple[str, ...]] = {
    "v5": (START, CONNECTED, GET_IMG_DESC, VERIFY_CHIP_ID, DECRYPT_CB, WRITE_FLASH,
           UPDATE_BOOT_PARTITION, FINISH, ABORT),
    "newest": (START, CONNECTED, GET_IMG_DESC, VERIFY_CHIP_ID, VERIFY_CHIP_REVISION, DECRYPT_CB,
               WRITE_FLASH, UPDATE_BOOT_PARTITION, FINISH, ABORT),
}


def event_id(name: str, idf_release: str) -> int:
    """The numeric event id ESP-IDF ``idf_release`` ("v5" or "newest") posts for ``name``."""
    return EVENT_IDS[idf_release].index(name)
