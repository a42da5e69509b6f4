"""A dynamic resource that lives on a "host" (a TCP listener): create and delete must reach it.

Stands in for an SSH host resource in the engine-level tests of `destroy --force` / `state rm`: once
the listener is closed, every delete fails with the connection error, as for a host gone for good.
"""

from __future__ import annotations

import socket
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


def _reach(props: dict[str, Any]) -> None:
    try:
        socket.create_connection((props["host"], int(props["port"])), timeout=5).close()
    except OSError as exc:
        raise ConnectionError(f"cannot reach {props['host']}:{props['port']}: {exc}") from None


class OnHostProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        _reach(props)
        return CreateResult(id_=f"{props['host']}:{props['port']}", outs=props)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        _reach(props)


class OnHost(Resource, module="test", name="OnHost"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(OnHostProvider(), name, props, opts)
