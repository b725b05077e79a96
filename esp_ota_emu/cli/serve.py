"""``esp-ota-emu serve PATH...``: a local HTTPS server for OTA testing, with switchable faults."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ..testserver import Faults, TestServer, TlsFiles, ensure_tls_files, files_from_paths
from ..testserver.server import AUTH_SCHEMES
from .main import cli


@cli.command("serve")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8443, show_default=True, help="0 picks a free port.")
@click.option("--tls-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("ota-certs"),
              show_default=True, help="Where ca.pem / server.pem / server.key are kept (generated if missing).")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Use this server certificate...")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="...and this key.")
@click.option("--no-tls", is_flag=True, help="Plain HTTP.")
@click.option("--tls13-only", is_flag=True, help="Refuse TLS 1.2 (devices need CONFIG_MBEDTLS_SSL_PROTO_TLS1_3).")
@click.option("--client-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--auth", help="Require 'user:password'.")
@click.option("--auth-scheme", type=click.Choice(AUTH_SCHEMES), default="Basic", show_default=True)
@click.option("--drop-after", type=int, help="Fault: cut the connection after this many body bytes.")
@click.option("--ignore-range", is_flag=True, help="Fault: answer Range requests with 200 and the whole file.")
@click.option("--range-not-satisfiable", is_flag=True, help="Fault: answer every Range request with 416.")
@click.option("--content-length-delta", type=int, default=0, help="Fault: announce a wrong Content-Length.")
@click.option("--chunked", is_flag=True, help="Send bodies chunked, without Content-Length.")
@click.option("--stall-after", type=int, help="Fault: pause after this many body bytes...")
@click.option("--stall-seconds", type=float, default=0.0, help="...for this many seconds.")
@click.option("--delay-headers", type=float, default=0.0, help="Fault: wait this many seconds before answering.")
@click.option("--redirects", type=int, default=0, help="Fault: redirect this many times before serving.")
@click.option("--redirect-status", type=click.Choice(["301", "302", "303", "307", "308"]), default="302")
@click.option("--redirect-host", help="Fault: redirect to this host name (absolute Location, same port).")
@click.option("--redirect-location", help="Fault: send this Location on redirects instead ('' sends none).")
@click.option("--status", type=int, help="Fault: answer every request with this HTTP status.")
@click.option("--no-head", is_flag=True, help="Fault: answer HEAD with 405.")
@click.option("--content-range", help="Fault: send this Content-Range on 206 answers ('' sends none).")
@click.option("--reject-content-length", is_flag=True,
              help="Fault: answer 400 to a GET or HEAD carrying Content-Length, as some AWS load balancers do.")
def serve_cmd(paths, host, port, tls_dir, cert, key, no_tls, tls13_only, client_ca, auth, auth_scheme, drop_after,
              ignore_range, range_not_satisfiable, content_length_delta, chunked, stall_after, stall_seconds,
              delay_headers, redirects, redirect_status, redirect_host, redirect_location, status, no_head,
              content_range, reject_content_length):
    """Serve PATHS (files, or folders of files) over HTTPS with HEAD and Range, until Ctrl-C."""
    if no_tls:
        tls = None
    elif cert or key:
        if not (cert and key):
            raise click.UsageError("--cert and --key go together")
        ca = tls_dir / "ca.pem"
        tls = TlsFiles(ca if ca.is_file() else cert, cert, key)
    else:
        tls = ensure_tls_files(tls_dir, tuple(dict.fromkeys((host, "127.0.0.1", "localhost"))))
    credentials = None
    if auth:
        user, sep, password = auth.partition(":")
        if not sep:
            raise click.BadParameter("use user:password", param_hint="--auth")
        credentials = (user, password)
    faults = Faults(
        drop_after=drop_after, ignore_range=ignore_range, range_not_satisfiable=range_not_satisfiable,
        content_length_delta=content_length_delta, chunked=chunked, stall_after=stall_after,
        stall_seconds=stall_seconds, delay_headers=delay_headers, redirects=redirects,
        redirect_status=int(redirect_status), redirect_host=redirect_host, redirect_location=redirect_location,
        status=status, no_head=no_head,
        content_range=content_range, reject_content_length=reject_content_length,
    )
    files = files_from_paths(list(paths))
    if not files:
        raise InputError("nothing to serve: the given folders are empty")
    try:
        server = TestServer(files, tls=tls, faults=faults, auth=credentials, auth_scheme=auth_scheme,
                            client_ca=client_ca, host=host, port=port, tls13_only=tls13_only,
                            log=lambda line: click.echo(line, err=True))
    except OSError as err:
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    if tls is not None:
        click.echo(f"CA certificate for the device (--cert-pem): {tls.ca_pem.resolve()}")
    for name in sorted(files):
        click.echo(server.url(name))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
