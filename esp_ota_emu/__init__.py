"""esp-ota-emu: an ESP32's flash and ESP-IDF's OTA path, emulated byte for byte on a host."""

__version__ = "0.1.0"
