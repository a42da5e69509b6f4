"""Env values in the plaintext part of the state are fingerprinted with a key derived from the stack's secrets key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gpustack_iac.engine.state import PendingOperation, ResourceState, StateStore
from gpustack_iac.spec.loader import load_text
from gpustack_iac.stacks.context import StackContext
from gpustack_iac.stacks.service import Service

TOKEN = "hf_abcdefghijklmnopqrstuvwxyz0123"
SERVICE = f"type: service\nname: s\nport: 80\ncommands: [x]\nenv:\n  HF_TOKEN: {TOKEN}\n  MODE: fast\n"


@pytest.fixture(autouse=True)
def _no_ambient_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUSTACK_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)


def _env_spec(key: bytes) -> dict[str, str]:
    ctx = StackContext(project="p", stack="dev", state_root=Path("/nonexistent"), fingerprint_key=lambda: key)
    definition = load_text(SERVICE, env={}).services[0].to_runtime()
    return Service.spec_of(definition, ctx)["groups"][0]["env"]


def test_fingerprints_are_keyed_not_guessable_offline() -> None:
    env = _env_spec(b"k" * 32)
    unsalted = hashlib.sha256(TOKEN.encode()).hexdigest()
    assert env["HF_TOKEN"].startswith("hmac-sha256:")
    assert unsalted[:12] not in json.dumps(env) and TOKEN not in json.dumps(env)
    assert _env_spec(b"k" * 32) == env  # stable under one key: a plan can still say "env changed"
    assert _env_spec(b"j" * 32)["HF_TOKEN"] != env["HF_TOKEN"]


def _with_secret(root: Path, passphrase: str) -> StateStore:
    store = StateStore(root, "p", "dev", passphrase=passphrase)
    res = ResourceState(urn="urn:pulumi:dev::p::t::r", type="t", custom=True, id="1", inputs={"x": {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": "v"}})
    store.begin(PendingOperation(res, "creating"))
    store.end(res.urn, res)
    store.compact()
    return store


def test_the_key_is_the_stacks_and_differs_between_stacks(tmp_path: Path) -> None:
    a = _with_secret(tmp_path / "a", "pass-a").fingerprint_key()
    assert StateStore(tmp_path / "a", "p", "dev", passphrase="pass-a").fingerprint_key() == a
    assert _with_secret(tmp_path / "b", "pass-a").fingerprint_key() != a  # another salt
    assert len(a) == 32


def test_a_plan_of_a_new_stack_writes_nothing_and_an_up_creates_the_key(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "p", "dev", passphrase="pw")
    with store.lock("preview"):
        ephemeral = store.fingerprint_key()
    assert not store.exists()
    with store.lock("up"):
        created = store.fingerprint_key()
    assert created != ephemeral
    store.compact()
    assert StateStore(tmp_path, "p", "dev", passphrase="pw").fingerprint_key() == created
