"""A small synchronous JSON client for the runtime's APIs (the control API, agents).

Its callers are synchronous: the providers (under the embedded engine or Pulumi's provider host)
and the `status` / `logs` commands. So this is plain urllib rather than `client.py`'s aiohttp, and
importing it loads neither aiohttp nor Pulumi.
"""

from __future__ import annotations

import ipaddress
from http.client import HTTPResponse
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any, Iterator, cast

from gpustack_iac.errors import RuntimeApiError


class NotFound(RuntimeApiError):
    """The API answered 404."""


# Loopback calls never go through `http_proxy` / `https_proxy`: a proxy would see the bearer token,
# and one that cannot reach this machine's loopback would fail every call.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def pinned_context(ca: str) -> ssl.SSLContext:
    """A client context that trusts the one CA given (PEM) and nothing else: not the system's
    store, so only the gateway's own CA (runtime/gateway/control_tls.py) can vouch for it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED are its defaults
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cadata=ca)
    except (ssl.SSLError, ValueError) as exc:
        raise RuntimeApiError(f"the pinned control CA is not a PEM certificate: {exc}") from None
    return ctx


def _open(request: urllib.request.Request, timeout: float, ca: str | None = None) -> IO[bytes]:
    if ca is not None:
        if not request.full_url.startswith("https://"):
            # A pinned CA means the API is served over TLS: never send the token in the clear.
            raise RuntimeApiError(f"{request.full_url}: a control CA is pinned but the URL is not https")
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=pinned_context(ca))]
        if is_loopback(request.full_url):
            handlers.append(urllib.request.ProxyHandler({}))
        return urllib.request.build_opener(*handlers).open(request, timeout=timeout)  # type: ignore[no-any-return]
    if is_loopback(request.full_url):
        return _DIRECT.open(request, timeout=timeout)  # type: ignore[no-any-return]
    return urllib.request.urlopen(request, timeout=timeout)  # type: ignore[no-any-return]


def call(method: str, base_url: str, path: str, token: str, body: Any = None, timeout: float = 30.0,
         ca: str | None = None) -> Any:
    """One JSON call; `ca` (PEM) pins the server's CA for an https URL (the gateway's control API)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _open(request, timeout, ca) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        error = NotFound if exc.code == 404 else RuntimeApiError
        raise error(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeApiError(f"{method} {base_url}{path}: {reason}") from exc
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def stream(base_url: str, path: str, token: str, timeout: float = 3600.0, ca: str | None = None) -> Iterator[bytes]:
    """GET `path` and yield the body as it arrives (a followed log), until the server ends it."""
    request = urllib.request.Request(base_url.rstrip("/") + path, method="GET")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with _open(request, timeout, ca) as response:
            # urlopen's response (http.client.HTTPResponse) has read1: what has arrived, without waiting for more.
            while chunk := cast(HTTPResponse, response).read1(65536):
                yield chunk
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        error = NotFound if exc.code == 404 else RuntimeApiError
        raise error(f"GET {path}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeApiError(f"GET {base_url}{path}: {getattr(exc, 'reason', exc)}") from exc
