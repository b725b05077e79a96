"""An esp_http_client look-alike over httpx: the requests, reads and errors esp_https_ota sees.

It reproduces the parts of ``esp_http_client.c`` that decide what goes over the wire and what the
OTA engine gets back: the request headers (User-Agent, Host, Range, Authorization, user headers, no
others) and how they pass through the ``buffer_size_tx`` buffer, ``esp_http_client_read`` filling
the caller's buffer completely unless the body ends, ``is_complete_data_received`` (Content-Length
or the end of a chunked body; a response without a length counts as chunked), redirects via
``set_redirection`` (Location replaces host/path, headers stay), Basic and Digest answers to a 401
via ``add_auth`` and ``perform`` (used for the HEAD request) with its redirect limit. TLS follows
esp-tls and ESP-IDF's mbedTLS build: the chain must lead to a CA certificate of ``cert_pem`` (a root
or an intermediate; or the default bundle), validity dates are ignored unless asked for, the name
checked (and sent as SNI) is ``common_name`` or the URL's host unless the check is skipped, matched by
mbedTLS's rules, no ALPN is offered, and TLS 1.2 is the highest version unless TLS 1.3 is built in.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
import secrets
import select
import socket
import ssl
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urljoin, urlsplit, urlunsplit

import certifi
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import EspError
from ..idf_release import (
    ADD_AUTH_CHECKED,
    DIGEST_QOP_ONLY_IF_OFFERED,
    DIGEST_SHA256,
    GET_WITHOUT_CONTENT_LENGTH,
    HEADERS_TIMEOUT_EAGAIN,
    IP_SAN_VERIFIED,
    IPV6_HOST_BRACKETS,
    PERFORM_REDIRECT_CHECKED,
    PERFORM_REDIRECT_ERROR_RETURNED,
    PERFORM_REDIRECT_ESP_FAIL,
    REDIRECT_COUNTED,
    REDIRECT_DOWNGRADE_REFUSED,
    IdfRelease,
)
from .config import (
    DEFAULT_BUFFER_SIZE_TX,
    DEFAULT_MAX_AUTH_RETRIES,
    DEFAULT_MAX_REDIRECT,
    DEFAULT_TIMEOUT_MS,
    DEFAULT_USER_AGENT,
    HttpConfig,
)

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_X509_V_FLAG_NO_CHECK_TIME = 0x200000  # OpenSSL's flag; the ssl module has no name for it


def _describe(exc: BaseException) -> str:
    """The most specific plain-words reason inside an httpx/ssl exception chain."""
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"the server certificate was rejected: {exc.verify_message}"
        if isinstance(exc, ssl.SSLError):
            return f"the TLS handshake failed: {exc.reason or exc}"
        if exc.__cause__ is None and exc.__context__ is None:
            break
        exc = exc.__cause__ or exc.__context__
    return str(exc) or type(exc).__name__


def _split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """URL without ``user:pass@`` and the credentials it carried (as esp_http_client_set_url)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc)), parts.username, parts.password


def _between(text: str, begin: str, end: str) -> str | None:
    """``http_utils_get_string_between``: the text between the first ``begin`` (any case) and the next
    ``end``; None without both."""
    at = text.lower().find(begin.lower())
    if at < 0:
        return None
    at += len(begin)
    stop = text.lower().find(end.lower(), at)
    return text[at:stop] if stop >= 0 else None


def _after(text: str, begin: str) -> str | None:
    """``http_utils_get_string_after``: everything after the first ``begin`` (any case)."""
    at = text.lower().find(begin.lower())
    return text[at + len(begin) :] if at >= 0 else None


