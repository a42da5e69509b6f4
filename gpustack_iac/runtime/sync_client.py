"""A small synchronous JSON client for the runtime's APIs (the control API, agents).

Its callers are synchronous: the providers (under the embedded engine or Pulumi's provider host)
and the `status` / `logs` commands. So this is plain urllib rather than `client.py`'s aiohttp, and
importing it loads neither aiohttp nor Pulumi.
"""

from __future__ import annotations

import ipaddress
from http.client import HTTPResponse
import json
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


def _open(request: urllib.request.Request, timeout: float) -> IO[bytes]:
    if is_loopback(request.full_url):
        return _DIRECT.open(request, timeout=timeout)  # type: ignore[no-any-return]
    return urllib.request.urlopen(request, timeout=timeout)  # type: ignore[no-any-return]


def call(method: str, base_url: str, path: str, token: str, body: Any = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _open(request, timeout) as response:
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


def stream(base_url: str, path: str, token: str, timeout: float = 3600.0) -> Iterator[bytes]:
    """GET `path` and yield the body as it arrives (a followed log), until the server ends it."""
    request = urllib.request.Request(base_url.rstrip("/") + path, method="GET")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with _open(request, timeout) as response:
            # urlopen's response (http.client.HTTPResponse) has read1: what has arrived, without waiting for more.
            while chunk := cast(HTTPResponse, response).read1(65536):
                yield chunk
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        error = NotFound if exc.code == 404 else RuntimeApiError
        raise error(f"GET {path}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeApiError(f"GET {base_url}{path}: {getattr(exc, 'reason', exc)}") from exc
