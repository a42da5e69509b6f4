"""The plan summary and the controller agree on what restarts replicas, by construction.

Both call contract/restart.py: the summary lists `restart_reasons`, the controller rolls a group
whose generation (a hash of exactly those inputs, stamped once on the final group) changed.
Every example is compiled and each of its services' definitions changed one property at a time.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from gpustack_iac.compile import compile_spec
from gpustack_iac.compile.facts import Facts
from gpustack_iac.contract.restart import GROUP_KEYS, SERVICE_KEYS, rolls, stamp_generations
from gpustack_iac.plan_summary import summarize
from gpustack_iac.runtime.controller.model import parse_service
from gpustack_iac.spec.loader import load_paths
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.service import Service

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (REPO / "examples").iterdir() if any(p.glob("*.gpustack.yml")) or any(p.glob("*.dstack.yml")))
Definition = dict[str, Any]


# For the examples that only validate on their own (router, llm-replica-groups): a gateway to run behind
# and a fleet to run on.
GATEWAY = ("type: gateway\nname: added\nbackend: local\ndefault: true\ncertificate: null\n---\n"
           "type: fleet\nname: added\nbackends: [local]\nnodes: 1\n")


def _compiled(folder: Path, tmp_path: Path) -> dict[str, Definition]:
    # hosts=[]: no probe of this machine, and never of an example's SSH addresses.
    spec = load_paths([folder], env={})
    if spec.services and not spec.gateways and not spec.fleets:
        copy_ = tmp_path / "with-gateway" / folder.name
        shutil.copytree(folder, copy_)
        (copy_ / "added.gpustack.yml").write_text(GATEWAY)
        spec = load_paths([copy_], env={})
    ctx = StackContext(project="p", stack="dev", state_root=tmp_path, fingerprint_key=lambda: b"k" * 32)
    return compile_spec(spec, ctx, hosts=[]).definitions


def _group(change: Callable[[Definition], None]) -> Callable[[Definition], None]:
    def each(service: Definition) -> None:
        for group in service["groups"]:
            change(group)
    return each


# Property → (how to change it, whether it restarts replicas).
CHANGES: dict[str, tuple[Callable[[Definition], None], bool]] = {
    "commands": (_group(lambda g: g.__setitem__("commands", ["echo setup", *g["commands"]])), True),
    "image": (_group(lambda g: g.__setitem__("image", "other:2")), True),
    "env": (_group(lambda g: g.__setitem__("env", {**g["env"], "ADDED": "1"})), True),
    "working_dir": (_group(lambda g: g.__setitem__("working_dir", "/moved/elsewhere")), True),
    "resources": (_group(lambda g: g["resources"]["cpu"].__setitem__("min", g["resources"]["cpu"]["min"] + 1)), True),
    "mounts": (_group(lambda g: g.__setitem__("mounts", [{"source": "/srv/d", "target": "/d", "name": ""}])), True),
    "container": (_group(lambda g: g.__setitem__("container", {**(g.get("container") or {}), "user": "nobody"})), True),
    "host_port": (_group(lambda g: g.__setitem__("host_port", 9999)), True),
    "port": (lambda s: s.__setitem__("port", (s["port"] or 80) + 1), True),
    "probe": (lambda s: s.__setitem__("probe", {"url": "/other", "method": "GET", "headers": {}, "body": None,
                                                "timeout": 5.0, "interval": 2.0}), True),
    "probes": (lambda s: s.__setitem__("probes", [{"url": "/a", "method": "GET", "headers": {}, "body": None, "timeout": 5.0, "interval": 2.0},
                                                  {"url": "/b", "method": "GET", "headers": {}, "body": None, "timeout": 5.0, "interval": 2.0}]),
               True),
    "replicas": (_group(lambda g: g.__setitem__("replicas", {"min": g["replicas"]["min"] + 1, "max": g["replicas"]["max"] + 1})), False),
    "placement": (_group(lambda g: g["placement"].__setitem__("backends", ["local", "ssh"])), False),
    "auth": (lambda s: s.__setitem__("auth", not s["auth"]), False),
}


def test_the_rule_covers_every_restart_input() -> None:
    restarting = {k for k, (_, restarts) in CHANGES.items() if restarts}
    assert restarting == (set(GROUP_KEYS) | set(SERVICE_KEYS)) - {"hosts"}  # hosts move with mounts


def _summary_rolls(old: Definition, new: Definition, ctx: StackContext) -> set[str]:
    changes = summarize({("service", old["name"]): Service.spec_of(old, ctx)},
                        {("service", new["name"]): Service.spec_of(new, ctx)})
    return {c.name.split("/", 1)[1] for c in changes if c.kind == "group" and "rolling update" in c.summary}


def _controller_rolls(old: Definition, new: Definition) -> set[str]:
    before, after = parse_service(old), parse_service(new)
    return {g.name for g in after.groups if (prev := before.group(g.name)) is not None and rolls(prev.generation, g.generation)}


@pytest.mark.parametrize("example", EXAMPLES)
def test_summary_verdict_equals_the_controllers(example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fact, not the rule under test: compile as on a machine with Docker, so image examples compile.
    monkeypatch.setattr(Facts, "docker", lambda self: True)
    # Likewise the Kubernetes gateway's runtime image: a pinned reference, as tests/cloud/conftest.py sets.
    monkeypatch.setenv("GPUSTACK_RUNTIME_IMAGE", "registry.invalid/gpustack-iac@sha256:" + "ab" * 32)
    definitions = _compiled(REPO / "examples" / example, tmp_path)
    ctx = StackContext(project="p", stack="dev", state_root=tmp_path, fingerprint_key=lambda: b"k" * 32)
    for old in definitions.values():
        assert _summary_rolls(old, copy.deepcopy(old), ctx) == _controller_rolls(old, copy.deepcopy(old)) == set()
        every = {g["name"] for g in old["groups"]}
        for prop, (change, restarts) in CHANGES.items():
            new = copy.deepcopy(old)
            change(new)
            stamp_generations(new)  # as compile does, once the definition is final
            summary, controller = _summary_rolls(old, new, ctx), _controller_rolls(old, new)
            assert summary == controller, (example, old["name"], prop, summary, controller)
            assert summary == (every if restarts else set()), (example, old["name"], prop, summary)


def _service_groups(folder: Path, tmp_path: Path) -> dict[str, str]:
    (definition,) = _compiled(folder, tmp_path).values()
    return {g["name"]: g["generation"] for g in definition["groups"]}


def test_setup_and_the_configuration_directory_are_in_the_generation(tmp_path: Path) -> None:
    """The bug this module fixes: `setup` and the resolved working directory were not hashed."""
    first = tmp_path / "a" / "local"
    shutil.copytree(REPO / "examples" / "local", first)
    before = _service_groups(first, tmp_path / "s1")
    hello = first / "hello.gpustack.yml"
    hello.write_text(hello.read_text().replace("commands:\n", "setup:\n  - pip --version\ncommands:\n", 1))
    with_setup = _service_groups(first, tmp_path / "s2")
    assert all(with_setup[g] != before[g] for g in before), (before, with_setup)
    moved = tmp_path / "b" / "local"
    shutil.copytree(first, moved)
    assert all(_service_groups(moved, tmp_path / "s3")[g] != with_setup[g] for g in before)