class _DigestState:
    """``esp_http_auth_data_t``: a Digest challenge read as esp_http_client_add_auth reads it (the
    algorithm token verbatim, quotes included), frozen at the time of the 401, with the nonce count."""

    def __init__(self, challenge: str, method: str, idf: IdfRelease):
        self.idf = idf
        self.method = method
        self.realm = _between(challenge, 'realm="', '"')
        self.nonce = _between(challenge, 'nonce="', '"')
        self.opaque = _between(challenge, 'opaque="', '"')
        self.qop = _between(challenge, 'qop="', '"')
        algorithm = _between(challenge, "algorithm=", ",")
        if algorithm is None and idf.has(DIGEST_SHA256):
            algorithm = _after(challenge, "algorithm=")
        self.algorithm = algorithm if algorithm is not None else "MD5"
        self.nc = 1

    def answer(self, username: str, password: str, path: str, query: str) -> str | None:
        """``http_auth_digest`` (None where it gives no answer: no realm or nonce in the challenge)."""
        if self.realm is None or self.nonce is None:
            return None
        new = self.idf.has(DIGEST_SHA256)  # v5.3: SHA-256, the algorithm token echoed, the query in the uri
        uri = path + (f"?{query}" if new and query else "")
        sha256 = new and self.algorithm.startswith(("SHA256", "SHA-256"))

        def digest(text: str) -> str:
            return (hashlib.sha256 if sha256 else hashlib.md5)(text.encode()).hexdigest()

        cnonce = f"{secrets.randbits(64):016x}"
        ha1 = digest(f"{username}:{self.realm}:{password}")
        if self.algorithm.lower() == "md5-sess" or (new and self.algorithm.lower() == "sha256"):
            ha1 = digest(f"{ha1}:{self.nonce}:{cnonce}")
        ha2 = digest(f"{self.method}:{uri}")
        if self.qop is not None and self.qop.lower() == "auth-int":
            ha2 = digest(f"{ha2}:entity")
        if self.qop is not None:
            response = digest(f"{ha1}:{self.nonce}:{self.nc:08x}:{cnonce}:{self.qop}:{ha2}")
        else:
            response = digest(f"{ha1}:{self.nonce}:{ha2}")
        algorithm = self.algorithm if new else '"MD5"'
        header = (
            f'Digest username="{username}", realm="{self.realm}", nonce="{self.nonce}", uri="{uri}", '
            f'algorithm={algorithm}, response="{response}"'
        )
        if not self.idf.has(DIGEST_QOP_ONLY_IF_OFFERED):
            # always qop, nc and an unquoted cnonce; newlib prints a NULL qop as "(null)"
            header += f", qop={self.qop if self.qop is not None else '(null)'}, nc={self.nc:08x}, cnonce={cnonce}"
            self.nc += 1
        elif self.qop is not None:
            header += f', qop={self.qop}, nc={self.nc:08x}, cnonce="{cnonce}"'
            self.nc += 1
        if self.opaque is not None:
            header += f', opaque="{self.opaque}"'
        return header


