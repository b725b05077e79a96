"""``esp_image``: parse an app or bootloader image and verify it the way ESP-IDF does."""

from __future__ import annotations

from .reader import EspImage, Segment, parse_image
from .verify import VerifyResult, verify_image

__all__ = ["EspImage", "Segment", "VerifyResult", "parse_image", "verify_image"]
