"""Agent self-registration ("join", docs/cloud.md#joining): an agent proves it belongs to a fleet
with that fleet's join token and registers itself, instead of the stack registering it.

Join tokens live as files `<fleet>.token` (mode 0600) in the gateway's `--join-token-dir`; they
are read on each join, so a fleet added later (its token fetched into the directory) joins
without a gateway restart. The join token only admits agents: it never opens the rest of the
control API, which keeps the admin token.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from gpustack_iac.runtime.auth import TokenFileError, bearer_token, json_error, json_response, read_token_file, token_matches

log = logging.getLogger("gpustack_iac.controller.join")

JOIN_PREFIX = "/control/join/"
_FLEET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class JoinTokens:
    """The join tokens of the fleets, one file per fleet in a directory."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def token(self, fleet: str) -> str | None:
        if self.directory is None or not _FLEET.match(fleet):
            return None
        path = self.directory / f"{fleet}.token"
        if not path.exists():
            return None
        try:
            return read_token_file(path)
        except TokenFileError as exc:
            log.error("join token of fleet %s unusable: %s", fleet, exc)
            return None

    def admits_any(self, presented: str | None) -> bool:
        """Whether the token is some fleet's: the check a join passes before its body is read."""
        if self.directory is None or not presented or not self.directory.is_dir():
            return False
        return any(self.admits(path.name[: -len(".token")], presented) for path in sorted(self.directory.glob("*.token")))

    def admits(self, fleet: str, presented: str | None) -> bool:
        expected = self.token(fleet)
        return expected is not None and token_matches(presented, expected)


def join_labels(body: dict[str, Any]) -> dict[str, Any]:
    """Labels the controller keeps for a joined agent: the agent's own, then fleet and node group,
    which the agent cannot override (they are what its join token vouches for)."""
    labels = body.get("labels") or {}
    if not isinstance(labels, dict):
        raise ValueError("labels: expected an object")
    facts = body.get("facts") or {}
    if not isinstance(facts, dict):
        raise ValueError("facts: expected an object")
    out: dict[str, Any] = {str(k): v for k, v in labels.items()}
    out["fleet"] = body["fleet"]
    if isinstance(body.get("node_group"), str):
        out["node_group"] = body["node_group"]
    if facts:
        out["facts"] = facts
    return out


def check_join_body(body: Any) -> str | None:
    """The problem with a join body, or None when it is well-formed."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for key in ("fleet", "url", "token"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f'join needs {{"fleet": str, "url": str, "token": str, ...}}: {key} is missing'
    if not _FLEET.match(body["fleet"]):
        return f"fleet {body['fleet']!r} is not a valid fleet name"
    return None


def refuse(request: web.Request, fleet: str | None, name: str) -> web.Response:
    # Logged without the presented token: the address and the claimed identity are enough to act on.
    log.warning("refused join of agent %r (fleet %r) from %s: invalid join token", name, fleet, request.remote)
    return json_error(401, "unauthorized", "missing or invalid join token")


def is_join_path(request: web.Request) -> bool:
    return request.path.startswith(JOIN_PREFIX)


def presented(request: web.Request) -> str | None:
    return bearer_token(request)


__all__ = ["JOIN_PREFIX", "JoinTokens", "check_join_body", "is_join_path", "join_labels", "json_response", "presented", "refuse"]
