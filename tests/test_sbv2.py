"""Secure Boot V2: espsecure's signed vectors verify, tampering fails, signing is espsecure's format
(cross-checked both ways with espsecure), ESP-IDF's trust rules (eFuse digests, block 0 only, scheme)."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from esp_ota_emu.errors import EspError, InputError
from esp_ota_emu.formats.signature import (
    SIG_BLOCK_SIZE,
    SIG_SECTOR_SIZE,
    block_crc,
    parse_signature_block,
    parse_signature_sector,
)
from esp_ota_emu.image import parse_image
from esp_ota_emu.security import sbv2
from esp_ota_emu.security.keys import load_private_key, load_public_key

KINDS = ["rsa", "ecdsa192", "ecdsa256", "ecdsa384"]
ESPSECURE = [str(Path(sys.executable).with_name("espsecure"))]


@pytest.fixture(scope="module")
def sec(realdata) -> Path:
    return realdata / "esptool" / "secure_images"


def pub(sec: Path, kind: str, n: str = ""):
    return load_public_key((sec / f"{kind}_secure_boot_signing_pubkey{n}.pem").read_bytes())


def priv(sec: Path, kind: str, n: str = ""):
    return load_private_key((sec / f"{kind}_secure_boot_signing_key{n}.pem").read_bytes())


def espsecure(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ESPSECURE, *args], capture_output=True, text=True)


def test_crc_init_is_zero():
    assert block_crc(bytes(1196)) == 0x6B691BC6  # spec 12.5


@pytest.mark.parametrize("kind", KINDS)
def test_espsecure_signed_vectors_verify(sec, kind):
    for name in (f"bootloader_signed_v2_{kind}.bin", f"bootloader_multi_signed_v2_{kind}.bin"):
        data = (sec / name).read_bytes()
        check = sbv2.verify_signed_file(data, pub(sec, kind))
        assert check.ok and check.verified_block == 0, check.reason
        # ESP-IDF's view: the sector follows the 4 KiB-aligned image.
        image_len = parse_image(data).image_len
        assert sbv2.align_up(image_len) == len(data) - SIG_SECTOR_SIZE
        assert sbv2.verify_image_signatures(data, image_len, [sbv2.key_digest(pub(sec, kind))]).ok


@pytest.mark.parametrize("kind", KINDS)
def test_multi_signed_each_key_verifies_its_block(sec, kind):
    data = (sec / f"bootloader_multi_signed_v2_{kind}.bin").read_bytes()
    blocks = parse_signature_sector(memoryview(data)[-SIG_SECTOR_SIZE:])
    assert [b["index"] for b in blocks] == [0, 1, 2] and all(b["valid"] for b in blocks)
    for index, n in enumerate(["", "2", "3"]):
        key = priv(sec, kind, n).public_key()
        assert blocks[index]["key_digest"] == sbv2.key_digest(key).hex()
        check = sbv2.verify_signed_file(data, key)
        assert check.ok and check.verified_block == index
    # ESP32 and "signed apps without secure boot" look at block 0 only.
    key2 = sbv2.key_digest(priv(sec, kind, "2").public_key())
    image_len = len(data) - SIG_SECTOR_SIZE
    assert sbv2.verify_image_signatures(data, image_len, [key2]).verified_block == 1
    only0 = sbv2.verify_image_signatures(data, image_len, [key2], only_block0=True)
    assert not only0.ok and [v.status for v in only0.blocks] == ["untrusted"]


def test_key_digests_match_the_test_digest_files(sec):
    assert sbv2.key_digest(pub(sec, "rsa")) == (sec / "rsa_public_key_digest.bin").read_bytes()
    for kind in ("ecdsa192", "ecdsa256"):
        digest = (sec / f"{kind}_public_key_digest_v2.bin").read_bytes()
        assert sbv2.key_digest(priv(sec, kind, "_v2").public_key()) == digest


@pytest.mark.parametrize("kind", KINDS)
def test_key_digest_equals_espsecure_output(sec, kind, tmp_path):
    out = tmp_path / "digest.bin"
    res = espsecure("digest-sbv2-public-key", "--keyfile", str(sec / f"{kind}_secure_boot_signing_pubkey.pem"),
                    "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert sbv2.key_digest(pub(sec, kind)) == out.read_bytes()


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def _refresh_crc(data: bytes, block_start: int) -> bytes:
    block = bytearray(data[block_start : block_start + SIG_BLOCK_SIZE])
    block[1196:1200] = block_crc(bytes(block)).to_bytes(4, "little")
    return data[:block_start] + bytes(block) + data[block_start + SIG_BLOCK_SIZE :]


@pytest.mark.parametrize("kind", KINDS)
def test_tampered_copies_fail(sec, kind):
    data = (sec / f"bootloader_signed_v2_{kind}.bin").read_bytes()
    key = pub(sec, kind)
    sector = len(data) - SIG_SECTOR_SIZE
    image = sbv2.verify_signed_file(_flip(data, 0x100), key)  # one image bit
    assert not image.ok and image.blocks[0].status == "digest-mismatch"
    crc = sbv2.verify_signed_file(_flip(data, sector + 600), key)  # inside the block, CRC now wrong
    assert not crc.ok and crc.blocks[0].status == "invalid" and "CRC" in crc.reason
    sig_offset = {"rsa": 812 + 10, "ecdsa384": 52 + 97 + 5}.get(kind, 36 + 65 + 5)
    forged = _refresh_crc(_flip(data, sector + sig_offset), sector)  # signature bit, CRC fixed
    check = sbv2.verify_image_signatures(forged, sector)
    assert not check.ok and check.blocks[0].status in ("bad-signature", "bad-key")
    with pytest.raises(EspError) as err:
        check.raise_for_failure()
    assert err.value.esp_err == "ESP_ERR_IMAGE_INVALID"


def test_trust_rules(sec):
    data = (sec / "bootloader_signed_v2_ecdsa256.bin").read_bytes()
    image_len = len(data) - SIG_SECTOR_SIZE
    none = sbv2.verify_image_signatures(data, image_len, [])
    assert not none.ok and none.esp_err == "ESP_FAIL"  # "Could not read secure boot digests!"
    assert sbv2.verify_image_signatures(data, image_len).ok  # first boot: the image's own keys
    wrong = sbv2.verify_image_signatures(data, image_len, scheme="RSA")
    assert not wrong.ok and wrong.blocks[0].status == "wrong-scheme"
    assert sbv2.verify_image_signatures(data, image_len, scheme="ECDSA").ok
    # The sector must be inside the data.
    assert not sbv2.verify_image_signatures(data[: image_len + 100], image_len).ok
    # The padding between image and sector is signed too, whatever it holds.
    unsigned = (sec / "bootloader_unsigned_v2.bin").read_bytes()
    assert not sbv2.verify_image_signatures(unsigned, len(unsigned) - SIG_SECTOR_SIZE).ok


def test_wrong_key_type_is_clear(sec):
    data = (sec / "bootloader_signed_v2_rsa.bin").read_bytes()
    check = sbv2.verify_signed_file(data, pub(sec, "ecdsa256"))
    assert not check.ok
    assert check.reason == "no signature block is made with this key (ECDSA P-256; the image has RSA block(s))"
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    with pytest.raises(InputError, match="RSA-3072"):
        sbv2.sign_image(b"x", [rsa.generate_private_key(65537, 2048)])
    with pytest.raises(InputError, match="P-192, P-256 or P-384"):
        sbv2.sign_image(b"x", [ec.generate_private_key(ec.SECP521R1())])


@pytest.mark.parametrize("kind", KINDS)
def test_our_signature_is_espsecures_format(sec, kind, tmp_path):
    src = sec / "bootloader.bin"
    ours = sbv2.sign_image(src.read_bytes(), [priv(sec, kind)])
    theirs_path = tmp_path / "theirs.bin"
    res = espsecure("sign-data", "--version", "2", "--keyfile", str(sec / f"{kind}_secure_boot_signing_key.pem"),
                    "-o", str(theirs_path), str(src))
    assert res.returncode == 0, res.stderr
    theirs = theirs_path.read_bytes()
    assert len(ours) == len(theirs) and ours[:-SIG_SECTOR_SIZE] == theirs[:-SIG_SECTOR_SIZE]
    assert ours[-SIG_SECTOR_SIZE + SIG_BLOCK_SIZE :] == theirs[-SIG_SECTOR_SIZE + SIG_BLOCK_SIZE :]  # 0xFF fill
    a = parse_signature_block(ours[-SIG_SECTOR_SIZE : -SIG_SECTOR_SIZE + SIG_BLOCK_SIZE])
    b = parse_signature_block(theirs[-SIG_SECTOR_SIZE : -SIG_SECTOR_SIZE + SIG_BLOCK_SIZE])
    # Everything but the (randomised) signature is identical.
    assert (a.magic_byte, a.version, a.sha_type, a.image_digest, a.key_bytes) == (
        b.magic_byte, b.version, b.sha_type, b.image_digest, b.key_bytes)
    assert a.crc_ok and b.crc_ok
    # espsecure accepts ours, we accept espsecure's.
    ours_path = tmp_path / "ours.bin"
    ours_path.write_bytes(ours)
    res = espsecure("verify-signature", "--version", "2", "--keyfile",
                    str(sec / f"{kind}_secure_boot_signing_pubkey.pem"), str(ours_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert sbv2.verify_signed_file(theirs, pub(sec, kind)).ok


def test_append_signatures_interoperates(sec, tmp_path):
    data = (sec / "bootloader.bin").read_bytes()
    one = sbv2.sign_image(data, [priv(sec, "ecdsa256")])
    two = sbv2.sign_image(one, [priv(sec, "ecdsa256", "2")], append_signatures=True)
    assert len(two) == len(one) and two[: len(one) - SIG_SECTOR_SIZE + SIG_BLOCK_SIZE] == one[
        : len(one) - SIG_SECTOR_SIZE + SIG_BLOCK_SIZE]
    two_path, three_path = tmp_path / "two.bin", tmp_path / "three.bin"
    two_path.write_bytes(two)
    res = espsecure("sign-data", "--version", "2", "--append-signatures", "--keyfile",
                    str(sec / "ecdsa256_secure_boot_signing_key3.pem"), "-o", str(three_path), str(two_path))
    assert res.returncode == 0, res.stderr
    three = three_path.read_bytes()
    for index, n in enumerate(["", "2", "3"]):
        assert sbv2.verify_signed_file(three, priv(sec, "ecdsa256", n).public_key()).verified_block == index
    with pytest.raises(InputError, match="already holds 3"):
        sbv2.sign_image(three, [priv(sec, "ecdsa256", "4")], append_signatures=True)
    with pytest.raises(InputError, match="2 signatures but only 1 free signature block"):
        sbv2.sign_image(two, [priv(sec, "ecdsa256", "3"), priv(sec, "ecdsa256", "4")], append_signatures=True)


def test_derived_c6_app_verifies_where_idf_looks(realdata, sec):
    data = (realdata / "derived" / "esp32c6_zb_pzem.sbv2_ecdsa256_signed.bin").read_bytes()
    image = parse_image(data)
    check = sbv2.verify_image_signatures(data, image.image_len, [sbv2.key_digest(pub(sec, "ecdsa256"))],
                                         scheme="ECDSA")
    assert check.ok and check.sig_offset == image.signature_sector_offset
    assert zlib.crc32(data[check.sig_offset : check.sig_offset + 1196]) == int.from_bytes(
        data[check.sig_offset + 1196 : check.sig_offset + 1200], "little")


@pytest.mark.parametrize("kind", KINDS)
def test_precalculated_signatures_match_espsecure(sec, kind, tmp_path):
    """espsecure's pre-calculated signatures over bootloader_unsigned_v2.bin give the same bytes here."""
    data = (sec / "bootloader_unsigned_v2.bin").read_bytes()
    sig = sec / f"pre_calculated_bootloader_signature_{kind}.bin"
    ours = sbv2.sign_image(data, signatures=[(pub(sec, kind), sig.read_bytes())])
    out = tmp_path / "theirs.bin"
    res = espsecure("sign-data", "--version", "2", "--pub-key", str(sec / f"{kind}_secure_boot_signing_pubkey.pem"),
                    "--signature", str(sig), "-o", str(out), str(sec / "bootloader_unsigned_v2.bin"))
    assert res.returncode == 0, res.stderr
    assert ours == out.read_bytes()
    assert sbv2.verify_signed_file(ours, pub(sec, kind)).ok
    with pytest.raises(InputError, match="not made over this data"):
        sbv2.sign_image(data[:-4096] + bytes(4096), signatures=[(pub(sec, kind), sig.read_bytes())])
    with pytest.raises(InputError, match="multiple of 4096"):
        sbv2.sign_image(data[:-1], signatures=[(pub(sec, kind), sig.read_bytes())])


