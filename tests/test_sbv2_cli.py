"""``esp-ota-emu sign / verify / digest``: espsecure's formats, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from esp_ota_emu.cli.main import cli

ESPSECURE = str(Path(sys.executable).with_name("espsecure"))


@pytest.fixture(scope="module")
def sec(realdata) -> Path:
    return realdata / "esptool" / "secure_images"


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_sign_v2_multi_key_verifies_with_espsecure(sec, tmp_path):
    out = tmp_path / "signed.bin"
    keys = [f"--keyfile={sec / f'rsa_secure_boot_signing_key{n}.pem'}" for n in ("", "2")]
    res = run("sign", "--version", "2", *keys, "-o", out, sec / "bootloader.bin")
    assert res.exit_code == 0, res.output
    assert "2 block(s)" in res.output
    for n in ("", "2"):
        done = subprocess.run([ESPSECURE, "verify-signature", "--version", "2", "--keyfile",
                               str(sec / f"rsa_secure_boot_signing_pubkey{n}.pem"), str(out)], capture_output=True)
        assert done.returncode == 0
        res = run("verify", "--version", "2", "--keyfile", sec / f"rsa_secure_boot_signing_pubkey{n}.pem", out, "--json")
        assert res.exit_code == 0 and json.loads(res.output)["verified_block"] == (0 if n == "" else 1)


def test_sign_v1_is_the_vector(sec, tmp_path):
    out = tmp_path / "v1.bin"
    res = run("sign", "--version", "1", "--keyfile", sec / "ecdsa256_secure_boot_signing_key.pem", "-o", out,
              sec / "bootloader.bin")
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == (sec / "bootloader_signed.bin").read_bytes()
    res = run("verify", "--version", "1", "--keyfile", sec / "ecdsa256_secure_boot_signing_pubkey_raw.bin", out)
    assert res.exit_code == 0 and res.output.startswith("signature valid")


@pytest.mark.parametrize("kind", ["rsa", "ecdsa192", "ecdsa256", "ecdsa384"])
def test_verify_vectors_and_tampered_copies(sec, tmp_path, kind):
    signed = sec / f"bootloader_multi_signed_v2_{kind}.bin"
    res = run("verify", "--version", "2", "--keyfile", sec / f"{kind}_secure_boot_signing_pubkey.pem", signed)
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.bin"
    data = bytearray(signed.read_bytes())
    data[0x200] ^= 0xFF
    bad.write_bytes(bytes(data))
    res = run("verify", "--version", "2", "--keyfile", sec / f"{kind}_secure_boot_signing_pubkey.pem", bad)
    assert res.exit_code == 1 and res.output.startswith("error: ESP_ERR_IMAGE_INVALID:")
    assert len(res.output.strip().splitlines()) == 1


def test_wrong_key_types_give_one_line(sec):
    """espsecure dies with a traceback here; we say what is wrong."""
    res = run("verify", "--version", "2", "--keyfile", sec / "ecdsa256_secure_boot_signing_pubkey.pem",
              sec / "bootloader_signed_v2_rsa.bin")
    assert res.exit_code == 1
    assert res.output == ("error: ESP_ERR_IMAGE_INVALID: no signature block is made with this key "
                          "(ECDSA P-256; the image has RSA block(s))\n")
    res = run("verify", "--version", "1", "--keyfile", sec / "rsa_secure_boot_signing_pubkey.pem",
              sec / "bootloader_signed.bin")
    assert res.exit_code == 3
    assert res.output == "error: Secure Boot V1 signatures use ECDSA P-256 keys, this key is RSA-3072\n"
    res = run("sign", "--version", "2", "--keyfile", sec / "256bit_key.bin", "-o", "/dev/null", sec / "bootloader.bin")
    assert res.exit_code == 3 and res.output.startswith("error: not a usable PEM private key")


def test_digest_matches_espsecure_file(sec):
    res = run("digest", "--keyfile", sec / "rsa_secure_boot_signing_key.pem", "--json")
    assert json.loads(res.output)["key_digest"] == (sec / "rsa_public_key_digest.bin").read_bytes().hex()


def test_sign_with_precalculated_signature(sec, tmp_path):
    out = tmp_path / "pre.bin"
    res = run("sign", "--version", "2", "--pub-key", sec / "ecdsa384_secure_boot_signing_pubkey.pem", "--signature",
              sec / "pre_calculated_bootloader_signature_ecdsa384.bin", "-o", out, sec / "bootloader_unsigned_v2.bin")
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == (sec / "bootloader_signed_v2_ecdsa384.bin").read_bytes()
    res = run("sign", "--version", "2", "--pub-key", sec / "ecdsa384_secure_boot_signing_pubkey.pem", "-o", out,
              sec / "bootloader_unsigned_v2.bin")
    assert res.exit_code == 3 and "one key per signature" in res.output
