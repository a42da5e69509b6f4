"""Bearer-token authentication and JSON answers shared by the agent, the gateway and the controller.

Tokens live in files with mode 0600 and are passed to servers by path, never on the command
line (argv is visible to every user through `ps`).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gpustack_iac.errors import GpustackError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Returns the token a request must present, or None when the route is open (e.g. a service with auth: false).
TokenProvider = Callable[[web.Request], "str | None"]


class TokenFileError(GpustackError):
    """A token file is missing, empty or readable by other users."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.chmod(path, 0o600)


def read_token_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(f"token file {path} is readable by other users; run: chmod 600 {path}")
    if not token:
        raise TokenFileError(f"token file {path} is empty")
    return token


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return None
    return value.strip()


def token_matches(presented: str | None, expected: str) -> bool:
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


# Logs a server returns are capped: a client asking for more gets this many lines.
MAX_LOG_TAIL = 100_000


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def tail_query(request: web.Request, default: int = 200) -> int:
    """The `tail` query parameter, clamped to 0..MAX_LOG_TAIL; ValueError when it is not a number."""
    try:
        value = int(float(request.query.get("tail", default)))
    except ValueError:
        raise ValueError("query parameter tail must be a number") from None
    return min(max(value, 0), MAX_LOG_TAIL)


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None,
    )


def bearer_auth_middleware(token_provider: TokenProvider) -> Middleware:
    """aiohttp middleware: 401 unless the request carries the token `token_provider` names for it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        expected = token_provider(request)
        if expected is not None and not token_matches(bearer_token(request), expected):
            return json_error(401, "unauthorized", "missing or invalid bearer token")
        return await handler(request)

    return middleware
