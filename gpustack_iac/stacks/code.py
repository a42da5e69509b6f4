"""The code bundles of a stack's runs (`files:`, `repos:`) as resources: one per distinct bundle on
this machine (local fleets), or one per bundle and SSH fleet host (created after that host)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pulumi

from gpustack_iac.providers.code import Code, SshCode
from gpustack_iac.stacks.fleet import Fleet

_TARGET_KEYS = ("hostname", "port", "user", "identity_file", "known_hosts", "host_key", "host_key_policy", "proxy_jump")


def code_resources(archives: dict[str, tuple[Path, list[dict[str, Any]]]], dest_root: Path,
                   fleets: Sequence[Fleet]) -> list[pulumi.Resource]:
    """`archives`: bundle key -> (the planned archive, the repos the host clones)."""
    out: list[pulumi.Resource] = []
    ssh_hosts = [h for f in fleets for h in f.hosts if h.ssh_props is not None]
    for key, (archive, clones) in sorted(archives.items()):
        if not ssh_hosts:
            out.append(Code(f"code-{key[:12]}", {"key": key, "archive": str(archive), "dest_root": str(dest_root),
                                                 "clones": clones}))
        for host in ssh_hosts:
            props: dict[str, Any] = host.ssh_props or {}
            target = {k: props.get(k) for k in _TARGET_KEYS}
            out.append(SshCode(f"code-{key[:12]}-{host.name}", {
                "key": key, "archive": str(archive), "clones": clones, "target": target,
                "remote_root": f"{str(props.get('install_dir') or '~/.gpustack').rstrip('/')}/code"},
                pulumi.ResourceOptions(depends_on=[host.resource] if host.resource is not None else [])))
    return out
