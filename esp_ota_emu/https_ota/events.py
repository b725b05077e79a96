"""``ESP_HTTPS_OTA_EVENT`` ids and names, per ESP-IDF release (the events came in v5.0.1, the numbering changed in v5.5)."""

from __future__ import annotations

from ..idf_release import CHIP_REVISION_CHECK, HTTPS_OTA_EVENTS, IdfRelease

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

_ENUM = (START, CONNECTED, GET_IMG_DESC, VERIFY_CHIP_ID, VERIFY_CHIP_REVISION, DECRYPT_CB, WRITE_FLASH,
         UPDATE_BOOT_PARTITION, FINISH, ABORT)


def event_names(idf: IdfRelease) -> tuple[str, ...]:
    """``esp_https_ota_event_t`` of ``idf`` in enum order: none before v5.0.1; VERIFY_CHIP_REVISION from
    v5.5 on, inserted after VERIFY_CHIP_ID (every later id shifted by one)."""
    if not idf.has(HTTPS_OTA_EVENTS):
        return ()
    return tuple(name for name in _ENUM if name != VERIFY_CHIP_REVISION or idf.has(CHIP_REVISION_CHECK))


def event_id(name: str, idf: IdfRelease) -> int:
    """The numeric event id ESP-IDF ``idf`` posts for ``name``."""
    return event_names(idf).index(name)
