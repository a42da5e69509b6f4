"""Async client for the agent API (docs/runtime-api.md, "Agent API"); the controller uses it."""

from __future__ import annotations

import builtins
import json
from types import TracebackType
from typing import Any, AsyncIterator, Mapping, cast

import aiohttp

from gpustack_iac.errors import AgentApiError, RuntimeApiError


class AgentClient:
    """One agent. Reuses a caller's pooled session when given one (closing it stays the caller's job).

    Errors: AgentApiError (with .status and .code) when the agent answers with an error,
    RuntimeApiError when it cannot be reached. The token is never part of any message.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session = session
        self._owns_session = session is None
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"AgentClient({self.url!r})"

    async def __aenter__(self) -> "AgentClient":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Agents are reached directly: never through `http_proxy`, which would see the bearer token.
            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session

    async def _request(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> tuple[int, bytes]:
        try:
            async with self._get_session().request(
                method,
                self.url + path,
                headers=self._headers,
                json=body,
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout or self._timeout),
            ) as response:
                data = await response.read()
                if response.status >= 400:
                    raise _api_error(method, path, response.status, data)
                return response.status, data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RuntimeApiError(f"agent {self.url}: {method} {path} failed: {exc or type(exc).__name__}") from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        _, data = await self._request(method, path, **kwargs)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise RuntimeApiError(f"agent {self.url}: {method} {path} answered with invalid JSON") from exc

    async def health(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self._json("GET", "/v1/health"))

    async def host(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self._json("GET", "/v1/host", timeout=max(self._timeout, 30.0)))

    async def start(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """POST a ReplicaSpec; idempotent for the same id and spec (returns the running replica)."""
        return cast(dict[str, Any], await self._json("POST", "/v1/replicas", body=dict(spec), timeout=max(self._timeout, 120.0)))

    async def list(self) -> builtins.list[dict[str, Any]]:  # `list` is a method of this class
        return cast(builtins.list[dict[str, Any]], await self._json("GET", "/v1/replicas"))

    async def get(self, replica_id: str) -> dict[str, Any] | None:
        """The replica, or None when the agent does not run it."""
        try:
            return cast(dict[str, Any], await self._json("GET", f"/v1/replicas/{replica_id}"))
        except AgentApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def logs(self, replica_id: str, tail: int = 200) -> str:
        _, data = await self._request("GET", f"/v1/replicas/{replica_id}/logs", params={"tail": str(tail)})
        return data.decode("utf-8", errors="replace")

    async def follow_logs(self, replica_id: str, tail: int = 200) -> AsyncIterator[bytes]:
        """Yield log output as it is written, until the replica is deleted or the caller stops."""
        path = f"/v1/replicas/{replica_id}/logs"
        try:
            async with self._get_session().get(
                self.url + path,
                headers=self._headers,
                params={"tail": str(tail), "follow": "1"},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout),
            ) as response:
                if response.status >= 400:
                    raise _api_error("GET", path, response.status, await response.read())
                async for chunk in response.content.iter_any():
                    yield chunk
        except aiohttp.ClientError as exc:
            raise RuntimeApiError(f"agent {self.url}: following logs of {replica_id} failed: {exc}") from exc

    async def stop(self, replica_id: str, grace: float = 10.0) -> dict[str, Any] | None:
        """Stop and forget a replica; None when the agent did not run it (already gone)."""
        try:
            return cast(dict[str, Any], await self._json(
                "DELETE", f"/v1/replicas/{replica_id}", params={"grace": f"{grace:g}"}, timeout=grace + max(self._timeout, 30.0)
            ))
        except AgentApiError as exc:
            if exc.status == 404:
                return None
            raise


def _api_error(method: str, path: str, status: int, data: bytes) -> AgentApiError:
    code, message = "http_error", data.decode("utf-8", errors="replace")[:500]
    try:
        err = json.loads(data)["error"]
        code, message = str(err.get("code", code)), str(err.get("message", message))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return AgentApiError(f"{method} {path}: {status} {message}", status, code)
