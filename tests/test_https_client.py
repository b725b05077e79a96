"""The esp_http_client look-alike against the real test server: TLS trust rules, headers, reads."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time

import pytest

from esp_ota_emu.errors import EspError
from esp_ota_emu.https_ota.client import HttpClient, mbedtls_name_matches, ssl_context
from esp_ota_emu.https_ota.config import HttpConfig
from esp_ota_emu.idf_release import parse_release
from esp_ota_emu.testserver import Faults, TlsFiles, make_ca, make_cert, serve_files

V5 = parse_release("v5")

DATA = bytes(range(251)) * 1000  # 251000 bytes, not a multiple of any buffer size


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with a valid, an expired and a wrong-name server certificate, a foreign CA, a client cert."""
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca()
    ca.write(folder, "ca")
    make_ca("someone else").write(folder, "foreign")
    for stem, cert in {
        "good": make_cert(ca),
        "expired": make_cert(ca, expired=True),
        "othername": make_cert(ca, ("ota.example.com",)),
        "client": make_cert(ca, (), client=True),
    }.items():
        cert.write(folder, stem)
    return folder


def _tls(pki, stem):
    return TlsFiles(pki / "ca.pem", pki / f"{stem}.pem", pki / f"{stem}.key")


def _open(url, **options):
    client = HttpClient(HttpConfig(url=url, **options), V5)
    try:
        client.open()
        return client.status_code, client.read(len(DATA) + 1)
    finally:
        client.cleanup()


def _connect_error(url, **options) -> str:
    with pytest.raises(EspError) as info:
        _open(url, **options)
    assert info.value.esp_err == "ESP_ERR_HTTP_CONNECT"
    return info.value.message


def test_trust_rules(pki):
    ca = (pki / "ca.pem").read_text()
    with serve_files({"a.bin": DATA}, tls=_tls(pki, "good")) as srv:
        assert _open(srv.url("a.bin"), cert_pem=ca) == (200, DATA)
        assert "certificate" in _connect_error(srv.url("a.bin"), cert_pem=(pki / "foreign.pem").read_text())
        assert "certificate" in _connect_error(srv.url("a.bin"), crt_bundle=True)  # not in the public bundle
    with serve_files({"a.bin": DATA}, tls=_tls(pki, "expired")) as srv:
        # ESP-IDF's mbedTLS ignores validity dates unless CONFIG_MBEDTLS_HAVE_TIME_DATE is set
        assert _open(srv.url("a.bin"), cert_pem=ca) == (200, DATA)
        assert "expired" in _connect_error(srv.url("a.bin"), cert_pem=ca, cert_expiry_check=True)
    with serve_files({"a.bin": DATA}, tls=_tls(pki, "othername")) as srv:
        assert "mismatch" in _connect_error(srv.url("a.bin"), cert_pem=ca)
        # the chain is still checked when the name is not, and the name can be given explicitly
        assert _open(srv.url("a.bin"), cert_pem=ca, skip_cert_common_name_check=True) == (200, DATA)
        assert _open(srv.url("a.bin"), cert_pem=ca, common_name="ota.example.com") == (200, DATA)
        _connect_error(srv.url("a.bin"), cert_pem=ca, common_name="wrong.example.com")
        _connect_error(srv.url("a.bin"), cert_pem=(pki / "foreign.pem").read_text(), skip_cert_common_name_check=True)


def test_trust_stops_at_any_ca_in_cert_pem_as_mbedtls_does(tmp_path):
    """mbedTLS ends the chain at the first certificate of cert_pem it meets: an intermediate CA given as
    cert_pem is enough (OpenSSL alone would want the root). A leaf certificate that is not self-issued
    trusts nothing, even the server's own."""
    root = make_ca()
    intermediate = make_ca("esp-ota-emu intermediate CA", root)
    server = make_cert(intermediate)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(server.cert_pem + intermediate.cert_pem)
    server.write(tmp_path, "server")
    root.write(tmp_path, "root")
    with serve_files({"a.bin": DATA}, tls=TlsFiles(tmp_path / "root.pem", chain, tmp_path / "server.key")) as srv:
        assert _open(srv.url("a.bin"), cert_pem=root.cert_pem.decode()) == (200, DATA)
        assert _open(srv.url("a.bin"), cert_pem=intermediate.cert_pem.decode()) == (200, DATA)
        assert "issuer" in _connect_error(srv.url("a.bin"), cert_pem=server.cert_pem.decode())
        # a cert_pem holding the leaf and the intermediate trusts through the intermediate
        both = (server.cert_pem + intermediate.cert_pem).decode()
        assert _open(srv.url("a.bin"), cert_pem=both) == (200, DATA)


