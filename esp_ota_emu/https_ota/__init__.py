"""ESP-IDF's esp_https_ota over an esp_http_client look-alike: the whole HTTPS OTA path of a device."""

from __future__ import annotations

from .api import https_ota
from .config import Decrypter, HttpConfig, OtaConfig
from .engine import EspHttpsOta, OtaResult, esp_https_ota, resumable_https_ota
from .events import event_id, event_names

__all__ = [
    "Decrypter",
    "EspHttpsOta",
    "HttpConfig",
    "OtaConfig",
    "OtaResult",
    "esp_https_ota",
    "event_id",
    "event_names",
    "https_ota",
    "resumable_https_ota",
]
