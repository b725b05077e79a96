"""Secure Boot V2 key revocation (esp_efuse_set_digest_revoke): a revoked digest is no longer trusted."""

from __future__ import annotations

from pathlib import Path

import pytest

from esp_ota_emu.efuse import Efuses
from esp_ota_emu.errors import EspError
from esp_ota_emu.security import sbv2
from esp_ota_emu.security.keys import load_private_key

KEYS = Path(__file__).resolve().parents[1] / "firmware_samples" / "keys"


@pytest.fixture(scope="module")
def keys():
    return [load_private_key((KEYS / name).read_bytes()) for name in ("secure_boot_signing_key.pem", "secure_boot_other_key.pem")]


def test_revoked_key_no_longer_verifies_but_the_other_does(keys):
    efuses = Efuses.default("esp32c3")
    for key in keys:
        efuses.burn_secure_boot_key_digest(sbv2.key_digest(key.public_key()))
    data = bytes(range(256)) * 16  # one 4 KiB "image"
    signed_by = {i: sbv2.sign_image(data, [key]) for i, key in enumerate(keys)}

    for signed in signed_by.values():
        assert sbv2.verify_image_signatures(signed, len(data), efuses.trusted_key_digests()).ok

    efuses.revoke_secure_boot_key(0)
    trusted = efuses.trusted_key_digests()
    assert trusted == [sbv2.key_digest(keys[1].public_key())]
    refused = sbv2.verify_image_signatures(signed_by[0], len(data), trusted)
    assert not refused.ok and refused.esp_err == "ESP_ERR_IMAGE_INVALID"
    assert sbv2.verify_image_signatures(signed_by[1], len(data), trusted).ok
    # an image signed with both keys still verifies through the key that is left
    both = sbv2.sign_image(data, keys)
    assert sbv2.verify_image_signatures(both, len(data), trusted).verified_block == 1


def test_esp32_cannot_revoke_and_index_must_exist():
    with pytest.raises(EspError) as err:
        Efuses.default("esp32").revoke_secure_boot_key(0)
    assert err.value.esp_err == "ESP_ERR_NOT_SUPPORTED"
    with pytest.raises(EspError) as err:
        Efuses.default("esp32c3").revoke_secure_boot_key(3)
    assert err.value.esp_err == "ESP_ERR_INVALID_ARG"
