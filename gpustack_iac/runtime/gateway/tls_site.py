"""The data plane's second, TLS-wrapped listening socket: the same aiohttp runner, an SSL context."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import time

from aiohttp import web

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.backoff import Backoff
from gpustack_iac.runtime.gateway.certsource import obtain
from gpustack_iac.runtime.gateway.tls import TLSOptions, server_context
from gpustack_iac.runtime.listenfds import inherited_socket

log = logging.getLogger(__name__)
# ACME retries: soon at first (a zone delegated minutes after boot), then every ten minutes at most,
# for ever. Failed validations count against Let's Encrypt's per-name hourly limit; once it is hit
# the server refuses orders for a while, which the capped delay rides out.
ISSUE_RETRY = Backoff(base=30.0, cap=600.0)


def tls_options(args: argparse.Namespace) -> TLSOptions:
    if args.certificate is None:
        raise GpustackError("--tls-port needs --certificate files, self-signed or lets-encrypt")
    names = tuple(dict.fromkeys([*([args.domain] if args.domain else []), *args.tls_name])) or ("localhost", "127.0.0.1")
    if args.certificate == "lets-encrypt" and not args.domain:
        raise GpustackError("a lets-encrypt certificate needs --domain")
    return TLSOptions(mode=args.certificate, names=names, cert_dir=args.cert_dir or args.state_dir / "tls",
                      cert_file=args.cert_file, key_file=args.key_file, acme_directory=args.acme_directory,
                      acme_email=args.acme_email, acme_ca_bundle=args.acme_ca_bundle, acme_http_port=args.acme_http_port)


async def start_tls_site(runner: web.BaseRunner, host: str, options: TLSOptions, port: int | None = None,
                         retry: Backoff = ISSUE_RETRY) -> int:
    """Obtain the certificate (ACME issuance blocks on the network: in a thread) and listen with TLS.

    A failed ACME issuance does not stop the gateway: on a first boot the new zone is rarely
    delegated yet. The TLS port is bound at once (and reported); the gateway keeps serving plain
    HTTP and answering challenges while issuance is retried with back-off, and the TLS listener
    starts with the first certificate."""
    # Under the watchdog the port is bound by it and handed down (as the plain ports are).
    sock = inherited_socket("tls_port") or _listening(host, port if port is not None else 0)
    bound = int(sock.getsockname()[1])
    try:
        pair = await asyncio.to_thread(obtain, options)
    except GpustackError as exc:
        if options.mode != "lets-encrypt":
            sock.close()
            raise
        log.warning("%s; serving plain HTTP and retrying with back-off", exc)
        task = asyncio.create_task(_issue_with_retry(runner, sock, options, retry))
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)
        return bound
    await web.SockSite(runner, sock, ssl_context=server_context(pair)).start()
    return bound


# Issuance tasks still running: asyncio keeps only weak references to tasks.
_PENDING: set[asyncio.Task[None]] = set()


def _listening(host: str, port: int) -> socket.socket:
    sock = socket.create_server((host or "0.0.0.0", port), reuse_port=False)
    sock.setblocking(False)
    return sock


async def _issue_with_retry(runner: web.BaseRunner, sock: socket.socket, options: TLSOptions, retry: Backoff) -> None:
    started, attempt = time.monotonic(), 1
    while True:
        wait = retry.next_delay(attempt, started, time.monotonic())
        if wait is None:
            log.error("giving up on a certificate for %s after %d attempts", ", ".join(options.names), attempt)
            return
        await asyncio.sleep(wait)
        attempt += 1
        try:
            pair = await asyncio.to_thread(obtain, options)
        except GpustackError as exc:
            log.warning("certificate attempt %d failed: %s", attempt, exc)
            continue
        await web.SockSite(runner, sock, ssl_context=server_context(pair)).start()
        log.info("certificate obtained on attempt %d; TLS listener started", attempt)
        return
