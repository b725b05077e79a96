"""Test certificates made with ``cryptography``: a CA, server and client certificates, and bad ones.

A device's esp-tls checks the server chain against the root given as ``cert_pem`` and the host name
against the certificate's subjectAltName; these helpers make the certificates that exercise both
(valid, expired, wrong host name, signed by an untrusted CA) plus client certificates for mutual TLS.
Keys are EC P-256 so that generating them at test time is instant.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.pem`` and ``stem.key`` into ``folder``; return both paths."""
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)
        return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(expired: bool) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    if expired:
        return now - dt.timedelta(days=30), now - dt.timedelta(days=1)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=3650)


def make_ca(common_name: str = "esp-ota-emu test CA", issuer: CertKey | None = None) -> CertKey:
    """A self-signed root CA (the certificate a device is given as ``cert_pem``), or with ``issuer``
    an intermediate CA signed by it."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(False)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    return CertKey(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def _alt_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    """Each host as a dNSName; an IP address also as an iPAddress. mbedTLS before 3.5 (ESP-IDF before
    v5.0.5, v5.1.2 and v5.2) matches an IP address only against dNSNames, OpenSSL only against
    iPAddresses: with both, devices of every release and host tools accept the certificate."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            pass
        names.append(x509.DNSName(host))
    return names


def make_cert(
    ca: CertKey, hosts: tuple[str, ...] = DEFAULT_HOSTS, *, expired: bool = False, client: bool = False
) -> CertKey:
    """A leaf certificate signed by ``ca``: a server certificate for ``hosts``, or a client certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(expired)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "esp-ota-emu client"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
    return CertKey(builder.sign(ca.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of a test server: CA (give it to the device), server certificate and key."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def ensure_tls_files(folder: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> TlsFiles:
    """Reuse ``ca.pem`` / ``server.pem`` / ``server.key`` in ``folder``, or generate them there."""
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    if all(p.is_file() for p in (files.ca_pem, files.cert_pem, files.key_pem)):
        return files
    ca = make_ca()
    ca.write(folder, "ca")
    make_cert(ca, hosts).write(folder, "server")
    return files
