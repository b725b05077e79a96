"""Loading the PEM keys the security commands take (private or public, RSA or EC)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import InputError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def load_private_key(pem: bytes) -> PrivateKey:
    """A PEM private key (PKCS#1, SEC1 or PKCS#8, unencrypted), RSA or EC."""
    try:
        key = serialization.load_pem_private_key(bytes(pem), password=None)
    except (ValueError, TypeError) as err:
        raise InputError(f"not a usable PEM private key ({_reason(err)})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise InputError(f"unsupported private key type {type(key).__name__}: only RSA and EC keys are used")
    return key


def load_public_key(pem: bytes) -> PublicKey:
    """The public key of a PEM file holding either a public key or a private key (RSA or EC)."""
    pem = bytes(pem)
    if b"PRIVATE KEY-----" in pem:
        return load_private_key(pem).public_key()
    if b"-----BEGIN CERTIFICATE-----" in pem:
        try:
            key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError as err:
            raise InputError(f"not a usable PEM certificate ({_reason(err)})") from None
    else:
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as err:
            raise InputError(f"not a usable PEM public key ({_reason(err)})") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise InputError(f"unsupported public key type {type(key).__name__}: only RSA and EC keys are used")
    return key


def describe_key(key: PrivateKey | PublicKey) -> str:
    """``RSA-3072``, ``ECDSA P-256`` ...: for error messages."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA-{key.key_size}"
    names = {"secp192r1": "P-192", "secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
    return f"ECDSA {names.get(key.curve.name, key.curve.name)}"


def _reason(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
