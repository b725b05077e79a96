"""The chip table against esptool's target definitions (the oracle for ids, offsets and memory maps)."""

from __future__ import annotations

import pytest
from esptool.targets import CHIP_DEFS

from esp_ota_emu.chips import CHIPS, ESP8266, chip_by_id, chip_by_name, find_chip_by_id
from esp_ota_emu.errors import InputError

IDF_CHIPS = ["esp32", "esp32s2", "esp32s3", "esp32c2", "esp32c3", "esp32c5", "esp32c6", "esp32c61", "esp32h2", "esp32p4"]


def test_every_esp_idf_chip_is_in_the_table():
    names = {chip.name for chip in CHIPS}
    assert set(IDF_CHIPS) <= names
    assert len(names) == len(CHIPS)
    assert len({chip.chip_id for chip in CHIPS}) == len(CHIPS)


@pytest.mark.parametrize("chip", CHIPS, ids=lambda c: c.name)
def test_chip_matches_esptool_target(chip):
    rom = CHIP_DEFS[chip.name]
    assert chip.display == rom.CHIP_NAME
    assert chip.chip_id == rom.IMAGE_CHIP_ID
    assert chip.bootloader_offset == rom.BOOTLOADER_FLASH_OFFSET
    assert chip.memory_map == tuple((start, end, name) for start, end, name in rom.MEMORY_MAP)
    assert dict(chip.flash_sizes) == rom.FLASH_SIZES
    assert dict(chip.flash_freqs) == rom.FLASH_FREQUENCY
    # esptool's lookup takes the first name with the nibble; so must ours
    for nibble in range(16):
        expected = next((k for k, v in rom.FLASH_FREQUENCY.items() if v == nibble), None)
        assert chip.flash_freq_name(nibble) == expected


def test_esp8266_matches_esptool():
    rom = CHIP_DEFS["esp8266"]
    assert ESP8266.memory_map == tuple(tuple(r) for r in rom.MEMORY_MAP)
    assert dict(ESP8266.flash_sizes) == rom.FLASH_SIZES


def test_bootloader_offsets_from_the_issue():
    offsets = {c.name: c.bootloader_offset for c in CHIPS}
    assert offsets["esp32"] == offsets["esp32s2"] == 0x1000
    for name in ("esp32c2", "esp32c3", "esp32c6", "esp32c61", "esp32h2", "esp32s3"):
        assert offsets[name] == 0x0
    assert offsets["esp32c5"] == offsets["esp32p4"] == 0x2000


def test_security_features():
    esp32 = chip_by_name("esp32")
    assert esp32.secure_boot_schemes == ("sbv1", "rsa3072")
    assert esp32.efuse_secure_version_bits == 32
    assert esp32.flash_encryption == "aes256-tweak"
    c2 = chip_by_name("esp32c2")
    assert all(s.startswith("ecdsa") for s in c2.secure_boot_schemes)
    assert {c.flash_encryption for c in CHIPS if c.name != "esp32"} == {"xts-aes"}
    assert {c.name for c in CHIPS if c.qemu_machine} == {"esp32", "esp32c3", "esp32s3"}


def test_lookups():
    assert chip_by_id(0x0D).name == "esp32c6"
    assert chip_by_name("ESP32-C6") is chip_by_name("esp32c6")
    assert find_chip_by_id(0xFFFF) is None
    with pytest.raises(InputError, match="unknown chip ID 4660"):
        chip_by_id(0x1234)
    with pytest.raises(InputError, match="unknown chip"):
        chip_by_name("esp42")


def test_flash_windows_and_ram():
    esp32 = chip_by_name("esp32")
    assert esp32.should_map(0x3F400020) and esp32.should_map(0x400D0020)
    assert not esp32.should_map(0x3FFB0000) and not esp32.should_map(0x40080000)
    assert esp32.in_ram(0x3FFB0000, 0x3FFB0100) and esp32.in_ram(0x40080000, 0x40081000)
    assert not esp32.in_ram(0x3FFFFF00, 0x40000100)  # straddles DRAM end
    p4 = chip_by_name("esp32p4")
    assert p4.should_map(0x48000000)  # PSRAM, mapped by the per-target MMU
    assert p4.in_ram(0x30100000, 0x3010000C)  # SPM
    assert chip_by_name("esp32c3").memory_types(0x3FC88000) == ["DRAM", "BYTE_ACCESSIBLE"]
