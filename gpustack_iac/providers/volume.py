"""A host volume: a named directory on one host, created through that host's agent.

Its data is never deleted by surprise: deleting the resource keeps the directory unless
`auto_cleanup` is set, and a change that would put the volume on another host (or path) is
refused at plan time, since the data would stay behind.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from gpustack_iac.errors import ConfigError, Diagnostic, RuntimeApiError
from gpustack_iac.runtime import sync_client as http
from gpustack_iac.runtime.tunnels import forwarded_agent_url


class VolumeHostUnreachable(RuntimeApiError):
    """The volume's SSH host did not answer over SSH."""


def _reach(props: dict[str, Any]) -> contextlib.AbstractContextManager[str | None]:
    return forwarded_agent_url(str(props["host"]), str(props["agent_url"]), props.get("agent_tunnel"))


def _path(props: dict[str, Any]) -> str:
    name = urllib.parse.quote(str(props["name"]), safe="")
    return f"/v1/volumes/{name}"


class VolumeProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        with _reach(props) as url:
            if url is None:
                raise VolumeHostUnreachable(f"volume {props['name']}: host {props['host']} cannot be reached over SSH")
            info = http.call("PUT", url, _path(props), props["agent_token"],
                             {"path": props["path"], "size_bytes": int(props.get("size_bytes") or 0)})
        return CreateResult(id_=str(props["name"]), outs={**props, "created_at": info.get("created_at")})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        query = urllib.parse.urlencode({"path": props["path"]})
        with _reach(props) as url:
            try:
                if url is not None:
                    http.call("GET", url, f"{_path(props)}?{query}", props["agent_token"])
            except http.NotFound:
                return ReadResult(id_=None, outs={})
            except RuntimeApiError:
                pass  # the host is down: its data is not gone
        return ReadResult(id_=id_, outs=props)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        for key in ("host", "path", "name"):
            if olds.get(key) != news.get(key):
                raise ConfigError([Diagnostic(file=f"volume {olds.get('name')}", line=0, column=0, path="",
                                              message=f"this change would move its data ({key} "
                                                      f"{olds.get(key)} → {news.get(key)}); the data stays at "
                                                      f"{olds.get('host')}:{olds.get('path')}. Keep {key} as it was, or "
                                                      "give the volume a new name (the old one is then kept unless auto_cleanup)")])
        keys = ("size_bytes", "auto_cleanup", "agent_url", "agent_token", "agent_tunnel")
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in keys))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**olds, **news})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if not props.get("auto_cleanup"):
            return  # kept: data is deleted only when the configuration says auto_cleanup
        query = urllib.parse.urlencode({"path": props["path"]})
        with _reach(props) as url:
            if url is None:
                raise VolumeHostUnreachable(f"volume {props['name']}: host {props['host']} cannot be reached over SSH; "
                                            "its data was not deleted")
            try:
                http.call("DELETE", url, f"{_path(props)}?{query}", props["agent_token"])
            except http.NotFound:
                pass


class Volume(Resource, module="workload", name="Volume"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["agent_token"])
        super().__init__(VolumeProvider(), name, {"created_at": None, **props}, pulumi.ResourceOptions.merge(opts, secret))
