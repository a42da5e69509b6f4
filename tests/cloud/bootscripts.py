"""Reading a rendered boot script (providers/cloudboot.py) back: its config, its units, the
fetcher it carries, and every boot script of a resource graph."""

from __future__ import annotations

import base64
import json
import shlex
import zlib
from typing import Any

from tests.cloud.mockstack import Graph


def heredoc(script: str, opening: str, tag: str) -> str:
    """The body of the here-document opened by the line `opening <<'tag'`."""
    return script.split(f"{opening} <<'{tag}'\n", 1)[1].split(f"\n{tag}\n", 1)[0]


def config(script: str) -> dict[str, Any]:
    return dict(json.loads(heredoc(script, "cat > /opt/gpustack/boot.json", "GPUSTACK_BOOT_CONFIG")))


def unit_argv(script: str, name: str) -> list[str]:
    """The ExecStart of the unit NAME as argv (systemd's `%%` undone)."""
    text = heredoc(script, f"cat > /etc/systemd/system/{name}.service", "GPUSTACK_UNIT")
    [line] = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    return [w.replace("%%", "%") for w in shlex.split(line[len("ExecStart="):])]


def fetcher(script: str) -> str:
    """The boot fetcher the script carries, unpacked."""
    packed = script.split("<<'GPUSTACK_BOOTFETCH'\n", 1)[1].split("\nGPUSTACK_BOOTFETCH\n", 1)[0]
    return zlib.decompress(base64.b64decode(packed)).decode()


def _b64(value: str) -> str:
    return base64.b64decode(value).decode()


# Where each cloud's instances carry their boot script: (resource type, how to read it).
_SCRIPTS = [
    ("aws:ec2/launchTemplate:LaunchTemplate", lambda i: _b64(i["userData"])),
    ("aws:ec2/instance:Instance", lambda i: i["userData"]),
    ("gcp:compute/instanceTemplate:InstanceTemplate", lambda i: i["metadataStartupScript"]),
    ("gcp:compute/instance:Instance", lambda i: i["metadataStartupScript"]),
    ("azure-native:compute:VirtualMachineScaleSet", lambda i: _b64(i["virtualMachineProfile"]["userData"])),
    ("azure-native:compute:VirtualMachine", lambda i: _b64(i["userData"])),
]


def boot_scripts(graph: Graph) -> dict[str, str]:
    """Every boot script of the graph, by `<type>/<name>`."""
    return {f"{t}/{r.name}": read(r.inputs) for t, read in _SCRIPTS for r in graph.of_type(t)}
