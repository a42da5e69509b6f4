"""Where the rendered HAProxy configuration spends its CPU: the same bench cell as bench/gateway.py
(CPU us/request under wrk, 64 connections, the proxy pinned to the first CPU), for nginx, HAProxy's
minimal configuration and the rendered one with one feature taken out per row.

    python bench/gateway_ablation.py [--rounds 5] [--duration 4] [--rows full,no-l7-retry,...]

Rows (each a text edit of what gpustack_iac.runtime.gateway.haproxy renders; the edit is for
measuring only, never what the gateway runs):
  full          the rendered configuration as the gateway runs it
  no-l7-retry   `retry-on conn-failure` only: no L7 retry, so HAProxy does not copy the whole request
                buffer (tune.bufsize, 16 KiB) before each send
  bufsize-65k   65 KiB buffers (as rendered before; heads up to 64 KiB, as the Python plane takes): the
                L7-retry copy four times larger
  log-all       every request logged (the sampling rules removed): the cost of a datagram per request
  no-strict     the two regex refusals (control bytes in a field, a target outside visible ASCII)
  no-xfwd       no X-Forwarded-* (option forwardfor, the set-header rules)
  no-case       no h1-case-adjust
  no-deny       none of the frontend's 400 refusals (the strict rules and the duplicate-header checks)
  no-hop        no hop-by-hop or X-Forwarded-* deletion (the del-header rules, the Lua action)
  no-normalize  no normalize-uri
  no-percent    no percent-decode-unreserved (the one normaliser that runs on every request)
  no-logsample  no request log at all (neither the datagrams nor the sampling rules)
  no-openai     no OpenAI `model` routing rules (wait-for-body, json_query, the model map)
  lean          no-strict, no-normalize, no-case, no-xfwd and no-hop together: what all of them cost
  bare          lean with no-l7-retry, no-logsample and no-openai too: every optional rule out, so what
                is left is the routing every request needs (service variables, bearer check, path
                rewrite, leastconn over slot servers)
Peers are interleaved per round (the machine may be shared); the table shows medians, the load
average per round, and nginx/ours from the same run. Everything runs on 127.0.0.1 and is stopped by
pid at the end. Needs nginx, haproxy and wrk on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as bench  # noqa: E402  (bench/gateway.py: the peers, wrk and CPU accounting)

Edit = Callable[[str], str]


def _drop(*patterns: str) -> Edit:
    return lambda text: "\n".join(line for line in text.split("\n") if not any(re.search(p, line) for p in patterns))


ROWS: dict[str, Edit] = {
    "full": lambda text: text,
    "no-l7-retry": lambda text: text.replace("retry-on conn-failure empty-response", "retry-on conn-failure"),
    "bufsize-65k": lambda text: re.sub(r"tune\.bufsize \d+", "tune.bufsize 66560", text),
    "log-all": _drop(r"set-var\(txn\.lw\)", r"set-log-level silent if"),
    "no-strict": _drop(r"-m reg \["),
    "no-xfwd": _drop(r"X-Forwarded", r"forwardfor"),
    "no-case": _drop(r"h1-case-adjust"),
    "no-deny": _drop(r"http-request deny deny_status 400"),
    "no-hop": _drop(r"del-header (keep-alive|proxy-connection|te|trailer|upgrade|x-forwarded-)", r"strip_hop"),
    "no-normalize": _drop(r"normalize-uri"),
    "no-percent": _drop(r"percent-decode-unreserved"),
    "no-logsample": _drop(r"set-var\(txn\.lw\)", r"set-log-level silent if", r"^\s*log "),
    "no-openai": _drop(r"is_openai", r"txn\.model"),
    "lean": _drop(r"-m reg \[", r"normalize-uri", r"h1-case-adjust", r"X-Forwarded", r"forwardfor",
                  r"del-header (keep-alive|proxy-connection|te|trailer|upgrade|x-forwarded-)", r"strip_hop"),
}
ROWS["bare"] = lambda text: ROWS["lean"](ROWS["no-l7-retry"](ROWS["no-logsample"](ROWS["no-openai"](text))))


def start_rendered(children: bench.Children, workdir: Path, name: str, edit: Edit, cores: list[int], token: str,
                   upstream: int) -> bench.Peer:
    from gpustack_iac.runtime.gateway.haproxy import dataplane, render
    from gpustack_iac.runtime.gateway.haproxy.dataplane import HaproxyDataPlane, PlaneOptions
    from gpustack_iac.runtime.gateway.routing import RoutingTable, ServiceRoute, Upstream

    table = RoutingTable()
    table.set_service(ServiceRoute("bench", auth=True, model="bench-model", upstreams=(Upstream("s", "base", f"http://127.0.0.1:{upstream}"),)))
    table.set_service(ServiceRoute("sse", auth=True, model=None, upstreams=(Upstream("t", "base", f"http://127.0.0.1:{upstream}"),)))
    port = bench.free_port()
    plane = HaproxyDataPlane(table, PlaneOptions(host="127.0.0.1", port=port, python_port=1, directory=workdir / name,
                                                 token=token, threads=1))

    def edited(model: render.DataPlaneModel) -> render.RenderedConfig:
        rendered = render.render_config(model)
        return render.RenderedConfig(edit(rendered.config), rendered.token_acl, rendered.model_map, rendered.lua, rendered.errorfiles)

    mine = os.sched_getaffinity(0)
    original = dataplane.render_config
    dataplane.render_config = edited  # the edit, for this plane's start only
    os.sched_setaffinity(0, cores)  # haproxy inherits the proxy core
    try:
        plane.start()
    finally:
        os.sched_setaffinity(0, mine)
        dataplane.render_config = original
    children.planes.append(plane)  # type: ignore[arg-type]
    assert plane.process.pid is not None
    return bench.Peer(name, port, plane.process.pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    args = parser.parse_args()
    for tool in ("nginx", "haproxy", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH")
    proxy, _, load = bench.core_layout()
    workdir = Path(tempfile.mkdtemp(prefix="gw-ablation-"))
    children = bench.Children()
    try:
        token = bench.secrets_token()
        static = bench.start_nginx(children, "static", load, workdir, bench.NGINX_STATIC, workers=1)
        nginx = bench.start_nginx(children, "nginx", proxy, workdir, bench.NGINX_PEER, workers=1, small=static.port,
                                  sse=static.port, token=token)
        floor = bench.start_haproxy_floor(children, "floor", proxy, workdir, small=static.port, sse=static.port, token=token)
        peers = [bench.Peer("nginx, 1 worker", nginx.port, nginx.process.pid), bench.Peer("HAProxy floor", floor.port, floor.process.pid)]
        peers += [start_rendered(children, workdir, row, ROWS[row], proxy, token, static.port) for row in args.rows.split(",")]
        os.sched_setaffinity(0, load)
        plan = bench.Plan(duration=args.duration, repeats=args.rounds, paced_seconds=1, rate=1, ttfb_streams=0, many_streams=0,
                          events=0, interval=0, connections=64, workdir=workdir, proxy_cores=proxy, load_cores=load)
        figures: dict[str, list[float]] = {p.label: [] for p in peers}
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}/{args.rounds}, load average {os.getloadavg()[0]:.2f}", flush=True)
            for peer in peers:
                figures[peer.label].append(bench.cpu_per_request(peer, token, plan))
        ng = bench.median(figures[peers[0].label])
        print(f"\n{'row':<18} {'CPU us/req':>10} {'nginx/ours':>10}  rounds")
        for label, values in figures.items():
            m = bench.median(values)
            print(f"{label:<18} {m:>10.1f} {ng / m:>10.2f}  {' '.join(f'{v:.1f}' for v in values)}")
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
