"""The data plane's second, TLS-wrapped listening socket: the same aiohttp runner, an SSL context."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.gateway.certsource import obtain
from gpustack_iac.runtime.gateway.tls import TLSOptions, server_context
from gpustack_iac.runtime.listenfds import inherited_socket


def tls_options(args: argparse.Namespace) -> TLSOptions:
    if args.certificate is None:
        raise GpustackError("--tls-port needs --certificate files, self-signed or lets-encrypt")
    names = tuple(dict.fromkeys([*([args.domain] if args.domain else []), *args.tls_name])) or ("localhost", "127.0.0.1")
    if args.certificate == "lets-encrypt" and not args.domain:
        raise GpustackError("a lets-encrypt certificate needs --domain")
    return TLSOptions(mode=args.certificate, names=names, cert_dir=args.cert_dir or args.state_dir / "tls",
                      cert_file=args.cert_file, key_file=args.key_file, acme_directory=args.acme_directory,
                      acme_email=args.acme_email, acme_ca_bundle=args.acme_ca_bundle, acme_http_port=args.acme_http_port)


async def start_tls_site(runner: web.BaseRunner, host: str, options: TLSOptions, port: int | None = None) -> int:
    """Obtain the certificate (ACME issuance blocks on the network: in a thread) and listen with TLS."""
    pair = await asyncio.to_thread(obtain, options)
    context = server_context(pair)
    # Under the watchdog the port is bound by it and handed down (as the plain ports are).
    sock = inherited_socket("tls_port")
    site: web.BaseSite = (web.SockSite(runner, sock, ssl_context=context) if sock is not None
                          else web.TCPSite(runner, host, port if port is not None else 0, ssl_context=context))
    await site.start()
    server = site._server  # aiohttp keeps the asyncio server here; it is the only way to read a port-0 bind
    sockets = getattr(server, "sockets", None) or []
    if not sockets:
        raise GpustackError("the TLS listener reported no socket")
    return int(sockets[0].getsockname()[1])
