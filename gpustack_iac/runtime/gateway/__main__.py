"""The gateway process: data-plane proxy and controller (control API) in one asyncio process.

    python -m gpustack_iac.runtime.gateway --host 127.0.0.1 --port 0 --control-port 0 \\
        --token-file F --admin-token-file G --state-dir D [--port-file P] [--domain example.com]

The controller writes the gateway's RoutingTable directly (same event loop), so a replica is
routed the moment its probe passes. The controller's first reconcile tick runs before either port
listens: after a restart the table already holds the re-adopted replicas when traffic arrives.
SIGTERM (or SIGINT) stops accepting, lets in-flight requests finish, and leaves every replica
running for the next start to re-adopt.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.auth import read_token_file
from gpustack_iac.runtime.controller.reconcile import Controller
from gpustack_iac.runtime.controller.server import create_control_app
from gpustack_iac.runtime.controller.sizing_config import load_sizers
from gpustack_iac.runtime.controller.settings import ControllerSettings
from gpustack_iac.runtime.controller.store import Store
from gpustack_iac.runtime.gateway.control_tls import control_context
from gpustack_iac.runtime.gateway.tls_site import ISSUE_RETRY, start_tls_site, tls_options
from gpustack_iac.runtime.gateway.metrics import Metrics
from gpustack_iac.runtime.gateway.proxy import create_gateway_app, make_runner
from gpustack_iac.runtime.gateway.routing import RoutingTable
from gpustack_iac.runtime.gateway.settings import GatewaySettings
from gpustack_iac.runtime.listenfds import inherited_socket
from gpustack_iac.runtime.procs import write_port_file
from gpustack_iac.runtime.scaling.config import Tuning

log = logging.getLogger("gpustack_iac.gateway")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gpustack_iac.runtime.gateway", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address both servers bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="data-plane port; 0 picks a free one")
    p.add_argument("--control-port", type=int, default=0, help="control API port; 0 picks a free one")
    p.add_argument("--token-file", type=Path, required=True, help="service bearer token (mode 0600)")
    p.add_argument("--admin-token-file", type=Path, required=True, help="control API bearer token (mode 0600)")
    p.add_argument("--state-dir", type=Path, required=True, help="controller state (SQLite) lives here")
    p.add_argument("--join-token-dir", type=Path, default=None,
                   help="<fleet>.token files (mode 0600): agents holding one may join that fleet (docs/cloud.md#joining)")
    p.add_argument("--port-file", type=Path, default=None, help="written as JSON once both ports listen")
    p.add_argument("--node-groups", type=Path, default=None,
                   help="JSON: the node groups or Deployments the controller sizes (runtime/controller/sizing_config.py)")
    p.add_argument("--domain", default=None, help="route <service>.<domain> by Host header")
    p.add_argument("--public-url", default=None, help="base URL clients use (default http://HOST:PORT)")
    p.add_argument("--hold-queue", type=int, default=GatewaySettings.hold_queue)
    p.add_argument("--hold-timeout", type=float, default=GatewaySettings.hold_timeout)
    p.add_argument("--max-client-connections", type=int, default=GatewaySettings.max_client_connections,
                   help="client connections held at once; past it a new one gets 503")
    p.add_argument("--listen-backlog", type=int, default=GatewaySettings.listen_backlog,
                   help="connections the kernel queues before accept (capped by net.core.somaxconn)")
    p.add_argument("--header-timeout", type=float, default=GatewaySettings.header_timeout,
                   help="seconds a client has to send a whole request head")
    p.add_argument("--reconcile-interval", type=float, default=ControllerSettings.interval)
    p.add_argument("--probe-failures", type=int, default=ControllerSettings.probe_failures)
    p.add_argument("--startup-deadline", type=float, default=ControllerSettings.startup_deadline)
    p.add_argument("--drain-seconds", type=float, default=ControllerSettings.drain_seconds)
    p.add_argument("--stop-grace", type=float, default=ControllerSettings.stop_grace)
    p.add_argument("--agent-lost-after", type=float, default=ControllerSettings.agent_lost_after,
                   help="seconds an agent may not answer before its replicas are placed elsewhere")
    p.add_argument("--autoscale-stable-window", type=float, default=Tuning.stable_window,
                   help="seconds of load the autoscaler averages for steady decisions")
    p.add_argument("--autoscale-panic-window", type=float, default=Tuning.panic_window,
                   help="seconds of load that can trigger a fast scale-up on a burst")
    p.add_argument("--autoscale-burst-release", type=float, default=Tuning.burst_release_delay,
                   help="seconds after a burst ends before the capacity it added is released")
    tls = p.add_argument_group("TLS (runtime/gateway/tls.py)")
    tls.add_argument("--tls-port", type=int, default=None, help="also serve the data plane over TLS on this port (0: a free one)")
    tls.add_argument("--certificate", choices=("files", "self-signed", "lets-encrypt"), default=None)
    tls.add_argument("--cert-file", type=Path, default=None)
    tls.add_argument("--key-file", type=Path, default=None)
    tls.add_argument("--cert-dir", type=Path, default=None, help="issued and generated certificates (default STATE_DIR/tls)")
    tls.add_argument("--tls-name", action="append", default=[], help="a name the certificate covers besides --domain")
    tls.add_argument("--acme-directory", default="https://acme-v02.api.letsencrypt.org/directory")
    tls.add_argument("--acme-email", default=None)
    tls.add_argument("--acme-ca-bundle", default=None, help="CA bundle for a private ACME server's HTTPS")
    tls.add_argument("--acme-http-port", type=int, default=80, help="where HTTP-01 challenges are answered")
    tls.add_argument("--acme-retry-base", type=float, default=ISSUE_RETRY.base, help=argparse.SUPPRESS)
    tls.add_argument("--control-tls-dir", type=Path, default=None,
                     help="serve the control API over TLS with the CA in this directory (ca.pem, ca.key; "
                          "generated at first start when absent; runtime/gateway/control_tls.py)")
    tls.add_argument("--control-tls-name", action="append", default=[],
                     help="a name or address the control API's certificate covers (repeat)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def _bound_port(runner: web.BaseRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    raise GpustackError("the server did not report a listening address")


def _site(runner: web.BaseRunner, name: str, host: str, port: int, backlog: int = 128,
          ssl_context: ssl.SSLContext | None = None) -> web.BaseSite:
    # Under the watchdog the ports are already bound and handed down, so they stay open across restarts.
    sock = inherited_socket(name)
    if sock is None:
        return web.TCPSite(runner, host, port, backlog=backlog, ssl_context=ssl_context)
    sock.listen(backlog)  # Linux takes a second listen() on a bound socket as its new backlog
    return web.SockSite(runner, sock, ssl_context=ssl_context)


async def serve(args: argparse.Namespace) -> None:
    token = read_token_file(args.token_file)
    admin_token = read_token_file(args.admin_token_file)
    sizers = load_sizers(args.node_groups) if args.node_groups is not None else ()
    control_ssl = (control_context(args.control_tls_dir, tuple(args.control_tls_name))
                   if args.control_tls_dir is not None else None)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(args.state_dir, 0o700)
    store = Store(args.state_dir / "controller.db")
    table = RoutingTable()
    metrics = Metrics()
    settings = ControllerSettings(
        interval=args.reconcile_interval,
        probe_failures=args.probe_failures,
        startup_deadline=args.startup_deadline,
        drain_seconds=args.drain_seconds,
        stop_grace=args.stop_grace,
        agent_lost_after=args.agent_lost_after,
        tuning=Tuning(
            stable_window=args.autoscale_stable_window,
            panic_window=args.autoscale_panic_window,
            burst_release_delay=args.autoscale_burst_release,
        ),
    )
    controller = Controller(store, table, metrics, settings, tunnel_dir=args.state_dir)
    controller.sizers = sizers
    gateway_app = create_gateway_app(
        table, metrics, token, admin_token, args.domain,
        GatewaySettings(
            hold_queue=args.hold_queue, hold_timeout=args.hold_timeout, max_client_connections=args.max_client_connections,
            listen_backlog=args.listen_backlog, header_timeout=args.header_timeout,
        ),
    )
    data_runner = make_runner(gateway_app)
    # handler_cancellation: a `logs --follow` reader that goes away ends its stream at once.
    control_runner = web.AppRunner(create_control_app(controller, admin_token, args.join_token_dir), access_log=None, handler_cancellation=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await controller.start()
        await data_runner.setup()
        await _site(data_runner, "port", args.host, args.port, backlog=args.listen_backlog).start()
        await control_runner.setup()
        await _site(control_runner, "control_port", args.host, args.control_port, ssl_context=control_ssl).start()
        port, control_port = _bound_port(data_runner), _bound_port(control_runner)
        retry = dataclasses.replace(ISSUE_RETRY, base=args.acme_retry_base)
        tls_port = (await start_tls_site(data_runner, args.host, tls_options(args), args.tls_port, retry)
                    if args.tls_port is not None else None)
        url_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        controller.public_url = (args.public_url or f"http://{url_host}:{port}").rstrip("/")
        if args.port_file is not None:
            ports = {"port": port, "control_port": control_port, "pid": os.getpid()}
            write_port_file(args.port_file, {**ports, "tls_port": tls_port} if tls_port is not None else ports)
        log.info("gateway on %s:%d, control API on %s:%d", args.host, port, args.host, control_port)
        await stop.wait()
        log.info("shutting down; replicas keep running")
    finally:
        await control_runner.cleanup()
        await data_runner.cleanup()
        await controller.close()
        store.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import uvloop  # optional: a faster event loop where installed
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    try:
        if uvloop is not None:
            uvloop.run(serve(args))
        else:
            asyncio.run(serve(args))
    except GpustackError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
