"""A local HTTPS test server for OTA: certificates, HEAD/Range/auth, switchable faults, request log."""

from __future__ import annotations

from .certs import CertKey, TlsFiles, ensure_tls_files, make_ca, make_cert
from .server import Faults, RecordedRequest, TestServer, files_from_paths, serve_files

__all__ = [
    "CertKey",
    "Faults",
    "RecordedRequest",
    "TestServer",
    "TlsFiles",
    "ensure_tls_files",
    "files_from_paths",
    "make_ca",
    "make_cert",
    "serve_files",
]
