"""The OTA test server on its own, checked with httpx as an independent client (and the serve command)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from esp_ota_emu.testserver import Faults, TlsFiles, make_ca, make_cert, serve_files

DATA = bytes(range(256)) * 600  # 153600 bytes


def _trust(ca_pem) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_pem))


def _get(srv, name="app.bin", **kw):
    return httpx.get(srv.url(name), verify=_trust(srv.tls.ca_pem), **kw)


def test_get_head_and_ranges():
    with serve_files({"app.bin": DATA}) as srv:
        assert _get(srv).content == DATA
        head = httpx.head(srv.url("app.bin"), verify=_trust(srv.tls.ca_pem))
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(DATA)
        r = _get(srv, headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == DATA[100:200]
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(DATA)}"
        assert _get(srv, headers={"Range": "bytes=153000-"}).content == DATA[153000:]
        assert _get(srv, headers={"Range": "bytes=-10"}).content == DATA[-10:]
        r = _get(srv, headers={"Range": f"bytes={len(DATA)}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(DATA)}"
        assert _get(srv, "missing.bin").status_code == 404
        assert [(q.method, q.range, q.status) for q in srv.requests] == [
            ("GET", None, 200), ("HEAD", None, 200), ("GET", "bytes=100-199", 206), ("GET", "bytes=153000-", 206),
            ("GET", "bytes=-10", 206), ("GET", f"bytes={len(DATA)}-", 416), ("GET", None, 404),
        ]


def test_basic_and_digest_auth_against_httpx():
    with serve_files({"app.bin": DATA}, auth=("user", "pw")) as srv:
        assert _get(srv).status_code == 401
        assert _get(srv, auth=("user", "wrong")).status_code == 401
        assert _get(srv, auth=("user", "pw")).content == DATA
    # httpx's own Digest implementation is the oracle for the server's digest check.
    with serve_files({"app.bin": DATA}, auth=("user", "pw"), auth_scheme="Digest") as srv:
        r = _get(srv)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Digest ")
        assert _get(srv, auth=httpx.DigestAuth("user", "pw")).content == DATA
        assert _get(srv, auth=httpx.DigestAuth("user", "nope")).status_code == 401


def test_faults():
    faults = Faults()
    with serve_files({"app.bin": DATA}, faults=faults) as srv:
        faults.drop_after = 5000
        with pytest.raises(httpx.RemoteProtocolError, match="received 5000 bytes"):
            _get(srv)
        faults.drop_after = None
        faults.ignore_range = True
        r = _get(srv, headers={"Range": "bytes=10-"})
        assert r.status_code == 200 and r.content == DATA
        faults.ignore_range = False
        faults.range_not_satisfiable = True
        assert _get(srv, headers={"Range": "bytes=10-"}).status_code == 416
        faults.range_not_satisfiable = False
        faults.chunked = True
        r = _get(srv)
        assert "Content-Length" not in r.headers and r.headers["Transfer-Encoding"] == "chunked" and r.content == DATA
        faults.chunked = False
        faults.redirects = 3
        r = httpx.get(srv.url("app.bin"), verify=_trust(srv.tls.ca_pem), follow_redirects=True)
        assert r.content == DATA and [h.status_code for h in r.history] == [302, 302, 302]
        for sent in ("", "app.bin"):
            faults.redirect_location = sent
            r = _get(srv)
            assert r.status_code == 302 and r.headers.get("Location", "") == sent
        faults.redirect_location = None
        faults.redirects, faults.status = 0, 503
        assert _get(srv).status_code == 503
        faults.status, faults.content_length_delta = None, 100
        with pytest.raises(httpx.RemoteProtocolError):
            _get(srv)
        faults.content_length_delta = 0
        faults.reject_content_length = True
        assert _get(srv, headers={"Content-Length": "0"}).status_code == 400 and _get(srv).status_code == 200
        faults.reject_content_length = False
        for sent in ("", "bytes 0-9/*"):
            faults.content_range = sent
            r = _get(srv, headers={"Range": "bytes=0-9"})
            assert r.status_code == 206 and r.headers.get("Content-Range", "") == sent and r.content == DATA[:10]


def test_certificates(tmp_path):
    ca = make_ca()
    expired = make_cert(ca, expired=True)
    assert expired.cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc)
    ca.write(tmp_path, "ca")
    cert, key = expired.write(tmp_path, "expired")
    tls = TlsFiles(tmp_path / "ca.pem", cert, key)
    with serve_files({"app.bin": DATA}, tls=tls) as srv:
        with pytest.raises(httpx.ConnectError, match="expired"):
            _get(srv)
    cert, key = make_cert(ca, ("other.example",)).write(tmp_path, "other")
    with serve_files({"app.bin": DATA}, tls=TlsFiles(tmp_path / "ca.pem", cert, key)) as srv:
        with pytest.raises(httpx.ConnectError, match="IP address mismatch|hostname"):
            _get(srv)


def test_client_certificate_required(tmp_path):
    ca = make_ca("client CA")
    ca.write(tmp_path, "client-ca")
    client_cert, client_key = make_cert(ca, (), client=True).write(tmp_path, "client")
    with serve_files({"app.bin": DATA}, client_ca=tmp_path / "client-ca.pem") as srv:
        with pytest.raises(httpx.TransportError):
            _get(srv)
        context = _trust(srv.tls.ca_pem)
        context.load_cert_chain(client_cert, client_key)
        assert httpx.get(srv.url("app.bin"), verify=context).content == DATA


def test_serve_command(tmp_path):
    (tmp_path / "app.bin").write_bytes(DATA)
    exe = Path(sys.executable).with_name("esp-ota-emu")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", "0", "--tls-dir", str(tmp_path / "certs"), "--auth", "u:p",
         "--content-range", "", "--redirects", "1", "--redirect-location", "", str(tmp_path / "app.bin")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ca_line = proc.stdout.readline()
        url = proc.stdout.readline().strip()
        ca = ca_line.rsplit(": ", 1)[1].strip()
        assert Path(ca) == (tmp_path / "certs" / "ca.pem").resolve() and url.endswith("/app.bin")
        assert httpx.get(url, verify=_trust(ca)).status_code == 401
        moved = httpx.get(url, verify=_trust(ca), auth=("u", "p"))
        assert moved.status_code == 302 and "Location" not in moved.headers
        last_hop = url.replace("/app.bin", "/_redirect/0/app.bin")  # the path of the hop that serves the file
        assert httpx.get(last_hop, verify=_trust(ca), auth=("u", "p")).content == DATA
        ranged = httpx.get(last_hop, verify=_trust(ca), auth=("u", "p"), headers={"Range": "bytes=0-9"})
        assert ranged.status_code == 206 and "Content-Range" not in ranged.headers
    finally:
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 0