def _file_key(path: Path | None) -> tuple | None:
    """A client certificate or key file as a cache key: its path and when it last changed."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return (str(path), None)  # load_cert_chain reports the missing file
    return (str(path), stat.st_mtime_ns, stat.st_size)


def ssl_context(config: HttpConfig, ip_san: bool = True) -> ssl.SSLContext:
    """The esp-tls settings as an SSLContext, shared by every connection with the same trust settings.

    Building one parses the root certificates (~0.3 ms, more with the CA bundle); a context holds no
    per-connection state and Python never resumes TLS sessions on its own, so sharing it changes
    nothing a server could see.
    """
    return _cached_ssl_context(
        config.cert_pem,
        config.crt_bundle,
        config.skip_cert_common_name_check,
        _file_key(config.client_cert),
        _file_key(config.client_key),
        ip_san,
        config.cert_expiry_check,
        config.tls13,
    )


@functools.lru_cache(maxsize=16)
def _cached_ssl_context(
    cert_pem: str | None, crt_bundle: bool, skip_cn: bool, client_cert: tuple | None, client_key: tuple | None,
    ip_san: bool, expiry_check: bool, tls13: bool,
) -> ssl.SSLContext:
    context = _EspTlsContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3 if tls13 else ssl.TLSVersion.TLSv1_2
    if not expiry_check:  # mbedTLS without MBEDTLS_HAVE_TIME_DATE ignores validity dates
        context.verify_flags |= _X509_V_FLAG_NO_CHECK_TIME
    # mbedTLS checks the name itself (see _EspTlsSocket); OpenSSL's check differs for IP addresses
    context.check_hostname = False
    context.sslsocket_class = _EspTlsSocket
    context.esp_name_check = None if skip_cn else ip_san
    if cert_pem:
        # mbedTLS ends the chain at the first certificate found in cert_pem, root or not (OpenSSL's
        # partial chains), but a certificate that is not a CA only counts when it is the server's own
        # self-issued one: a plain leaf in cert_pem trusts nothing.
        anchors = _mbedtls_trust_anchors(cert_pem)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        try:
            if anchors:
                context.load_verify_locations(cadata=anchors)
        except ssl.SSLError as err:
            raise EspError("ESP_ERR_INVALID_ARG", f"cert_pem is not a usable PEM certificate: {err.reason}") from None
    elif crt_bundle:
        context.load_verify_locations(cafile=certifi.where())
    if client_cert is not None:
        try:
            context.load_cert_chain(client_cert[0], client_key[0] if client_key is not None else None)
        except (OSError, ssl.SSLError) as err:
            raise EspError("ESP_ERR_INVALID_ARG", f"client certificate/key not usable: {err}") from None
    return context


class _EspTlsContext(ssl.SSLContext):
    """esp-tls's TLS settings. esp_http_client offers no ALPN (it has no such option before v6.0, where
    ``alpn_protos`` is unset by default); httpcore would set "http/1.1" on every connection. With
    ``skip_cert_common_name_check`` esp-tls gives mbedTLS no host name at all, so no SNI is sent."""

    esp_name_check: bool | None = None  # None: no name check, no SNI; else whether iPAddress names count

    def set_alpn_protocols(self, alpn_protocols) -> None:
        pass

    def wrap_socket(self, sock, *args, server_hostname=None, **kwargs):
        if self.esp_name_check is None:
            server_hostname = None
        return super().wrap_socket(sock, *args, server_hostname=server_hostname, **kwargs)


_CAN_POLL = hasattr(select, "poll")  # where there is no poll, a receive takes one TLS record


class _EspTlsSocket(ssl.SSLSocket):
    """A TLS socket that checks the server's name after the handshake as mbedTLS does, against the name
    esp-tls gives it (``common_name``, else the URL's host: the socket's ``server_hostname``).

    A receive returns every TLS record that has already arrived, up to the size asked for, not just
    one: each record otherwise costs a pass through httpcore and h11 (about a quarter of a fast
    download's time). What the device reads is unchanged: esp_http_client_read's semantics live in
    :class:`HttpClient`, and an error met after some bytes is raised by the next receive.
    """

    _deferred: OSError | None = None
    _poller = None  # a select.poll of this socket, made at the first receive that goes on

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._deferred is not None:
            err, self._deferred = self._deferred, None
            raise err
        data = super().recv(buflen, flags)
        if not data or len(data) >= buflen or flags or not _CAN_POLL:
            return data
        pieces, got = [data], len(data)
        try:
            while got < buflen and self._arrived():
                more = super().recv(buflen - got)
                if not more:
                    break
                pieces.append(more)
                got += len(more)
        except OSError as err:
            self._deferred = err
        return b"".join(pieces)

    def _arrived(self) -> bool:
        """Whether a receive can go on without waiting for the network."""
        if self.pending():
            return True
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self, select.POLLIN)
        return bool(self._poller.poll(0))

    def do_handshake(self, *args) -> None:  # (block=False); gevent's SSLSocket takes no argument
        super().do_handshake(*args)
        ip_san = self.context.esp_name_check
        if ip_san is None or self.server_hostname is None:
            return
        cert = x509.load_der_x509_certificate(self.getpeercert(binary_form=True))
        if not mbedtls_name_matches(cert, self.server_hostname, ip_san=ip_san):
            reason = f"hostname mismatch: the certificate is not valid for {self.server_hostname!r}"
            if not ip_san and _ip_bytes(self.server_hostname) is not None:
                reason += " (before mbedTLS 3.5 only a dNSName or the CN can match an IP address)"
            err = ssl.SSLCertVerificationError(1, f"certificate verify failed: {reason}")
            err.verify_code, err.verify_message = 62, reason  # X509_V_ERR_HOSTNAME_MISMATCH
            raise err


def _ip_bytes(text: str) -> bytes | None:
    try:
        return ipaddress.ip_address(text).packed
    except ValueError:
        return None


def _name_matches(pattern: str, name: str) -> bool:
    """``x509_crt_check_cn``: equal ignoring ASCII case, or ``*.rest`` matching a name whose first
    label is followed by exactly ``.rest``."""
    if pattern.lower() == name.lower():
        return True
    dot = name.find(".")
    return len(pattern) >= 3 and pattern.startswith("*.") and dot > 0 and pattern[1:].lower() == name[dot:].lower()


def mbedtls_name_matches(cert: x509.Certificate, name: str, *, ip_san: bool) -> bool:
    """``x509_crt_verify_name``: with a subjectAltName extension, a dNSName matching ``name``, then
    (mbedTLS 3.5 and later: ``ip_san``) an iPAddress equal to it or a URI spelling it; without one, a
    CN matching it."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return any(_name_matches(str(cn.value), name) for cn in cns)
    if any(_name_matches(dns, name) for dns in sans.get_values_for_type(x509.DNSName)):
        return True
    if not ip_san:
        return False
    address = _ip_bytes(name)
    if address is not None and any(ip.packed == address for ip in sans.get_values_for_type(x509.IPAddress)):
        return True
    return name in sans.get_values_for_type(x509.UniformResourceIdentifier)


def _mbedtls_trust_anchors(cert_pem: str) -> str:
    """The certificates of ``cert_pem`` that mbedTLS's chain building can stop at: CAs, v1 certificates
    (x509_crt_check_parent), and self-issued ones (x509_crt_check_ee_locally_trusted)."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError as err:
        raise EspError("ESP_ERR_INVALID_ARG", f"cert_pem is not a usable PEM certificate: {err}") from None

    def usable(cert: x509.Certificate) -> bool:
        if cert.version != x509.Version.v3 or cert.subject == cert.issuer:
            return True
        try:
            return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            return False

    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs if usable(c))


def _content_range_total(value: str) -> int:
    """``http_on_header_value`` on a Content-Range (v6.0+): the total after the '/', read with strtol
    (32-bit long: a larger number saturates), or -1 for ``/*``, no '/', or a total that is not a whole
    positive number."""
    _, slash, total = value.partition("/")
    match = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?\d+)", total) if slash else None
    if match is None or int(match.group(1)) <= 0:
        return -1
    return min(int(match.group(1)), 0x7FFFFFFF)


@dataclass(frozen=True)
class RequestWrites:
    """What ``esp_http_client_request_send`` writes for one request through its ``buffer_size_tx`` buffer."""

    request_line: bytes
    line_fits: bool  # False: the request line alone fills the buffer, nothing is sent ("Out of buffer")
    writes: tuple[bytes, ...]  # the pieces sent, in order
    headers_sent: int  # how many header lines went out; all of them means the request is complete
    headers: tuple[bytes, ...]  # the header lines, in esp_http_client's order

    @property
    def complete(self) -> bool:
        return self.line_fits and self.headers_sent == len(self.headers)


def request_writes(request_line: str, headers: list[tuple[str, str]], buffer_size_tx: int) -> RequestWrites:
    """``esp_http_client_request_send`` with ``http_header_generate_string``: the request line, then
    as many whole header lines as fit the rest of the buffer, keeping 3 bytes for the blank line and
    the terminating NUL; the next buffers take the following lines the same way. A header line that
    cannot fit an empty buffer stops the loop: the request goes out cut before its blank line (and if
    that is the first header, not even the request line is sent)."""
    lines = tuple(f"{key}: {value}\r\n".encode() for key, value in headers)
    line = request_line.encode()
    if len(line) >= buffer_size_tx:
        return RequestWrites(line, False, (), 0, lines)
    writes: list[bytes] = []
    pending, room, index = line, buffer_size_tx - len(line), 0
    while index < len(lines):
        size, end = 0, index
        while end < len(lines) and size + len(lines[end]) + 3 <= room:
            size += len(lines[end])
            end += 1
        if end == index:
            break
        done = end == len(lines)
        writes.append(pending + b"".join(lines[index:end]) + (b"\r\n" if done else b""))
        pending, room, index = b"", buffer_size_tx, end
    return RequestWrites(line, True, tuple(writes), index, lines)


class HttpClient:
    """One esp_http_client handle: a URL, request headers, and at most one open response."""

    def __init__(self, config: HttpConfig, idf: IdfRelease):
        url, user, password = _split_userinfo(config.url)
        self.idf = idf
        self.url = url
        self.username = config.username if config.username is not None else user
        self.password = config.password if config.password is not None else password
        self.method = "GET"
        self.timeout_ms = config.timeout_ms or DEFAULT_TIMEOUT_MS
        self.buffer_size_tx = config.buffer_size_tx or DEFAULT_BUFFER_SIZE_TX
        self.stall_limit_s = max(config.stall_limit_s, self.timeout_ms / 1000)
        self.max_redirection_count = config.max_redirection_count or DEFAULT_MAX_REDIRECT
        retries = config.max_authorization_retries
        self.max_authorization_retries = DEFAULT_MAX_AUTH_RETRIES if retries == 0 else max(retries, 0)
        self.redirect_counter = 0
        self.basic_auth = config.basic_auth
        self.digest_auth = config.digest_auth
        # HTTP_AUTH_TYPE_NONE until a 401 names Basic or Digest, unless the config asks for Basic at once
        self.auth_type: str | None = "Basic" if config.auth_type == "basic" else None
        self._digest: _DigestState | None = None
        self._headers: dict[str, tuple[str, str]] = {}
        self.set_header("User-Agent", config.user_agent or DEFAULT_USER_AGENT)
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host and idf.has(IPV6_HOST_BRACKETS):
            host = f"[{host}]"
        self.set_header("Host", host if parts.port in (None, 80, 443) else f"{host}:{parts.port}")
        for key, value in config.headers:
            self.set_header(key, value)
        self._ssl = ssl_context(config, ip_san=idf.has(IP_SAN_VERIFIED))
        self._http: httpx.Client | None = None  # made at the first open; closed (with its connection) by close
        self._verifies = config.verifies_server
        self._sni = config.common_name
        self._tls13 = config.tls13
        self._response: httpx.Response | None = None
        self._kept_origin: tuple[str, str | None, int | None] | None = None  # where a kept-alive connection goes
        self._stream = None
        self._pending = b""  # body bytes received but not yet read
        self.status_code = -1
        self.content_length = -1
        # response->content_range: the total of the last Content-Range header; the response struct is
        # zeroed once when the client is made, and answers without the header leave the field as it was
        self.content_range = 0
        self.is_chunked = False
        self.data_process = 0
        self._body_done = False
        self._body_error: str | None = None

    # -- request state -----------------------------------------------------------------------------
    def set_header(self, key: str, value: str) -> None:
        self._headers[key.lower()] = (key, value)

    def delete_header(self, key: str) -> None:
        self._headers.pop(key.lower(), None)

    def set_method(self, method: str) -> None:
        self.method = method

    def _prepare(self) -> None:
        """``esp_http_client_prepare``: (re)compute the Authorization header once credentials are known."""
        if self.username is None:
            return
        if self.auth_type == "Basic":
            # a missing password is formatted by newlib's printf as "(null)"
            password = self.password if self.password is not None else "(null)"
            token = b64encode(f"{self.username}:{password}".encode()).decode()
            self.set_header("Authorization", f"Basic {token}")
        elif self.auth_type == "Digest" and self._digest is not None and self.password is not None:
            parts = urlsplit(self.url)
            answer = self._digest.answer(self.username, self.password, parts.path or "/", parts.query)
            if answer is not None:
                self.set_header("Authorization", answer)

    # -- one exchange --------------------------------------------------------------------------------
    def _connection(self) -> httpx.Client:
        """The transport: a kept-alive connection is used again, as esp_http_client_open does when the
        client is still connected."""
        if self._http is None:
            self._http = httpx.Client(
                verify=self._ssl,
                timeout=httpx.Timeout(self.timeout_ms / 1000),
                follow_redirects=False,
                trust_env=False,
            )
            self._http.headers.clear()  # esp_http_client sends no Accept / Accept-Encoding / Connection
        return self._http

    def open(self) -> None:
        """``esp_http_client_open`` + ``fetch_headers``: send the request, read the status and headers."""
        self._end_response()
        self._prepare()
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https"):
            raise EspError("ESP_ERR_HTTP_INVALID_TRANSPORT", f"no transport for the URL scheme {parts.scheme!r}")
        http = self._connection()
        if not self.idf.has(GET_WITHOUT_CONTENT_LENGTH):
            # http_client_prepare_first_line: "Content-Length: <write_len>" on every request, 0 here
            self.set_header("Content-Length", "0")
        headers = list(self._headers.values())
        writes = request_writes(self._request_line(parts), headers, self.buffer_size_tx)
        request = http.build_request(self.method, self.url, headers=headers)
        if parts.scheme == "https" and self._sni:
            request.extensions["sni_hostname"] = self._sni  # with skip_cn _EspTlsContext sends none
        host = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        if parts.scheme == "https" and not self._verifies:
            raise EspError(
                "ESP_ERR_HTTP_CONNECT",
                f"could not connect to {host}: no server verification option is set for TLS (esp-tls refuses "
                "to connect without cert_pem or the CA bundle)",
            )
        origin = (parts.scheme, parts.hostname, parts.port)
        if not writes.complete:
            self._send_cut_request(writes, origin, host)
        try:
            self._response = http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as err:
            raise self._connect_error(host, err) from None
        except httpx.ReadTimeout:
            raise self._no_headers_error(host) from None
        except httpx.WriteError as err:
            raise EspError("ESP_ERR_HTTP_WRITE_DATA", f"could not send the request to {host}: {_describe(err)}") from None
        except httpx.TransportError as err:
            raise EspError(
                "ESP_FAIL", f"{host} closed the connection before sending response headers: {_describe(err)}"
            ) from None
        response = self._response
        self._kept_origin = origin if self.is_persistent_connection else None
        self.status_code = response.status_code
        length = response.headers.get("Content-Length")
        self.content_length = int(length) if length and length.isdigit() else -1
        content_range = response.headers.get("Content-Range")
        if content_range is not None:
            self.content_range = _content_range_total(content_range)
        self.is_chunked = self.content_length <= 0
        self.data_process = 0
        self._body_done = self.method == "HEAD"
        self._body_error = None
        self._pending = b""
        # The transport's byte stream itself, not iter_raw(): that wrapper's per-piece bookkeeping
        # (request context, re-chunking, counters) is unused here and costs ~5% of a fast download.
        self._stream = None if self._body_done else iter(response.stream)
        # timeout_ms bounds the wait for the response headers. A read of the body that times out is not
        # an error on a device: esp_http_client_read returns what it has (or -ESP_ERR_HTTP_EAGAIN) and
        # esp_https_ota_perform asks again, for as long as the connection stays open; the emulator waits
        # up to stall_limit_s. (httpcore takes the read timeout when the body is first read.)
        response.request.extensions["timeout"] = {**response.request.extensions.get("timeout", {}),
                                                  "read": self.stall_limit_s}

    def _request_line(self, parts) -> str:
        """``http_client_prepare_first_line``: method, the URL's path (``/`` if none) and query, HTTP/1.1."""
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.method} {parts.path or '/'}{query} HTTP/1.1\r\n"

    def _send_cut_request(self, writes: RequestWrites, origin: tuple, host: str) -> NoReturn:
        """What a device does with a request its tx buffer cannot carry whole. esp_http_client_open has
        connected first (TLS included, unless a kept-alive connection is there); then either the request
        line alone does not fit (ESP_FAIL, logged as "Out of buffer") or the pieces that fit go out, the
        request ends before its blank line, and the device waits for an answer until its timeout."""
        reuse = self._http is not None and self._kept_origin == origin
        fix = f"give a larger buffer_size_tx (--buffer-size-tx; now {self.buffer_size_tx})"
        out_of_buffer = (f"HTTP_CLIENT: Out of buffer: the request line ({len(writes.request_line)} bytes with its "
                         f"CRLF) does not fit the {self.buffer_size_tx}-byte transmit buffer")
        if not writes.line_fits and reuse:
            raise EspError("ESP_FAIL", f"{out_of_buffer}; {fix}")
        self.close()  # the device's connection is unusable after this; the emulator sends on a fresh one
        sock = self._raw_connect(origin, host)
        with sock:
            if not writes.line_fits:
                raise EspError("ESP_FAIL", f"{out_of_buffer}; the device connected to {host} and sent nothing; {fix}")
            cut = writes.headers[writes.headers_sent]
            sent = sum(map(len, writes.writes))
            why = (f"the header line {cut.split(b':', 1)[0].decode()!r} ({len(cut)} bytes) does not fit the "
                   f"{self.buffer_size_tx}-byte transmit buffer, so esp_http_client sent "
                   + (f"only {sent} bytes of the request, without its blank line" if sent else "nothing at all")
                   + f"; {fix}")
            try:
                for piece in writes.writes:
                    sock.sendall(piece)
                sock.settimeout(self.timeout_ms / 1000)
                answer = sock.recv(256)
            except TimeoutError:
                raise self._no_headers_error(host, why) from None
            except OSError as err:
                raise EspError("ESP_FAIL", f"{host} closed the connection: {_describe(err)}; {why}") from None
        if not answer:
            raise EspError("ESP_FAIL", f"{host} closed the connection before sending response headers: {why}")
        status = answer.split(b"\r\n", 1)[0].decode("latin-1")
        raise EspError("ESP_FAIL", f"{host} answered the cut request with {status!r}: {why}")

    def _raw_connect(self, origin: tuple, host: str) -> socket.socket:
        """The TCP connection and TLS handshake esp_http_client_open makes before it writes anything."""
        scheme, hostname, port = origin
        try:
            sock = socket.create_connection((hostname, port or (443 if scheme == "https" else 80)),
                                            timeout=self.timeout_ms / 1000)
        except OSError as err:
            raise self._connect_error(host, err) from None
        if scheme != "https":
            return sock
        try:
            return self._ssl.wrap_socket(sock, server_hostname=self._sni or hostname)
        except OSError as err:
            sock.close()
            raise self._connect_error(host, err) from None

    def _connect_error(self, host: str, err: BaseException) -> EspError:
        """ESP_ERR_HTTP_CONNECT: the TCP connection or the TLS handshake failed."""
        reason = _describe(err)
        if "PROTOCOL_VERSION" in reason and not self._tls13:
            reason += (" (the server may want TLS 1.3, which a device offers only with "
                       "CONFIG_MBEDTLS_SSL_PROTO_TLS1_3: --tls13)")
        return EspError("ESP_ERR_HTTP_CONNECT", f"could not connect to {host}: {reason}")

    def _no_headers_error(self, host: str, why: str = "") -> EspError:
        """``esp_http_client_fetch_headers`` timing out: ESP_FAIL before v5.0, then -ESP_ERR_HTTP_EAGAIN."""
        return EspError("ESP_ERR_HTTP_EAGAIN" if self.idf.has(HEADERS_TIMEOUT_EAGAIN) else "ESP_FAIL",
                        f"{host} sent no response headers within {self.timeout_ms} ms" + (f": {why}" if why else ""))

    @property
    def location(self) -> str | None:
        return self._response.headers.get("Location") if self._response is not None else None

    @property
    def www_authenticate(self) -> str | None:
        return self._response.headers.get("WWW-Authenticate") if self._response is not None else None

    def read(self, length: int) -> bytes:
        """``esp_http_client_read``: up to ``length`` bytes, fewer only when the body ends or breaks.

        Returns ``b""`` at the end of the body (complete or not: ask :meth:`is_complete_data_received`).
        The transport's pieces are joined once; a piece that runs past ``length`` keeps its tail for
        the next read.
        """
        pending = self._pending
        if len(pending) >= length:
            data, self._pending = pending[:length], pending[length:]
        else:
            pieces, got = ([pending] if pending else []), len(pending)
            self._pending = b""
            if self._stream is not None and not self._body_done:
                got = self._pull(pieces, got, length)
            if got > length:
                last = pieces[-1]
                cut = len(last) - (got - length)
                pieces[-1], self._pending = last[:cut], last[cut:]
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self.data_process += len(data)
        return data

    def _pull(self, pieces: list, got: int, length: int) -> int:
        """Append transport pieces to ``pieces`` until ``length`` bytes are there or the body ends."""
        stream = self._stream
        try:
            while got < length:
                chunk = next(stream)
                pieces.append(chunk)
                got += len(chunk)
        except StopIteration:
            self._body_done = True
        except httpx.ReadTimeout:
            raise EspError(
                "ESP_ERR_HTTP_EAGAIN",
                f"no data from the server for {self.stall_limit_s:g} s after {self.data_process + got} bytes: "
                f"a device would go on waiting (each read times out after {self.timeout_ms} ms and "
                "esp_https_ota_perform asks again); the emulator stops here (stall_limit_s)",
            ) from None
        except httpx.TransportError as err:
            self._body_done = True
            self._body_error = _describe(err)
        return got

    def discard_body(self) -> None:
        """Read and drop the rest of the body (esp_https_ota drains redirect and 401 bodies)."""
        while self.read(256):
            pass

    def is_complete_data_received(self) -> bool:
        if self.is_chunked:
            return self._body_done and self._body_error is None
        return self.data_process == self.content_length

    @property
    def body_error(self) -> str | None:
        """Why the body ended early, in plain words (None if it did not break)."""
        return self._body_error

    # -- redirects and authentication -------------------------------------------------------------
    def set_redirection(self) -> None:
        """``esp_http_client_set_redirection``: follow the Location header. In ESP-IDF v5.5.5 an https://
        URL may only redirect to a Location that starts with https://, so even a relative one is refused."""
        location = self.location
        if (self.idf.has(REDIRECT_DOWNGRADE_REFUSED) and location is not None and urlsplit(self.url).scheme == "https"
                and not location.lower().startswith("https://")):
            raise EspError(
                "ESP_ERR_HTTP_REDIRECT_DOWNGRADE",
                f"the https:// server redirected to {location!r}: this ESP-IDF follows only https:// Locations",
            )
        if not location or not (location.startswith("/") or re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", location)):
            raise EspError("ESP_ERR_INVALID_ARG", f"URL redirection failed: unusable Location {location!r}")
        target, user, password = _split_userinfo(urljoin(self.url, location))
        if user is not None:
            self.username, self.password = user, password
        new_host = urlsplit(target).hostname or ""
        if new_host.lower() != (urlsplit(self.url).hostname or "").lower():
            # esp_http_client_set_url sets Host to the bare new host name (no port), and only when the
            # host name changes
            self.set_header("Host", new_host)
        self.url = target
        if self.idf.has(REDIRECT_COUNTED):
            self.redirect_counter += 1

    def add_auth(self) -> EspError | None:
        """``esp_http_client_add_auth``: prepare an answer to a 401. Returns what it returns when the
        challenge cannot be answered (ESP_FAIL: retries used up; ESP_ERR_NOT_SUPPORTED), else None."""
        challenge = (self.www_authenticate or "").strip()
        if self.redirect_counter >= self.max_authorization_retries:
            return EspError("ESP_FAIL", "the server kept answering 401 Unauthorized: reached max_authorization_retries")
        if not challenge:
            self.auth_type = None
            return EspError("ESP_ERR_NOT_SUPPORTED", "the server answered 401 without WWW-Authenticate")
        self.redirect_counter += 1
        if challenge.startswith("Digest") and self.digest_auth:
            self.auth_type = "Digest"
            self._digest = _DigestState(challenge, self.method, self.idf)
        elif challenge.startswith("Basic") and self.basic_auth:
            self.auth_type = "Basic"
        else:
            self.auth_type = None
            scheme = challenge.split(None, 1)[0]
            built_out = (f": CONFIG_ESP_HTTP_CLIENT_ENABLE_{scheme.upper()}_AUTH is off"
                         if scheme in ("Basic", "Digest") else "")
            return EspError("ESP_ERR_NOT_SUPPORTED",
                            f"the server answered 401 with an unsupported challenge {challenge!r}{built_out}")
        return None

    def perform(self) -> None:
        """``esp_http_client_perform`` (blocking): one request, following redirects and answering 401s."""
        while True:
            self.open()
            again = False
            if 200 <= self.status_code < 300:
                self.redirect_counter = 0
            elif self.redirect_counter >= self.max_redirection_count:
                raise EspError(
                    "ESP_ERR_HTTP_MAX_REDIRECT",
                    f"gave up after {self.redirect_counter} redirects/authorization retries",
                )
            elif self.status_code in REDIRECT_STATUSES:
                self._perform_redirection()
                again = True
            elif self.status_code == 401:
                failed = self.add_auth()
                if failed is not None and self.idf.has(ADD_AUTH_CHECKED):
                    raise failed  # from v5.5 esp_http_client_perform returns what add_auth returned
                again = failed is None
            self.discard_body()
            if not again:
                return

    def _perform_redirection(self) -> None:
        """``esp_http_check_response``'s redirect: set_redirection, what each release makes of its error, and
        the count (before v5.0.2 esp_http_check_response counts the redirect itself)."""
        try:
            self.set_redirection()
        except EspError as err:
            idf = self.idf
            if idf.has(PERFORM_REDIRECT_ERROR_RETURNED):
                raise
            if idf.has(PERFORM_REDIRECT_ESP_FAIL):
                raise EspError("ESP_FAIL", f"{err.message} (esp_http_client_perform returns ESP_FAIL)") from None
            if idf.has(PERFORM_REDIRECT_CHECKED):
                raise EspError(err.esp_err, f"{err.message}: ESP-IDF {idf} checks it with ESP_ERROR_CHECK, so the "
                                            "device aborts here and resets") from None
            # older releases ignore the error: the same URL again, still counted as a redirect
        if not self.idf.has(REDIRECT_COUNTED):
            self.redirect_counter += 1

    @property
    def is_persistent_connection(self) -> bool:
        """``esp_http_client_is_persistent_connection``: the response lets the connection stay open."""
        response = self._response
        return (response is not None and response.http_version == "HTTP/1.1"
                and response.headers.get("Connection", "").lower() != "close")

    def _end_response(self) -> None:
        """Let go of the current response; its connection stays for the next request if it can."""
        if self._response is not None:
            self._response.close()
            self._response = None
            self._stream = None

    def close(self) -> None:
        """``esp_http_client_close``: end the current response and close the connection."""
        self._end_response()
        self._kept_origin = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def cleanup(self) -> None:
        self.close()