def test_app_update_trust(sec):
    from esp_ota_emu.efuse import Efuses

    multi = (sec / "bootloader_multi_signed_v2_ecdsa256.bin").read_bytes()
    single = (sec / "bootloader_signed_v2_ecdsa256.bin").read_bytes()
    n = len(multi) - SIG_SECTOR_SIZE
    key2 = sbv2.key_digest(priv(sec, "ecdsa256", "2").public_key())
    c3 = Efuses.default("esp32c3")
    c3.burn_secure_boot_key_digest(key2)
    c3.enable_secure_boot_v2()
    assert sbv2.verify_app_update(multi, n, c3, scheme="ECDSA").verified_block == 1
    c3.revoke_secure_boot_key(0)
    assert sbv2.verify_app_update(multi, n, c3).esp_err == "ESP_FAIL"
    esp32 = Efuses.default("esp32")
    esp32.burn_secure_boot_key_digest(key2)
    esp32.enable_secure_boot_v2()
    assert not sbv2.verify_app_update(multi, n, esp32).ok  # the ESP32 looks at block 0 only
    # Signed apps without secure boot: the running app's keys, block 0 of the new image.
    fresh = Efuses.default("esp32")
    assert sbv2.image_key_digests(single, n) == [sbv2.key_digest(pub(sec, "ecdsa256"))]
    assert sbv2.verify_app_update(multi, n, fresh, running=(single, n)).verified_block == 0
    only_key2 = sbv2.sign_image(single[:n], [priv(sec, "ecdsa256", "2")])
    assert not sbv2.verify_app_update(only_key2, n, fresh, running=(single, n)).ok
    assert sbv2.verify_app_update(only_key2, n, fresh, running=(only_key2, n)).ok
    assert sbv2.verify_app_update(single, n, fresh, running=(single, n), scheme="RSA").esp_err == "ESP_FAIL"
    assert sbv2.verify_app_update(single, n, fresh).esp_err == "ESP_FAIL"