def _server_cert(ca, names, common_name="127.0.0.1"):
    """A server certificate signed by ``ca`` with exactly these subjectAltNames (None: no extension)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from esp_ota_emu.testserver.certs import CertKey

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca.cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1)))
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return CertKey(builder.sign(ca.key, hashes.SHA256()), key)


def test_server_name_is_checked_as_mbedtls_does(tmp_path):
    """esp-tls hands the URL's host to mbedTLS. mbedTLS 3.5 (ESP-IDF v5.0.5, v5.1.2, v5.2) matches an
    IP address against iPAddress names; before, only a dNSName spelling it, or the CN of a certificate
    without subjectAltName, matches. OpenSSL would accept only the iPAddress."""
    import ipaddress

    from cryptography import x509

    ca = make_ca()
    ca.write(tmp_path, "ca")
    loopback = ipaddress.ip_address("127.0.0.1")
    certs = {
        "ip-only": [x509.IPAddress(loopback), x509.DNSName("localhost")],
        "dns-spelling": [x509.DNSName("127.0.0.1")],
        "no-san": None,
        "other-ip": [x509.IPAddress(ipaddress.ip_address("10.0.0.1"))],
    }
    outcome = {}
    for stem, names in certs.items():
        _server_cert(ca, names).write(tmp_path, stem)
        with serve_files({"a.bin": DATA}, tls=_tls(tmp_path, stem)) as srv:
            for release in ("v5.0.4", "v5.0.5"):
                client = HttpClient(HttpConfig(url=srv.url("a.bin"), cert_pem=ca.cert_pem.decode()),
                                    parse_release(release))
                try:
                    client.open()
                    outcome[stem, release] = client.status_code
                except EspError as err:
                    assert err.esp_err == "ESP_ERR_HTTP_CONNECT" and "hostname mismatch" in err.message
                    outcome[stem, release] = "mismatch"
                finally:
                    client.cleanup()
    assert outcome == {
        ("ip-only", "v5.0.4"): "mismatch", ("ip-only", "v5.0.5"): 200,
        ("dns-spelling", "v5.0.4"): 200, ("dns-spelling", "v5.0.5"): 200,
        ("no-san", "v5.0.4"): 200, ("no-san", "v5.0.5"): 200,
        ("other-ip", "v5.0.4"): "mismatch", ("other-ip", "v5.0.5"): "mismatch",
    }


@pytest.mark.parametrize("pattern,name,match", [
    ("ota.example.com", "OTA.Example.com", True), ("*.example.com", "ota.example.com", True),
    ("*.example.com", "example.com", False), ("*.example.com", "a.b.example.com", False),
    ("*.", "a.", False), ("ota*.example.com", "ota1.example.com", False),
])
def test_mbedtls_wildcards(pattern, name, match):
    from cryptography import x509

    cert = _server_cert(make_ca(), [x509.DNSName(pattern)]).cert
    assert mbedtls_name_matches(cert, name, ip_san=True) is match


def test_mutual_tls(pki):
    ca = (pki / "ca.pem").read_text()
    with serve_files({"a.bin": DATA}, tls=_tls(pki, "good"), client_ca=pki / "ca.pem") as srv:
        _connect_error(srv.url("a.bin"), cert_pem=ca)
        assert _open(srv.url("a.bin"), cert_pem=ca, client_cert=pki / "client.pem", client_key=pki / "client.key") == (200, DATA)


def test_a_replaced_client_certificate_is_used(pki, tmp_path):
    """TLS settings are shared between connections, but not past a change of the client certificate file."""
    ca = (pki / "ca.pem").read_text()
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes((pki / "client.pem").read_bytes())
    key.write_bytes((pki / "client.key").read_bytes())
    with serve_files({"a.bin": DATA}, tls=_tls(pki, "good"), client_ca=pki / "ca.pem") as srv:
        assert _open(srv.url("a.bin"), cert_pem=ca, client_cert=cert, client_key=key) == (200, DATA)
        make_cert(make_ca("someone else"), (), client=True).write(tmp_path, "client")  # same paths, foreign CA
        stamp = cert.stat().st_mtime_ns + 10**9
        os.utime(cert, ns=(stamp, stamp))
        _connect_error(srv.url("a.bin"), cert_pem=ca, client_cert=cert, client_key=key)


def test_request_headers_are_the_devices(pki):
    ca = (pki / "ca.pem").read_text()
    with serve_files({"a.bin": DATA}, tls=_tls(pki, "good")) as srv:
        _open(srv.url("a.bin") + "?v=2", cert_pem=ca, headers=(("X-Device", "42"),))
        _open(srv.url("a.bin"), cert_pem=ca, user_agent="fw-updater/3")
        first, second = srv.requests
    assert first.path == "/a.bin?v=2"
    assert dict(first.headers) == {"Host": f"127.0.0.1:{srv.port}", "User-Agent": "ESP32 HTTP Client/1.0", "X-Device": "42"}
    assert second.header("User-Agent") == "fw-updater/3"


@pytest.mark.parametrize("chunked", [False, True])
def test_read_fills_the_buffer_until_the_body_ends(pki, chunked):
    """esp_http_client_read returns exactly the length asked for, except for the last piece."""
    with serve_files({"a.bin": DATA}, tls=_tls(pki, "good"), faults=Faults(chunked=chunked)) as srv:
        client = HttpClient(HttpConfig(url=srv.url("a.bin"), cert_pem=(pki / "ca.pem").read_text()), V5)
        client.open()
        assert client.content_length == (-1 if chunked else len(DATA)) and client.is_chunked == chunked
        sizes, got = [], b""
        while piece := client.read(1000 if len(got) < 50_000 else 4096):
            sizes.append(len(piece))
            got += piece
        assert client.is_complete_data_received()
        client.cleanup()
    assert got == DATA
    assert set(sizes[:-1]) <= {1000, 4096} and sizes[-1] == (len(DATA) - 50_000) % 4096


def test_truncated_body_is_not_complete(pki):
    with serve_files({"a.bin": DATA}, tls=_tls(pki, "good"), faults=Faults(drop_after=10_000)) as srv:
        client = HttpClient(HttpConfig(url=srv.url("a.bin"), cert_pem=(pki / "ca.pem").read_text()), V5)
        client.open()
        got = b""
        while piece := client.read(4096):
            got += piece
        assert got == DATA[:10_000] and not client.is_complete_data_received()
        assert "10000" in client.body_error
        client.cleanup()


def test_connection_refused():
    with serve_files({"a.bin": DATA}, tls=False) as srv:
        url = srv.url("a.bin")
    assert "could not connect" in _connect_error(url, timeout_ms=500)


def _tls_server(pki, records: list[bytes], then: bytes = b""):
    """A one-connection TLS server on loopback: it sends each of ``records`` with its own write (one TLS
    record each), then ``then`` as raw bytes on the TCP connection, past TLS, and waits for the client
    to go away."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki / "good.pem", pki / "good.key")
    listener = socket.create_server(("127.0.0.1", 0))
    sent = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with server_context.wrap_socket(conn, server_side=True) as tls:
            for record in records:
                tls.sendall(record)
            socket.socket.sendall(tls, then)
            sent.set()
            try:
                tls.recv(1)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, sent, thread


