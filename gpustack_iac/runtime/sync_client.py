"""A small synchronous JSON client for the runtime's APIs (the control API, agents).

Its callers are synchronous: the providers (under the embedded engine or Pulumi's provider host)
and the `status` / `logs` commands. So this is plain urllib rather than `client.py`'s aiohttp, and
importing it loads neither aiohttp nor Pulumi.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Iterator

from gpustack_iac.errors import RuntimeApiError


class NotFound(RuntimeApiError):
    """The API answered 404."""


def call(method: str, base_url: str, path: str, token: str, body: Any = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
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
        with urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read1(65536):
                yield chunk
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        error = NotFound if exc.code == 404 else RuntimeApiError
        raise error(f"GET {path}: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeApiError(f"GET {base_url}{path}: {getattr(exc, 'reason', exc)}") from exc