def test_boot_trust(sec):
    from esp_ota_emu.efuse import Efuses

    data = (sec / "bootloader_signed_v2_rsa.bin").read_bytes()
    n = len(data) - SIG_SECTOR_SIZE
    first_boot = Efuses.default("esp32")
    assert sbv2.verify_at_boot(data, n, first_boot).ok  # no digest yet: the image's own key
    first_boot.enable_secure_boot_v2()
    assert sbv2.verify_at_boot(data, n, first_boot).esp_err == "ESP_FAIL"
    other = Efuses.default("esp32")
    other.burn_secure_boot_key_digest(sbv2.key_digest(pub(sec, "rsa", "2")))
    assert sbv2.verify_at_boot(data, n, other).blocks[0].status == "untrusted"
    burned = Efuses.default("esp32")
    burned.burn_secure_boot_key_digest((sec / "rsa_public_key_digest.bin").read_bytes())
    burned.enable_secure_boot_v2()
    assert sbv2.verify_at_boot(data, n, burned, scheme="RSA").ok


def test_rsa_reserved_bytes_are_ignored(sec):
    """ESP-IDF checks magic, CRC and version only: an RSA block with non-zero reserved bytes still counts."""
    data = bytearray((sec / "bootloader_signed_v2_rsa.bin").read_bytes())
    sector = len(data) - SIG_SECTOR_SIZE
    data[sector + 2] = 1
    data[sector + 3] = 0x55
    fixed = _refresh_crc(bytes(data), sector)
    check = sbv2.verify_image_signatures(fixed, sector, [sbv2.key_digest(pub(sec, "rsa"))])
    assert check.ok, check.reason
    assert parse_signature_sector(fixed[sector:])[0]["hash"] == "sha256"