def _receive_all_sent(pki, records: list[bytes], then: bytes = b""):
    """Connect as the device does, wait until everything the server sends is in the socket buffer,
    then yield the TLS socket."""
    listener, sent, thread = _tls_server(pki, records, then)
    context = ssl_context(HttpConfig(url="https://127.0.0.1/", cert_pem=(pki / "ca.pem").read_text()))
    with listener, socket.create_connection(listener.getsockname()) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert sent.wait(5)
            time.sleep(0.05)  # loopback: every byte has arrived
            yield tls
    thread.join(5)


def test_a_receive_takes_every_record_that_has_arrived(pki):
    """One receive returns all TLS records already there (up to the size asked for), not one record."""
    records = [bytes([i]) * 1000 for i in range(20)]
    for tls in _receive_all_sent(pki, records):
        assert tls.recv(5500) == b"".join(records)[:5500]  # six records, the last one cut
        assert tls.recv(1 << 20) == b"".join(records)[5500:]


def test_an_error_after_some_records_comes_with_the_next_receive(pki):
    """A broken record met while taking more records: the bytes read so far first, then the error."""
    records = [bytes([i]) * 1000 for i in range(5)]
    forged = bytes([0x17, 0x03, 0x03, 0x00, 0x20]) + bytes(0x20)  # application data that fails its MAC
    for tls in _receive_all_sent(pki, records, forged):
        assert tls.recv(1 << 20) == b"".join(records)
        with pytest.raises(ssl.SSLError, match="BAD_RECORD_MAC|DECRYPTION_FAILED"):
            tls.recv(1 << 20)
