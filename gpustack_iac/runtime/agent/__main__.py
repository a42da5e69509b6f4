"""Entry point: `python -m gpustack_iac.runtime.agent --port 0 --token-file F --state-dir D [--port-file P]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from gpustack_iac.errors import GpustackError
from gpustack_iac.runtime.agent.hostinfo import StaticFacts, host_report
from gpustack_iac.runtime.agent.join import JoinConfig, keep_joined
from gpustack_iac.runtime.agent.server import build_app
from gpustack_iac.runtime.agent.store import Store
from gpustack_iac.runtime.agent.supervisor import Supervisor, SupervisorConfig
from gpustack_iac.runtime.auth import read_token_file
from gpustack_iac.runtime.listenfds import inherited_socket
from gpustack_iac.runtime.procs import write_port_file

log = logging.getLogger("gpustack_iac.agent")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gpustack_iac.runtime.agent", description="gpustack-iac host agent")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    parser.add_argument("--token-file", type=Path, required=True, help="file (mode 0600) holding the bearer token")
    parser.add_argument("--state-dir", type=Path, required=True, help="where replica records and logs live")
    parser.add_argument("--port-file", type=Path, help="write {port, pid} here as JSON once listening")
    parser.add_argument("--name", help="host name reported by /v1/host (default: the machine's hostname)")
    join = parser.add_argument_group("joining a controller (docs/cloud.md#joining)")
    join.add_argument("--controller-url", help="register with this controller's control API")
    join.add_argument("--join-token-file", type=Path, help="file (mode 0600) holding the fleet's join token")
    join.add_argument("--fleet", help="the fleet this host belongs to (its join token's fleet)")
    join.add_argument("--node-group", help="the node group (scaling group) this host belongs to")
    join.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a label for placement")
    join.add_argument("--advertise-url", help="where the controller reaches this agent (default http://HOST:PORT)")
    join.add_argument("--join-check-interval", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.controller_url and not (args.join_token_file and args.fleet):
        parser.error("--controller-url needs --join-token-file and --fleet")
    return args


def _join_config(args: argparse.Namespace, token: str, name: str, port: int) -> JoinConfig:
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GpustackError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    return JoinConfig(
        controller_url=args.controller_url.rstrip("/"), join_token=read_token_file(args.join_token_file),
        fleet=args.fleet, name=name, url=(args.advertise_url or f"http://{_advertise_host(args.host)}:{port}").rstrip("/"),
        agent_token=token, node_group=args.node_group, labels=labels, check_interval=args.join_check_interval)


def _advertise_host(listen_host: str, advertise_url: str | None = None) -> str:
    # A cloud node listens on every address and names its private one with --advertise-url: its
    # replicas' URLs must name that address too, or the gateway on another machine cannot reach them.
    if advertise_url and urlsplit(advertise_url).hostname:
        return str(urlsplit(advertise_url).hostname)
    # A wildcard address is not something a caller can connect to.
    return "127.0.0.1" if listen_host in ("", "0.0.0.0", "::") else listen_host


async def serve(args: argparse.Namespace) -> None:
    token = read_token_file(args.token_file)
    # Read before anything starts, so a bad join file is one message and a non-zero exit.
    join_check = _join_config(args, token, "", 0) if args.controller_url else None
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    facts = await asyncio.to_thread(StaticFacts.gather, args.name)
    store = Store(state_dir)
    config = SupervisorConfig(
        state_dir=state_dir,
        advertise_host=_advertise_host(args.host, args.advertise_url),
        gpus=frozenset(g.index for g in facts.gpus),
        docker=facts.docker,
    )
    supervisor = Supervisor(store, config)
    for problem in await supervisor.resume():
        log.warning("skipped an unreadable replica record: %s", problem)
    runner = web.AppRunner(build_app(token, supervisor, facts, state_dir), access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    # Under the watchdog the port is already bound and handed down, so it stays open across restarts.
    sock = inherited_socket("port")
    site: web.BaseSite = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = int(runner.addresses[0][1])
    if args.port_file:
        write_port_file(args.port_file, {"port": port, "pid": os.getpid()})
    log.info("agent %s listening on %s:%d (%d replicas resumed)", facts.name, args.host, port, len(supervisor.list()))

    joining: asyncio.Task[None] | None = None
    if join_check is not None:
        cfg = _join_config(args, token, facts.name, port)
        joining = asyncio.create_task(keep_joined(cfg, host_report(facts, state_dir)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if joining is not None:
        joining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await joining
    log.info("shutting down; replicas keep running and are re-adopted by the next agent")
    await supervisor.close()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415 - optional speed-up, only when installed

        uvloop.install()
    try:
        asyncio.run(serve(args))
    except GpustackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # Typically the port is taken or the state dir is not writable.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
