"""Run a compiled program under Pulumi mocks and keep every registered resource for assertions.

Mocks stand in for the cloud APIs only (the provider plugins cannot run here); the program, the
components and the provider SDKs are the real ones. Invokes fail the test: a plan must not need
a cloud lookup, or the embedded engine could not plan it offline.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.mocks import MockMonitor

from gpustack_iac.compile import CompiledStack, compile_spec
from gpustack_iac.spec.loader import load_paths
from gpustack_iac.stacks.context import StackContext


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    ignore_changes: list[str]
    delete_before_replace: bool = False


@dataclass
class Graph:
    resources: list[Registered] = field(default_factory=list)
    compiled: CompiledStack | None = None

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Registered:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        assert len(found) == 1, f"{type_} {name}: {[r.name for r in self.of_type(type_)]}"
        return found[0]

    def dump_without(self, keep: Registered) -> str:
        return json.dumps([r.inputs for r in self.resources if r is not keep], default=str)


MOCK_SUBSCRIPTION = "00000000-0000-0000-0000-00000000cafe"


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.seen: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.seen.append(args)
        outs = dict(args.inputs)
        # The few outputs later resources read, with plausible values.
        outs.setdefault("arn", f"arn:aws:mock:::{args.name}")
        outs.setdefault("publicIp", "198.18.0.10")
        outs.setdefault("address", "198.18.0.11")
        outs.setdefault("ipAddress", "198.18.0.12")
        outs.setdefault("email", f"{args.name}@mock.iam.gserviceaccount.com")
        outs.setdefault("zoneId", "Z0MOCK")
        outs.setdefault("principalId", "00000000-0000-0000-0000-00000000beef")
        # The runtime's store: its physical names, which the boot scripts carry.
        if args.typ == "aws:s3/bucket:Bucket":
            outs.setdefault("bucket", f"{args.name}-mock")
        if args.typ == "gcp:storage/bucket:Bucket":
            outs.setdefault("name", f"{args.name}-mock")
        if args.typ == "azure-native:storage:StorageAccount":
            outs.setdefault("name", outs.get("accountName"))
        if args.typ == "azure-native:managedidentity:UserAssignedIdentity":
            outs.setdefault("clientId", f"client-{args.name}")
        if args.typ == "azure-native:keyvault:Vault":
            outs.setdefault("name", f"{args.name}-kv")
        if args.typ == "gcp:serviceaccount/account:Account":
            outs.setdefault("project", "mock-project")
        if args.typ == "aws:lb/loadBalancer:LoadBalancer":
            outs.setdefault("dnsName", f"{args.name}.elb.mock")
        if args.typ == "tls:index/privateKey:PrivateKey":
            outs.setdefault("publicKeyOpenssh", f"ssh-ed25519 AAAAmock {args.name}")
        if args.typ.startswith("azure-native:") and "identity" in outs:
            # Azure answers userAssignedIdentities as a map (id → principal) for the list given.
            ident = dict(outs["identity"])
            ident["userAssignedIdentities"] = {str(i): {} for i in ident.get("userAssignedIdentities") or []}
            outs["identity"] = ident
        if args.typ == "azure-native:resources:ResourceGroup":
            # ARM's resource id: the gateway's node-groups file takes subscription and group from it.
            return f"/subscriptions/{MOCK_SUBSCRIPTION}/resourceGroups/{args.name}-rg", outs
        return f"{args.name}-id", outs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == CLIENT_CONFIG and not (os.environ.get("ARM_TENANT_ID") or os.environ.get("AZURE_TENANT_ID")):
            # Azure without a configured tenant: the vault trusts the signed-in client's directory,
            # which the Pulumi CLI looks up (the embedded engine refuses the lookup).
            return {"tenantId": MOCK_TENANT, "clientId": "c", "objectId": "o", "subscriptionId": "s"}
        raise AssertionError(f"the program invoked {args.token}: plans must not need cloud lookups")


class _Monitor(MockMonitor):
    def __init__(self, mocks: _Mocks) -> None:
        super().__init__(mocks)
        self.ignore: dict[tuple[str, str], list[str]] = {}
        self.delete_first: set[tuple[str, str]] = set()

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        self.ignore[(request.type, request.name)] = list(request.ignoreChanges)
        if request.deleteBeforeReplace:
            self.delete_first.add((request.type, request.name))
        return super().RegisterResource(request)


CLIENT_CONFIG = "azure-native:authorization:getClientConfig"
MOCK_TENANT = "11111111-2222-3333-4444-555555555555"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # Pulumi's wire marker of a secret value


def secret_value(value: Any) -> Any:
    """The plaintext of an input the program marked secret; fails when it was not marked."""
    assert isinstance(value, dict) and SECRET_SIG in value.values(), f"not a secret: {value!r}"
    return value["value"]


def write(tmp: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp / name).write_text(text)
    return tmp


def compile_dir(path: Path, tmp: Path) -> CompiledStack:
    spec = load_paths([path], os.environ)
    return compile_spec(spec, StackContext(project="proj", stack="dev", state_root=tmp))


def run(path: Path, tmp: Path) -> Graph:
    compiled = compile_dir(path, tmp)
    mocks = _Mocks()
    monitor = _Monitor(mocks)

    def isolated() -> None:
        # As the embedded engine does: the SDK's settings live in context variables, so a copied
        # context and a fresh root and loop keep this run away from other tests' runs.
        pulumi_settings.ROOT.set(None)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            pulumi.runtime.set_mocks(mocks, project="proj", stack="dev", preview=False, monitor=monitor)

            @pulumi.runtime.test
            def _program() -> pulumi.Output[int]:
                compiled.program()
                return pulumi.Output.from_input(0)

            _program()
        finally:
            loop.close()
            asyncio.set_event_loop(None)

    contextvars.copy_context().run(isolated)
    graph = Graph(compiled=compiled)
    for args in mocks.seen:
        key = (args.typ, args.name)
        graph.resources.append(Registered(args.typ, args.name, dict(args.inputs), monitor.ignore.get(key, []),
                                          key in monitor.delete_first))
    return graph
