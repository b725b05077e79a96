"""A real HTTPS file server for OTA tests: HEAD, Range, basic/digest auth, mutual TLS and faults.

It runs ``http.server.ThreadingHTTPServer`` in a background thread on 127.0.0.1 (ephemeral port by
default), records every request it receives, and misbehaves on demand through one mutable
:class:`Faults` object that tests switch between runs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .certs import TlsFiles, ensure_tls_files

REALM = "esp-ota-emu"
AUTH_SCHEMES = ("Basic", "Digest", "Digest-SHA-256")
_CHUNK = 64 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class Faults:
    """Switchable misbehaviour. Every field is read afresh for each request, so tests may change them
    between (or during) runs."""

    drop_after: int | None = None  # close the connection after sending this many body bytes
    ignore_range: bool = False  # answer a Range request with 200 and the whole file
    range_not_satisfiable: bool = False  # answer every Range request with 416
    content_length_delta: int = 0  # announce Content-Length = real length + delta
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length
    stall_after: int | None = None  # pause after this many body bytes...
    stall_seconds: float = 0.0  # ...for this long
    delay_headers: float = 0.0  # wait this many seconds before answering at all
    redirects: int = 0  # answer this many redirects before serving the file
    redirect_status: int = 302
    redirect_host: str | None = None  # send absolute Locations naming this host (same port) instead of paths
    redirect_location: str | None = None  # send this Location on redirects instead of the next hop ("": none)
    status: int | None = None  # answer GET and HEAD with this status and a small HTML page
    no_head: bool = False  # answer HEAD with 405
    content_encoding: str | None = None  # send this Content-Encoding header (the body is served as stored)
    content_range: str | None = None  # send this Content-Range on a 206 instead of the true one ("": none)
    reject_content_length: bool = False  # answer 400 to a GET or HEAD that carries Content-Length (AWS ELB)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    status: int
    client_port: int = 0  # the client's TCP port: requests with the same one came over one connection
    tls_version: str | None = None  # the TLS version the connection negotiated (None: plain HTTP)
    alpn: str | None = None  # "http/1.1" when the client offered it in ALPN
    sni: str | None = None  # the server name the client sent in its ClientHello

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def range(self) -> str | None:
        return self.header("Range")


@dataclass
class _Auth:
    username: str
    password: str
    scheme: str  # "Basic", "Digest" (MD5) or "Digest-SHA-256"
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    opaque: str = field(default_factory=lambda: secrets.token_hex(8))

    def challenge(self) -> str:
        if self.scheme == "Basic":
            return f'Basic realm="{REALM}"'
        algorithm = "SHA-256" if self.scheme == "Digest-SHA-256" else "MD5"
        return f'Digest realm="{REALM}", qop="auth", nonce="{self.nonce}", opaque="{self.opaque}", algorithm={algorithm}'

    def accepts(self, method: str, header: str | None) -> bool:
        if not header:
            return False
        if self.scheme == "Basic":
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return header.strip() == f"Basic {expected}"
        if not header.startswith("Digest "):
            return False
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header[7:]))
        if fields.get("username") != self.username or fields.get("nonce") != self.nonce:
            return False

        def digest(text: str) -> str:
            return (hashlib.sha256 if self.scheme == "Digest-SHA-256" else hashlib.md5)(text.encode()).hexdigest()

        ha1 = digest(f"{self.username}:{REALM}:{self.password}")
        ha2 = digest(f"{method}:{fields.get('uri', '')}")
        if fields.get("qop") == "auth":
            expected = digest(f"{ha1}:{self.nonce}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
        else:
            expected = digest(f"{ha1}:{self.nonce}:{ha2}")
        return fields.get("response") == expected


def _remember_sni(connection, server_name, context) -> None:
    connection.sni = server_name


class _LineReader:
    """The request stream, remembering the last line read: http.client's header parser also stops at
    the end of the stream, and a request cut before its blank line must not count as one."""

    def __init__(self, raw) -> None:
        self._raw = raw
        self.last_line = b""

    def readline(self, limit: int = -1) -> bytes:
        self.last_line = self._raw.readline(limit)
        return self.last_line

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = _LineReader(self.rfile)

    def parse_request(self) -> bool:
        """A request whose headers end with the connection, not with a blank line, is not answered (as
        web servers do: they wait for the rest, then drop the connection)."""
        if not super().parse_request():
            return False
        if self.rfile.last_line == b"":
            self.close_connection = True
            return False
        return True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if self.server.owner.log is not None:
            self.server.owner.log(f"{self.address_string()} {format % args}")

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    # -- helpers ---------------------------------------------------------------------------------
    def _record(self, status: int) -> None:
        tls = self.connection if isinstance(self.connection, ssl.SSLSocket) else None
        self.server.owner._record(RecordedRequest(
            self.command, self.path, tuple(self.headers.items()), status, self.client_address[1],
            tls_version=tls.version() if tls else None,
            alpn=tls.selected_alpn_protocol() if tls else None,
            sni=getattr(tls, "sni", None),
        ))

    def _simple(self, status: int, head: bool, extra: Mapping[str, str] = {}) -> None:
        body = f"<html><body><h1>{status} {self.responses.get(status, ('',))[0]}</h1></body></html>\n".encode()
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        faults = owner.faults
        path = unquote(urlsplit(self.path).path)
        if faults.delay_headers:
            time.sleep(faults.delay_headers)
        if faults.reject_content_length and "Content-Length" in self.headers:
            return self._simple(400, head)
        if head and faults.no_head:
            return self._simple(405, head)
        if owner.auth and not owner.auth.accepts(self.command, self.headers.get("Authorization")):
            return self._simple(401, head, {"WWW-Authenticate": owner.auth.challenge()})
        if faults.status is not None:
            return self._simple(faults.status, head)
        hops = faults.redirects
        match = re.match(r"/_redirect/(\d+)(/.*)$", path)
        if match:
            hops, path = int(match.group(1)), match.group(2)
        if hops > 0:
            location = f"/_redirect/{hops - 1}{path}"
            if faults.redirect_location is not None:
                location = faults.redirect_location
            elif faults.redirect_host:
                scheme = "https" if owner.tls is not None else "http"
                location = f"{scheme}://{faults.redirect_host}:{owner.port}{location}"
            return self._simple(faults.redirect_status, head, {"Location": location} if location else {})
        content = owner.files.get(path.lstrip("/"))
        if content is None:
            return self._simple(404, head)
        size = len(content) if isinstance(content, bytes) else content.stat().st_size
        start, end, status = 0, size, 200
        requested = self.headers.get("Range")
        if requested and not faults.ignore_range:
            parsed = _parse_range(requested, size)
            if parsed is None or faults.range_not_satisfiable:
                return self._simple(416, head, {"Content-Range": f"bytes */{size}"})
            start, end, status = parsed[0], parsed[1], 206
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        if faults.content_encoding:
            self.send_header("Content-Encoding", faults.content_encoding)
        if status == 206:
            content_range = f"bytes {start}-{end - 1}/{size}" if faults.content_range is None else faults.content_range
            if content_range:
                self.send_header("Content-Range", content_range)
        if faults.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(end - start + faults.content_length_delta))
        if faults.content_length_delta or faults.drop_after is not None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self._send_body(content, start, end, faults)

    def _send_body(self, content: bytes | Path, start: int, end: int, faults: Faults) -> None:
        sent = 0
        stalled = False
        with _Source(content) as source:
            offset = start
            while offset < end:
                n = min(_CHUNK, end - offset)
                if faults.drop_after is not None:
                    n = min(n, faults.drop_after - sent)
                if faults.stall_after is not None and not stalled:
                    if sent >= faults.stall_after:
                        time.sleep(faults.stall_seconds)
                        stalled = True
                    else:
                        n = min(n, faults.stall_after - sent)
                if n <= 0:
                    self._drop()
                    return
                data = source.read(offset, n)
                self.wfile.write(f"{n:x}\r\n".encode() + data + b"\r\n" if faults.chunked else data)
                offset += n
                sent += n
        if faults.drop_after is not None and sent >= faults.drop_after:
            self._drop()
            return
        if faults.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _drop(self) -> None:
        """Cut the TCP connection without a TLS close_notify (a dropped link)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Source:
    """Reads file content from memory or from disk, in slices."""

    def __init__(self, content: bytes | Path):
        self._bytes = memoryview(content) if isinstance(content, bytes) else None
        self._file = None if isinstance(content, bytes) else open(content, "rb")

    def read(self, offset: int, n: int) -> bytes | memoryview:
        if self._bytes is not None:
            return self._bytes[offset : offset + n]
        assert self._file is not None
        self._file.seek(offset)
        return self._file.read(n)

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as [start, end) within ``size``; None if not satisfiable."""
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        return None
    return start, end


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen backlog: a fleet connects hundreds of devices at once (socketserver's 5 drops SYNs)
    owner: TestServer

    def handle_error(self, request, client_address) -> None:
        # TLS handshakes refused by the client and dropped connections are expected in tests.
        pass


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


class TestServer:
    """An HTTP(S) server for files, run in a background thread."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        files: Mapping[str, bytes | Path],
        *,
        tls: TlsFiles | None = None,
        faults: Faults | None = None,
        auth: tuple[str, str] | None = None,
        auth_scheme: str = "Basic",
        client_ca: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log=None,
        tls13_only: bool = False,
    ):
        if auth_scheme not in AUTH_SCHEMES:
            raise ValueError(f"auth_scheme must be one of {', '.join(AUTH_SCHEMES)}, not {auth_scheme}")
        self.files = {name.lstrip("/"): value for name, value in files.items()}
        self.tls = tls
        self.faults = faults if faults is not None else Faults()
        self.auth = _Auth(auth[0], auth[1], auth_scheme) if auth else None
        self.log = log
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        server_class = _HttpServer6 if ":" in host else _HttpServer
        self._httpd = server_class((host, port), _Handler)
        self._httpd.owner = self
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert_pem, tls.key_pem)
            context.set_alpn_protocols(["http/1.1"])
            context.sni_callback = _remember_sni
            if tls13_only:
                context.minimum_version = ssl.TLSVersion.TLSv1_3
            if client_ca is not None:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(client_ca)
            self._httpd.socket = context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name.lstrip('/')}"

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def start(self) -> TestServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="esp-ota-emu-serve", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the ``serve`` command); :meth:`close` afterwards."""
        self._httpd.serve_forever()

    def close(self) -> None:
        self._httpd.server_close()

    def stop(self) -> None:
        """Stop the background thread started by :meth:`start` and close the socket."""
        self._httpd.shutdown()
        self.close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def serve_files(
    files: Mapping[str, bytes | Path],
    *,
    tls: TlsFiles | bool = True,
    **options,
) -> Iterator[TestServer]:
    """Serve ``files`` ({name: bytes or Path}) over HTTPS on 127.0.0.1 for the duration of a ``with``.

    ``tls=True`` generates a CA and server certificate in a temporary folder (``srv.tls.ca_pem`` is
    the CA to give the device); pass :class:`TlsFiles` to use given ones, ``False`` for plain HTTP.
    Other options go to :class:`TestServer` (``faults=``, ``auth=``, ``auth_scheme=``, ``client_ca=``).
    """
    with tempfile.TemporaryDirectory(prefix="esp-ota-emu-tls-") as tmp:
        tls_files = ensure_tls_files(Path(tmp)) if tls is True else (tls or None)
        with TestServer(files, tls=tls_files, **options) as server:
            yield server


def files_from_paths(paths: list[Path]) -> dict[str, Path]:
    """Map each file (or each file inside each folder) to the URL name it is served under."""
    files: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            for root, _, names in os.walk(path):
                for name in names:
                    full = Path(root) / name
                    files[full.relative_to(path).as_posix()] = full
        else:
            files[path.name] = path
    return files
