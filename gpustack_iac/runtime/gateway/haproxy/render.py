"""Render HAProxy's configuration from the gateway's route model.

Entry point (kept stable for bench/gateway.py): `render_config(model) -> RenderedConfig`. The text
holds no secret: the gateway token lives in `RenderedConfig.token_acl`, written by the caller to
a 0600 file the configuration names. Replica addresses are rendered into fixed server slots
(`r1..rN`) so the control plane can later move a slot with the Runtime API without a reload.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gpustack_iac.runtime.gateway.ratelimit import RateLimitRule
from gpustack_iac.runtime.gateway.routing import ServiceRoute, Upstream
from gpustack_iac.runtime.gateway.settings import GatewaySettings

OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
PYTHON_BACKEND = "python_plane"  # the Python gateway: activator, routers, /v1/models, /metrics, 404s
MIN_SLOTS = 8
BUFSIZE = 16 * 1024  # HAProxy's own default: the request head limit and the L7-retry copy (see _global)
# backend, server slot, ms to the response head, ms in all, status, sampling weight ("-": every request logged)
LOG_FORMAT = "%b %s %Tr %Ta %ST %[var(txn.lw)]"
# Past this many requests per second on the frontend one request in LOG_SAMPLE is logged (with weight
# LOG_SAMPLE): a log datagram is two syscalls, a third of what HAProxy spends on a small request.
LOG_SAMPLE_ABOVE_RPS = 256
LOG_SAMPLE = 16
CASE_ADJUST = ("Content-Type", "Content-Length", "Retry-After", "WWW-Authenticate", "Connection", "Cache-Control",
               "Transfer-Encoding", "Date", "Server", "Location", "Set-Cookie", "X-Content-Type-Options")
LUA = (Path(__file__).parent / "hop.lua").read_text()
# Hop-by-hop fields other than Connection (RFC 9110 7.6.1), deleted by name: a plain name compare per
# field, where a regex (`-m reg`) allocates PCRE2 match data for every field of every request.
_HOP = ("keep-alive", "proxy-connection", "te", "trailer", "upgrade")

# A service name becomes part of backend, ACL and variable names: only these characters pass.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
UPSTREAM_FAILED = "upstream-failed"  # the errorfile service backends answer instead of HAProxy's 503
# Status -> (code, message) of the JSON error HAProxy answers itself, as the Python plane words them.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "malformed request"),
    408: ("bad_request", "the request head did not arrive in time"),
    500: ("upstream_failed", "internal error"),
    502: ("upstream_failed", "the replica failed to answer"),
    503: ("no_ready_replica", "no replica can take the request"),
    504: ("upstream_failed", "the replica did not answer in time"),
}


class RenderError(ValueError):
    """A route the data plane cannot express (the control plane keeps it on the Python plane)."""


# HAProxy binds a UNIX socket under a temporary name (`<path>.<pid>.tmp`) and renames it into
# place; sun_path holds 107 bytes, so a deep state directory leaves no room for that suffix and
# HAProxy exits at start. The sockets then go to a short private directory instead.
_SUN_PATH_MAX = 107
_BIND_SUFFIX = len(".4194304.tmp")
_SOCKET_NAMES = ("log.sock", "admin.sock", "master.sock")


def socket_directory(directory: Path) -> Path:
    """`directory` itself when every socket's temporary name fits sun_path, else a short one."""
    longest = len(os.fsencode(directory)) + 1 + max(map(len, _SOCKET_NAMES)) + _BIND_SUFFIX
    if longest <= _SUN_PATH_MAX:
        return directory
    digest = hashlib.sha256(os.fsencode(directory.absolute())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gsiac-haproxy-{digest}"


def make_private_directory(path: Path) -> None:
    """Create `path` 0700, or accept it only if it already is ours, a real directory, and 0700
    (a short directory under /tmp has a name another user could take first)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RenderError(f"{path} is not a directory owned by this user; refusing to put HAProxy's sockets there")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


@dataclass(frozen=True)
class Files:
    """Where the rendered pieces live (all inside the gateway's 0700 state directory; the sockets
    too, unless that directory's path is too long for them — see `socket_directory`)."""

    directory: Path

    @property
    def sockets(self) -> Path:
        return socket_directory(self.directory)

    @property
    def config(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def token_acl(self) -> Path:
        return self.directory / "tokens.acl"

    @property
    def model_map(self) -> Path:
        return self.directory / "models.map"

    @property
    def lua(self) -> Path:
        return self.directory / "hop.lua"

    @property
    def log_socket(self) -> Path:
        return self.sockets / "log.sock"

    @property
    def admin_socket(self) -> Path:
        return self.sockets / "admin.sock"

    @property
    def master_socket(self) -> Path:
        return self.sockets / "master.sock"

    def errorfile(self, name: str) -> Path:
        return self.directory / f"error-{name}.http"


@dataclass(frozen=True)
class DataPlaneModel:
    """Everything the configuration depends on; `slots[name]` is the service's slot table."""

    host: str
    port: int
    python_port: int  # the Python gateway on 127.0.0.1
    files: Files
    token: str
    services: tuple[ServiceRoute, ...] = ()
    router_names: frozenset[str] = frozenset()
    slots: dict[str, tuple[Upstream | None, ...]] = field(default_factory=dict)
    domain: str | None = None
    settings: GatewaySettings = GatewaySettings()
    threads: int = 1
    tls_port: int | None = None
    tls_pem: Path | None = None  # certificate chain and key in one file (0600)
    generation: int = 0  # shown by `show info` (description), so a reload can be seen to have landed


@dataclass(frozen=True)
class RenderedConfig:
    config: str
    token_acl: str
    model_map: str
    lua: str
    errorfiles: dict[str, str]  # Files.errorfile(name) -> a whole HTTP response


def slot_count(replicas: int) -> int:
    """Slots for a service: room for a rollout (old and new side by side) without a reload."""
    return max(MIN_SLOTS, 2 * replicas)


def render_config(model: DataPlaneModel) -> RenderedConfig:
    for route in model.services:
        if not _NAME.match(route.name):
            raise RenderError(f"service name {route.name!r} cannot be used in the HAProxy configuration")
    lines = _global(model) + _defaults(model.settings, model.files) + _frontend(model)
    for route in model.services:
        lines += _backend(route, model.slots.get(route.name, ()), model)
        lines += _rate_tables(route)
    # The Python plane counts what it serves itself: its requests are not logged (no datagram to drop).
    lines += [f"backend {PYTHON_BACKEND}", "    http-request set-log-level silent", "    http-response set-log-level silent",
              f"    server py 127.0.0.1:{model.python_port}", ""]
    models = [
        f"{r.model} {r.name}" for r in model.services
        if r.model is not None and r.model not in model.router_names and " " not in r.model
    ]
    return RenderedConfig(
        config="\n".join(lines) + "\n",
        token_acl=f"Bearer {model.token}\n",
        model_map="\n".join(models) + ("\n" if models else ""),
        lua=LUA,
        errorfiles={
            **{str(status): _errorfile(status, code, text) for status, (code, text) in ERRORS.items()},
            UPSTREAM_FAILED: _errorfile(502, "upstream_failed", "no replica accepted the connection"),
        },
    )


def _errorfile(status: int, code: str, message: str) -> str:
    body = json.dumps({"error": {"code": code, "message": message}})
    reason = {400: "Bad Request", 408: "Request Timeout", 500: "Internal Server Error", 502: "Bad Gateway",
              503: "Service Unavailable", 504: "Gateway Timeout"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n{body}")


def _global(model: DataPlaneModel) -> list[str]:
    s = model.settings
    return [
        "global",
        f"    description gen{model.generation}",
        f"    nbthread {max(1, model.threads)}",
        f"    maxconn {s.max_client_connections + 64}",
        # The admin socket is the control plane's: mode 0600 in the private directory. The listeners
        # go to the next worker through it on a reload, so no connection is refused meanwhile.
        f"    stats socket {model.files.admin_socket} mode 600 level admin expose-fd listeners",
        "    expose-experimental-directives",  # normalize-uri (2.6 calls it experimental)
        f"    lua-load {model.files.lua}",
        # One datagram per request (one per LOG_SAMPLE past LOG_SAMPLE_ABOVE_RPS) to the control plane
        # (stats.py): times to first byte for the latency metric's p90 (`show stat` has averages only).
        f"    log {model.files.log_socket} len 512 format raw local0 info",
        # HAProxy's default buffer, set so that it stays so: L7 retries (`retry-on ... empty-response`)
        # copy the whole buffer before every send, so its size is paid per request (65 KiB buffers cost
        # 0.50x nginx's CPU per request, 16 KiB 0.67x; docs/gateway.md). Heads over BUFSIZE less
        # maxrewrite (~15 KiB) get 400 (the Python plane takes 64 KiB; nginx's default, 8 KiB a line);
        # OpenAI bodies past it are routed by `model` through the Python plane instead.
        f"    tune.bufsize {BUFSIZE}",
        # HAProxy writes HTTP/1 header names lower-case; clients see the spelling the Python plane uses.
        *(f"    h1-case-adjust {name.lower()} {name}" for name in CASE_ADJUST),
        "",
    ]


def _defaults(s: GatewaySettings, files: Files) -> list[str]:
    read = f"{int(s.read_timeout * 1000)}ms" if s.read_timeout else "24h"
    errors = [f"    errorfile {status} {files.errorfile(str(status))}" for status in ERRORS]
    return [
        "defaults",
        "    mode http",
        "    log global",
        f"    log-format \"{LOG_FORMAT}\"",
        "    option http-no-delay",  # SSE events go out as they arrive
        "    option h1-case-adjust-bogus-client",
        "    option forwardfor",
        "    option redispatch 1",
        f"    retries {s.upstream_retries}",
        "    retry-on conn-failure empty-response",  # only before the first response byte
        f"    timeout connect {int(s.connect_timeout * 1000)}ms",
        f"    timeout http-request {int(s.header_timeout * 1000)}ms",
        "    timeout client 75s",
        "    timeout http-keep-alive 75s",
        f"    timeout server {read}",
        "    timeout queue 5s",
        "    http-reuse safe",
        *errors,
        "",
    ]


def _frontend(model: DataPlaneModel) -> list[str]:
    s, f = model.settings, model.files
    lines = ["frontend gateway", f"    bind {model.host}:{model.port} backlog {s.listen_backlog}"]
    if model.tls_port is not None and model.tls_pem is not None:
        lines.append(f"    bind {model.host}:{model.tls_port} ssl crt {model.tls_pem} alpn http/1.1")
    lines += [
        f"    maxconn {s.max_client_connections}",
        "    http-request deny deny_status 400 if { req.hdr_cnt(authorization) gt 1 } || { req.hdr_cnt(host) gt 1 }",
        *_strict_rules(),
        *_normalize_rules(),
        f"    acl token_ok req.hdr(authorization) -m str -f {f.token_acl}",
        "    acl is_openai method POST",
        f"    acl openai_path path {' '.join(OPENAI_PATHS)}",
        # The client's X-Forwarded-* and hop-by-hop fields; the Lua action (the fields a Connection
        # header lists) only when there is one, which HTTP/1.1 keep-alive clients rarely send.
        "    http-request del-header x-forwarded- -m beg",
        *(f"    http-request del-header {name}" for name in _HOP),
        "    http-request lua.strip_hop_req if { req.hdr_cnt(connection) gt 0 }",
        *(f"    http-response del-header {name}" for name in _HOP),
        "    http-response lua.strip_hop_res if { res.hdr_cnt(connection) gt 0 }",
        *_log_sampling(),
    ]
    for route in model.services:
        lines += _route_acls(route)
    if model.services:
        # Set once for every /services/<name> route (the route rules above only name the service).
        lines.append("    http-request set-var(txn.kind) str(path) if { var(txn.svc) -m found }")
    lines += _host_acls(model.services, model.domain)
    lines += [
        f"    http-request wait-for-body time 5s at-least {s.buffer_limit} if is_openai openai_path !{{ var(txn.svc) -m found }}",
        "    http-request set-var(txn.model) req.body,json_query('$.model') if is_openai openai_path !{ var(txn.svc) -m found }",
        f"    http-request set-var(txn.svc) var(txn.model),map({f.model_map}) if {{ var(txn.model) -m found }}",
        "    http-request set-var(txn.kind) str(model) if { var(txn.model) -m found } { var(txn.svc) -m found }",
    ]
    for route in model.services:
        lines += _route_rules(route)
    lines += [f"    default_backend {PYTHON_BACKEND}", ""]
    return lines


def _normalize_rules() -> list[str]:
    """`normalize-uri` only on a path that has something to normalise: each normaliser walks and
    rebuilds the path, and the common request has no `//` or dot segment."""
    return [
        "    http-request normalize-uri path-merge-slashes if { path -m sub // }",
        "    http-request normalize-uri path-strip-dot if { path -m sub /. }",
        "    http-request normalize-uri path-strip-dotdot if { path -m sub /.. }",
        # Unconditional: HAProxy 2.6 ignores this normaliser when the rule has any condition (even
        # `if TRUE`; measured by the hostile suite's percent-encoded rate-limit path).
        "    http-request normalize-uri percent-decode-unreserved",
    ]


def _log_sampling() -> list[str]:
    """Every request is logged up to LOG_SAMPLE_ABOVE_RPS (exact counts where the load is light, as in
    the tests); past it one in LOG_SAMPLE, and the line carries the weight it stands for."""
    return [
        f"    http-response set-var(txn.lw) int({LOG_SAMPLE}) if {{ fe_req_rate gt {LOG_SAMPLE_ABOVE_RPS} }}",
        f"    http-response set-log-level silent if {{ var(txn.lw) -m found }} !{{ rand({LOG_SAMPLE}) -m int 0 }}",
    ]


def _strict_rules() -> list[str]:
    """Refusals the Python plane makes that HAProxy's parser lets through (docs/gateway.md, hostile corpus)."""
    deny = "    http-request deny deny_status 400 if"
    return [
        f"{deny} {{ req.ver 1.1 }} !{{ req.hdr_cnt(host) gt 0 }}",  # RFC 9112 3.2
        f"{deny} {{ req.ver 1.0 }} {{ req.hdr_cnt(transfer-encoding) gt 0 }}",
        f"{deny} {{ req.hdr_cnt(content-length) gt 1 }} || {{ req.fhdr(content-length) -m sub , }}",
        f"{deny} {{ req.hdr_cnt(content-length) gt 0 }} {{ req.hdr_cnt(transfer-encoding) gt 0 }}",
        f"{deny} {{ req.hdr_cnt(upgrade) gt 0 }} {{ req.hdr_cnt(content-length) gt 0 }} !{{ req.hdr(content-length) 0 }}",
        f"{deny} {{ req.hdrs -m reg [\\\\x00-\\\\x08\\\\x0b\\\\x0c\\\\x0e-\\\\x1f\\\\x7f] }}",  # control bytes in a field
        f"{deny} {{ url -m reg [^\\\\x21-\\\\x7e] }}",  # a target outside visible ASCII
    ]


def _route_acls(route: ServiceRoute) -> list[str]:
    n = route.name
    return [f"    http-request set-var(txn.svc) str({n}) if {{ path /services/{n} }} || {{ path_beg /services/{n}/ }}"]


def _host_acls(services: tuple[ServiceRoute, ...], domain: str | None) -> list[str]:
    """`Host: <name>.<domain>` routes, after every path route (a /services/ path wins, as on the Python plane)."""
    if not domain:
        return []
    lines: list[str] = []
    for route in services:
        n, host = route.name, f"{route.name}.{domain}".lower()
        cond = f"!{{ var(txn.svc) -m found }} {{ req.hdr(host),lower,field(1,:) -m str {host} }}"
        lines += [f"    http-request set-var(txn.kind) str(host) if {cond}",
                  f"    http-request set-var(txn.svc) str({n}) if {{ var(txn.kind) -m str host }} !{{ var(txn.svc) -m found }}"]
    return lines


def _route_rules(route: ServiceRoute) -> list[str]:
    n = route.name
    on = f"{{ var(txn.svc) -m str {n} }}"
    lines: list[str] = []
    if route.auth:
        body = json.dumps({"error": {"code": "unauthorized", "message": "missing or invalid bearer token"}})
        lines.append(
            f"    http-request return status 401 content-type application/json string '{body}' "
            f"hdr WWW-Authenticate Bearer if {on} !token_ok"
        )
    lines += _rate_rules(route)
    lines.append(f"    use_backend svc_{n} if {on} {{ nbsrv(svc_{n}) gt 0 }}")
    return lines


def _replica_path_var(route: ServiceRoute) -> list[str]:
    """The path as the replica sees it, in txn.rpath: what a rate-limit prefix is compared with."""
    n = route.name
    on = f"{{ var(txn.svc) -m str {n} }}"
    return [
        f"    http-request set-var(txn.rpath) path,regsub(^/services/{re.escape(n)}/?,/) if {on} {{ var(txn.kind) -m str path }}",
        f"    http-request set-var(txn.rpath) path,regsub(^/v1/,{route.model_prefix.rstrip('/')}/) if {on} {{ var(txn.kind) -m str model }}",
        f"    http-request set-var(txn.rpath) path if {on} {{ var(txn.kind) -m str host }}",
    ]


def _table(route: ServiceRoute, i: int) -> str:
    return f"rl_{route.name}_{i}"


def _window_ms(rule: RateLimitRule) -> int:
    return max(1, round(1000 * (rule.burst + 1) / rule.rps))


def _rate_rules(route: ServiceRoute) -> list[str]:
    if not route.rate_limits:
        return []
    n = route.name
    on = f"{{ var(txn.svc) -m str {n} }}"
    lines = _replica_path_var(route)
    # Longest prefix first; the first that matches claims the request (txn.rl), as the Python plane.
    ordered = sorted(enumerate(route.rate_limits), key=lambda item: -len(item[1].prefix))
    for i, rule in ordered:
        lines.append(f"    http-request set-var(txn.rl) str({_table(route, i)}) if {on} "
                     f"{{ var(txn.rpath) -m beg {rule.prefix} }} !{{ var(txn.rl) -m found }}")
    for i, rule in ordered:
        t = _table(route, i)
        mine = f"{{ var(txn.rl) -m str {t} }}"
        if rule.header:
            lines.append(f"    http-request track-sc0 req.hdr({rule.header}) table {t} if {mine} {{ req.hdr({rule.header}) -m found }}")
            lines.append(f"    http-request track-sc0 src,ipmask(32,128) table {t} if {mine} !{{ req.hdr({rule.header}) -m found }}")
        else:
            lines.append(f"    http-request track-sc0 src,ipmask(32,128) table {t} if {mine}")
        retry = max(1, math.ceil(1 / rule.rps))
        body = json.dumps({"error": {"code": "rate_limited",
                                     "message": f"service {n!r}: more than {rule.rps:g} requests per second on {rule.prefix}; retry in {retry}s"}})
        lines.append(
            f"    http-request return status 429 content-type application/json string '{body}' hdr Retry-After {retry} "
            f"if {mine} {{ sc_http_req_rate(0) gt {rule.burst + 1} }}"
        )
    return lines


def _rate_tables(route: ServiceRoute) -> list[str]:
    lines: list[str] = []
    for i, rule in enumerate(route.rate_limits):
        w = _window_ms(rule)
        kind = "string len 256" if rule.header else "ip"
        lines += [f"backend {_table(route, i)}",
                  f"    stick-table type {kind} size 100k expire {max(w, 1000)}ms store http_req_rate({w}ms)", ""]
    return lines


def _backend(route: ServiceRoute, slots: tuple[Upstream | None, ...], model: DataPlaneModel) -> list[str]:
    n = route.name
    lines = [f"backend svc_{n}", "    balance leastconn",
             # A service backend is used only with a usable slot, so HAProxy's own 503 there means every
             # tried replica refused the connection: the Python plane's 502 upstream_failed.
             f"    errorfile 503 {model.files.errorfile(UPSTREAM_FAILED)}",
             *_forwarded_proto(model),
             "    http-request add-header X-Forwarded-Host %[req.hdr(host)] if { req.hdr(host) -m found }",
             f"    http-request replace-path ^/services/{re.escape(n)}/?(.*)$ /\\1 if {{ var(txn.kind) -m str path }}",
             f"    http-request replace-path ^/v1/(.*)$ {route.model_prefix.rstrip('/')}/\\1 if {{ var(txn.kind) -m str model }}"]
    # The gateway's token never reaches a replica; an open service keeps any other Authorization.
    lines.append("    http-request del-header authorization" + ("" if route.auth else " if token_ok_b"))
    if not route.auth:
        lines.insert(1, f"    acl token_ok_b req.hdr(authorization) -m str -f {model.files.token_acl}")
    for i, up in enumerate(slots or (None,) * slot_count(len(route.upstreams)), start=1):
        lines.append(f"    server r{i} {server_address(up) if up else '127.0.0.1:1'}" + ("" if up else " disabled"))
    return lines + [""]


def _forwarded_proto(model: DataPlaneModel) -> list[str]:
    """`add-header`, not `set-header`: the frontend already deleted every client X-Forwarded-* field,
    so there is nothing to look for (set-header scans the fields and deletes first)."""
    if model.tls_port is None or model.tls_pem is None:
        return ["    http-request add-header X-Forwarded-Proto http"]  # no TLS listener: one constant rule
    return ["    http-request add-header X-Forwarded-Proto https if { ssl_fc }",
            "    http-request add-header X-Forwarded-Proto http if !{ ssl_fc }"]


def server_address(up: Upstream) -> str:
    parts = urlsplit(up.url)
    if parts.hostname is None or parts.port is None:
        raise RenderError(f"replica {up.replica_id}: cannot route to {up.url!r} (needs http://HOST:PORT)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"
