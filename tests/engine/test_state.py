"""State store: round trip, journal semantics, compaction, layout, URLs, export format."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from gpustack_iac.engine.wire import SECRET_SIG, SECRET_SIG_KEY
from gpustack_iac.engine.wire import wrap_secret as secret
from gpustack_iac.engine.state import (
    Checkpoint,
    PendingOperation,
    ResourceState,
    StateStore,
)
from gpustack_iac.errors import StateError

PROJECT = "proj"
STACK = "dev"
PREFIX = f"urn:pulumi:{STACK}::{PROJECT}::"
ROOT_URN = PREFIX + "pulumi:pulumi:Stack::proj-dev"


@pytest.fixture(autouse=True)
def _no_ambient_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own PULUMI_CONFIG_PASSPHRASE must not change what these tests see.
    monkeypatch.delenv("GPUSTACK_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)


def urn(kind: str, name: str) -> str:
    return f"{PREFIX}{kind}::{name}"


def root() -> ResourceState:
    return ResourceState(urn=ROOT_URN, type="pulumi:pulumi:Stack", custom=False)


def host(name: str, id_: str, **kw: Any) -> ResourceState:
    return ResourceState(
        urn=urn("gpustack:local:Host", name),
        type="gpustack:local:Host",
        custom=True,
        id=id_,
        inputs={"name": name, "port": 8000},
        outputs={"name": name, "port": 8000, "url": f"http://127.0.0.1/{name}"},
        parent=ROOT_URN,
        **kw,
    )


def apply(store: StateStore, res: ResourceState, op: str = "creating") -> None:
    store.begin(PendingOperation(res, op))
    store.end(res.urn, res)


def remove(store: StateStore, res: ResourceState) -> None:
    store.begin(PendingOperation(res, "deleting"))
    store.end(res.urn, None)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK, passphrase="pw")
    assert not store.exists()
    provider_urn = urn("pulumi:providers:gpustack", "default")
    provider = ResourceState(urn=provider_urn, type="pulumi:providers:gpustack", custom=True, id="prov-1")
    full = ResourceState(
        urn=urn("gpustack:local:Replica", "r0"),
        type="gpustack:local:Replica",
        custom=True,
        id="abc",
        inputs={"commands": ["python app.py"], "env": {"A": "1"}, "n": 2.5, "flag": True, "none": None},
        outputs={"pid": 42, "token": secret("s3cr3t-token"), "nested": [{"k": secret({"deep": [1, 2]})}]},
        parent=ROOT_URN,
        dependencies=[provider_urn],
        property_dependencies={"commands": [provider_urn]},
        provider=f"{provider_urn}::prov-1",
        protect=True,
        retain_on_delete=True,
        delete_before_replace=True,
        ignore_changes=["env"],
        replace_on_changes=["commands"],
        extra={"created": "2026-01-01T00:00:00Z", "additionalSecretOutputs": ["token"]},
    )
    with store.lock("up"):
        apply(store, root())
        apply(store, provider)
        apply(store, full)
        store.set_outputs({"endpoint": "http://127.0.0.1:1/", "admin": secret("adm")})
        before = store.load()
        compacted = store.compact()
    assert before.serial == 0 and compacted.serial == 1
    assert not store.journal_path.exists()

    again = StateStore(tmp_path, PROJECT, STACK, passphrase="pw").load()
    assert isinstance(again, Checkpoint)
    assert (again.stack, again.project, again.serial) == (STACK, PROJECT, 1)
    assert again.get(full.urn) == full
    assert again.get(provider_urn) == provider
    assert [r.urn for r in again.resources] == [ROOT_URN, provider_urn, full.urn]
    assert again.outputs == {"endpoint": "http://127.0.0.1:1/", "admin": secret("adm")}
    assert again.pending_operations == []
    # Stack outputs are mirrored on the root stack resource, where `pulumi stack output` reads them.
    assert again.get(ROOT_URN) is not None and again.get(ROOT_URN).outputs == again.outputs  # type: ignore[union-attr]


def test_layout_is_pulumi_file_backend(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    apply(store, root())
    store.compact()
    assert (tmp_path / ".pulumi" / "meta.yaml").read_text() == "version: 1\n"
    doc = json.loads((tmp_path / ".pulumi" / "stacks" / PROJECT / f"{STACK}.json").read_text())
    assert doc["version"] == 3
    assert doc["checkpoint"]["stack"] == f"organization/{PROJECT}/{STACK}"
    manifest = doc["checkpoint"]["latest"]["manifest"]
    assert set(manifest) >= {"time", "magic", "version"}
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["magic"])
    # No secrets yet: no salt, and no passphrase was needed or generated.
    assert "secrets_providers" not in doc["checkpoint"]["latest"]
    assert not (tmp_path / ".pulumi" / f"passphrase-{STACK}").exists()


def test_begin_and_end_never_rewrite_the_checkpoint(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    store.begin(PendingOperation(root(), "creating"))
    assert store.exists() and not store.path.exists()  # a journal alone is a stack
    store.end(ROOT_URN, root())
    store.compact()
    before = os.stat(store.path)
    for i in range(60):
        apply(store, host(f"h{i}", f"id-{i}"))
    store.set_outputs({"n": 60})
    after = os.stat(store.path)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    lines = store.journal_path.read_bytes().splitlines()
    assert len(lines) == 1 + 2 * 60 + 1  # header, begin+end per step, outputs
    assert len(store.load().resources) == 61
    store.compact()
    assert os.stat(store.path).st_ino != before.st_ino  # replaced atomically, not rewritten in place
    assert len(StateStore(tmp_path, PROJECT, STACK).load().resources) == 61


def test_update_in_place_and_delete(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    apply(store, root())
    a, b = host("a", "1"), host("b", "2")
    apply(store, a)
    apply(store, b)
    a2 = host("a", "1")
    a2.inputs["port"] = 9000
    apply(store, a2, "updating")
    cp = store.load()
    assert [r.urn for r in cp.resources] == [ROOT_URN, a.urn, b.urn]
    assert cp.get(a.urn).inputs["port"] == 9000  # type: ignore[union-attr]
    remove(store, b)
    store.compact()
    cp = store.load()
    assert cp.get(b.urn) is None and cp.serial == 1
    assert len(cp.resources) == 2


def test_create_before_delete_replacement_keeps_old_until_deleted(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    apply(store, root())
    old = host("a", "old-id")
    apply(store, old)
    new = host("a", "new-id")
    apply(store, new, "creating")
    mid = store.load()
    same_urn = [r for r in mid.resources if r.urn == old.urn]
    assert [(r.id, r.delete) for r in same_urn] == [("old-id", True), ("new-id", False)]
    assert mid.get(old.urn) == new
    store.compact()  # a crash here must not lose the old instance that still exists
    assert [(r.id, r.delete) for r in store.load().resources if r.urn == old.urn] == [
        ("old-id", True),
        ("new-id", False),
    ]
    old_doomed = host("a", "old-id")
    old_doomed.delete = True
    remove(store, old_doomed)
    final = store.compact()
    assert [(r.id, r.delete) for r in final.resources if r.urn == old.urn] == [("new-id", False)]


def test_failed_steps_restore_exactly_the_instance_they_touched(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    apply(store, root())
    old = host("a", "old-id")
    apply(store, old)
    # A failed create-before-delete create goes back to the old instance.
    store.begin(PendingOperation(host("a", ""), "creating"))
    store.end(old.urn, old)
    assert [(r.id, r.delete) for r in store.load().resources if r.urn == old.urn] == [("old-id", False)]
    # The create succeeds, then deleting the old instance fails: it stays, still doomed, and the new
    # instance stays live.
    new = host("a", "new-id")
    apply(store, new, "creating")
    store.begin(PendingOperation(old, "deleting"))
    store.end(old.urn, old)
    cp = store.load()
    assert [(r.id, r.delete) for r in cp.resources if r.urn == old.urn] == [("old-id", True), ("new-id", False)]
    assert cp.pending_operations == []
    # A crash while deleting the old instance; the next run closes that operation with the live one.
    store.begin(PendingOperation(old, "deleting"))
    store.end(new.urn, new)
    assert [(r.id, r.delete) for r in store.load().resources if r.urn == old.urn] == [
        ("old-id", True),
        ("new-id", False),
    ]
    # A failed update restores the live instance in place.
    store.begin(PendingOperation(new, "updating"))
    store.end(new.urn, new)
    assert store.load().get(new.urn) == new
    # A failed fresh create leaves nothing behind.
    ghost = host("ghost", "")
    store.begin(PendingOperation(ghost, "creating"))
    store.end(ghost.urn, None)
    assert store.compact().get(ghost.urn) is None


def test_delete_before_replace_recreation_is_ordered_before_dependents(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    apply(store, root())
    base = host("base", "1")
    dependent = host("dep", "2", dependencies=[base.urn], property_dependencies={"url": [base.urn]})
    apply(store, base)
    apply(store, dependent)
    remove(store, base)
    apply(store, host("base", "3"))  # re-created after its dependent in journal order
    order = [(r.urn, r.id) for r in store.compact().resources]
    assert order.index((base.urn, "3")) < order.index((dependent.urn, "2"))
    assert order[0] == (ROOT_URN, "")


def test_stale_journal_from_a_crashed_compaction_is_not_replayed(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    apply(store, root())
    a = host("a", "1")
    apply(store, a)
    stale = tmp_path / "journal.copy"
    shutil.copy(store.journal_path, stale)
    store.compact()
    remove(store, a)
    store.compact()
    # As if a compaction had written the checkpoint and died before deleting this (older) journal.
    shutil.copy(stale, store.journal_path)
    cp = StateStore(tmp_path, PROJECT, STACK).load()
    assert cp.serial == 2
    assert cp.get(a.urn) is None


def test_torn_last_journal_line_is_skipped_and_appends_continue(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    apply(store, root())
    a = host("a", "1")
    apply(store, a)
    with open(store.journal_path, "ab") as f:
        f.write(b'{"kind":"end","urn":"urn:pulumi:dev::proj::x::y","resou')  # crash mid-write
    b = host("b", "2")
    apply(store, b)
    cp = StateStore(tmp_path, PROJECT, STACK).load()
    assert [r.urn for r in cp.resources] == [ROOT_URN, a.urn, b.urn]
    assert cp.pending_operations == []


def test_a_new_operation_supersedes_one_left_in_flight_by_a_crash(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    apply(store, root())
    a = host("a", "")
    store.begin(PendingOperation(a, "creating"))  # the run dies here
    cp = store.compact()
    assert [(op.type, op.resource.urn) for op in cp.pending_operations] == [("creating", a.urn)]
    created = host("a", "id-a")
    apply(store, created)  # the next run creates it again
    cp = store.compact()
    assert cp.pending_operations == [] and cp.get(a.urn) == created


def test_unknown_operation_type_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    with pytest.raises(StateError, match="unknown operation type"):
        store.begin(PendingOperation(root(), "exploding"))


def test_corrupt_checkpoint_gives_a_state_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    store.dir.mkdir(parents=True)
    store.path.write_text('{"version": 3, "checkpoint": ')
    with pytest.raises(StateError, match="not valid JSON"):
        store.load()
    store.path.write_text('{"version": 1, "checkpoint": {}}')
    with pytest.raises(StateError, match="version 3"):
        store.load()


def test_unwritable_state_directory_gives_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    store = StateStore(blocker, PROJECT, STACK)
    with pytest.raises(StateError, match="cannot append to the state journal"):
        store.begin(PendingOperation(root(), "creating"))
    with pytest.raises(StateError, match="cannot (read|write) the state file"):
        store.compact()
    with pytest.raises(StateError, match="cannot create the lock file"):
        with store.lock("up"):
            pass


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="stack name"):
        StateStore(tmp_path, PROJECT, "../escape")
    with pytest.raises(StateError, match="project name"):
        StateStore(tmp_path, "", STACK)


def test_from_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert StateStore.from_url(f"file://{tmp_path}/s", PROJECT, STACK, None).root == tmp_path / "s"
    assert StateStore.from_url("file://rel/dir", PROJECT, STACK, None).root == Path.cwd() / "rel/dir"
    assert StateStore.from_url("", PROJECT, STACK, None).root == Path.cwd() / ".gpustack/state"
    assert StateStore.from_url("file://", PROJECT, STACK, None).root == Path.cwd() / ".gpustack/state"
    assert StateStore.from_url(str(tmp_path / "plain"), PROJECT, STACK, None).root == tmp_path / "plain"
    for url in ("s3://bucket/prefix", "gs://bucket", "azblob://container", "postgres://db/x"):
        with pytest.raises(StateError, match="opened by engine.stores.open_store"):
            StateStore.from_url(url, PROJECT, STACK, None)
    with pytest.raises(StateError, match="unknown state location"):
        StateStore.from_url("ftp://x", PROJECT, STACK, None)


def test_load_of_a_missing_stack_is_empty(tmp_path: Path) -> None:
    cp = StateStore(tmp_path, PROJECT, STACK).load()
    assert (cp.resources, cp.pending_operations, cp.outputs, cp.serial) == ([], [], {}, 0)
    assert not (tmp_path / ".pulumi").exists()


# --- export() against Pulumi's deployment format ----------------------------------------------
#
# Required fields of `pulumi stack export` output, from pulumi/pulumi sdk/go/common/apitype/core.go:
# - UntypedDeployment: version (int), deployment (raw JSON)
# - DeploymentV3: manifest (ManifestV1, required), secrets_providers (SecretsProvidersV1, omitempty),
#   resources ([]ResourceV3, omitempty), pending_operations ([]OperationV2, omitempty)
# - ManifestV1: time, magic, version (no omitempty)
# - SecretsProvidersV1: type (string), state (raw JSON; for "passphrase": {"salt": "v1:..."})
# - ResourceV3: urn, custom, type have no omitempty; id, parent, provider are strings; protect,
#   delete, retainOnDelete are bools; dependencies []URN; propertyDependencies map[key][]URN;
#   inputs/outputs are maps
# - OperationV2: resource (ResourceV3), type (OperationType: creating|updating|deleting|reading|...)
# - SecretV1: {"4dabf18193072939515e22adb298388d": sig, "ciphertext": string}
_URN = {"type": "string", "pattern": r"^urn:pulumi:[^:]+::[^:]+::.+::.+$"}
_RESOURCE_V3: dict[str, Any] = {
    "type": "object",
    "required": ["urn", "custom", "type"],
    "properties": {
        "urn": _URN,
        "custom": {"type": "boolean"},
        "delete": {"type": "boolean"},
        "id": {"type": "string"},
        "type": {"type": "string", "pattern": r"^[^:]+:[^:]*:[^:]+$"},
        "inputs": {"type": "object"},
        "outputs": {"type": "object"},
        "parent": _URN,
        "protect": {"type": "boolean"},
        "external": {"type": "boolean"},
        "dependencies": {"type": "array", "items": _URN},
        "propertyDependencies": {"type": "object", "additionalProperties": {"type": "array", "items": _URN}},
        "provider": {"type": "string"},
        "retainOnDelete": {"type": "boolean"},
        "ignoreChanges": {"type": "array", "items": {"type": "string"}},
        "replaceOnChanges": {"type": "array", "items": {"type": "string"}},
    },
}
DEPLOYMENT_V3_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "deployment"],
    "properties": {
        "version": {"type": "integer", "enum": [3]},
        "deployment": {
            "type": "object",
            "required": ["manifest"],
            "properties": {
                "manifest": {
                    "type": "object",
                    "required": ["time", "magic", "version"],
                    "properties": {
                        "time": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"},
                        "magic": {"type": "string"},
                        "version": {"type": "string"},
                    },
                },
                "secrets_providers": {
                    "type": "object",
                    "required": ["type", "state"],
                    "properties": {
                        "type": {"type": "string", "enum": ["passphrase"]},
                        "state": {
                            "type": "object",
                            "required": ["salt"],
                            "properties": {"salt": {"type": "string", "pattern": r"^v1:[A-Za-z0-9+/=]+:v1:.+:.+$"}},
                        },
                    },
                },
                "resources": {"type": "array", "items": _RESOURCE_V3},
                "pending_operations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["resource", "type"],
                        "properties": {
                            "resource": _RESOURCE_V3,
                            "type": {"type": "string", "enum": ["creating", "updating", "deleting", "reading"]},
                        },
                    },
                },
            },
        },
    },
}

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def check_schema(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """The subset of JSON Schema used above (jsonschema is not installed here)."""
    errors: list[str] = []
    kind = schema.get("type")
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{path}: expected integer"]
    elif kind is not None and not isinstance(value, _TYPES[kind]):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required {key!r}")
        props = schema.get("properties", {})
        for key, sub in value.items():
            if key in props:
                errors += check_schema(sub, props[key], f"{path}.{key}")
            elif "additionalProperties" in schema:
                errors += check_schema(sub, schema["additionalProperties"], f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += check_schema(item, schema["items"], f"{path}[{i}]")
    return errors


def find_secrets(tree: Any) -> list[dict[str, Any]]:
    if isinstance(tree, dict):
        if tree.get(SECRET_SIG_KEY) == SECRET_SIG:
            return [tree]
        return [s for v in tree.values() for s in find_secrets(v)]
    if isinstance(tree, list):
        return [s for v in tree for s in find_secrets(v)]
    return []


def test_schema_checker_rejects_bad_documents() -> None:
    # The checker itself must catch the mistakes it is there for.
    assert check_schema({"version": 3}, DEPLOYMENT_V3_SCHEMA) == ["$: missing required 'deployment'"]
    bad = {"version": 3, "deployment": {"manifest": {"time": "x", "magic": "m"}, "resources": [{"urn": "u"}]}}
    problems = check_schema(bad, DEPLOYMENT_V3_SCHEMA)
    assert any("missing required 'version'" in p for p in problems)
    assert any("does not match" in p and "time" in p for p in problems)
    assert any("missing required 'custom'" in p for p in problems)


def test_export_matches_the_deployment_v3_format(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK, passphrase="pw")
    apply(store, root())
    apply(store, host("a", "1", protect=True, dependencies=[ROOT_URN]))
    b = host("b", "2")
    b.outputs["token"] = secret("tok-value")
    apply(store, b)
    store.begin(PendingOperation(host("c", ""), "creating"))  # left in flight
    exported = store.export()
    assert check_schema(exported, DEPLOYMENT_V3_SCHEMA) == []
    deployment = exported["deployment"]
    assert [op["type"] for op in deployment["pending_operations"]] == ["creating"]
    secrets = find_secrets(deployment)
    assert secrets and all(set(s) == {SECRET_SIG_KEY, "ciphertext"} for s in secrets)
    assert all(re.fullmatch(r"v1:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+", s["ciphertext"]) for s in secrets)
    assert "tok-value" not in json.dumps(exported)
    # The compacted file holds the same deployment under checkpoint.latest.
    store.compact()
    doc = json.loads(store.path.read_text())
    latest = doc["checkpoint"]["latest"]
    assert check_schema({"version": doc["version"], "deployment": latest}, DEPLOYMENT_V3_SCHEMA) == []
    assert [r["urn"] for r in latest["resources"]] == [r["urn"] for r in deployment["resources"]]
