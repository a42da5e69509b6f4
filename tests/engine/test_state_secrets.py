"""Secrets in the state: never plaintext on disk, Pulumi's passphrase format, passphrase errors."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gpustack_iac.engine.wire import SECRET_SIG, SECRET_SIG_KEY
from gpustack_iac.engine.wire import wrap_secret as secret
from gpustack_iac.engine.state import PendingOperation, ResourceState, StateStore
from gpustack_iac.errors import StateError

PROJECT = "proj"
STACK = "dev"
ROOT_URN = f"urn:pulumi:{STACK}::{PROJECT}::pulumi:pulumi:Stack::proj-dev"
SECRET_VALUES = ["plain-admin-token-7f3a", "db-password-91c2", "nested-api-key-55e0", "output-secret-a1b2"]


@pytest.fixture(autouse=True)
def _no_ambient_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUSTACK_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)


def secret_resource(name: str, id_: str) -> ResourceState:
    return ResourceState(
        urn=f"urn:pulumi:{STACK}::{PROJECT}::gpustack:local:Gateway::{name}",
        type="gpustack:local:Gateway",
        custom=True,
        id=id_,
        inputs={"admin_token": secret(SECRET_VALUES[0]), "env": {"DB": secret(SECRET_VALUES[1])}},
        outputs={"keys": [secret({"api_key": SECRET_VALUES[2]})], "port": 8080},
        parent=ROOT_URN,
    )


def all_bytes(root: Path, skip: set[Path]) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p not in skip}


def assert_no_plaintext(root: Path, values: list[str], skip: set[Path] = frozenset()) -> None:  # type: ignore[assignment]
    files = all_bytes(root, set(skip))
    assert files, "expected state files to check"
    for path, data in files.items():
        for value in values:
            assert value.encode() not in data, f"{value!r} is plaintext in {path}"


def pulumi_decrypt(key: bytes, value: str) -> str:
    """Pulumi's symmetric crypter, written independently from the code under test."""
    version, nonce_b64, sealed_b64 = value.split(":")
    assert version == "v1"
    return AESGCM(key).decrypt(base64.b64decode(nonce_b64), base64.b64decode(sealed_b64), None).decode()


def test_secrets_never_reach_the_disk_in_plaintext(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)  # no passphrase anywhere: one is generated
    res = secret_resource("gw", "1")
    with store.lock("up"):
        store.begin(PendingOperation(res, "creating"))
        # Mid-operation the journal holds the pending operation with its secret inputs.
        assert_no_plaintext(tmp_path, SECRET_VALUES)
        store.end(res.urn, res)
        store.begin(PendingOperation(secret_resource("gw2", "2"), "updating"))
        store.set_outputs({"admin": secret(SECRET_VALUES[3])})
        assert_no_plaintext(tmp_path, SECRET_VALUES)
        store.compact()
    passphrase_file = tmp_path / ".pulumi" / f"passphrase-{STACK}"
    passphrase = passphrase_file.read_text().strip()
    assert_no_plaintext(tmp_path, SECRET_VALUES + [passphrase], skip={passphrase_file})
    assert json.dumps(store.export()).count(SECRET_SIG) >= 4
    assert not any(v in json.dumps(store.export()) for v in SECRET_VALUES)
    loaded = StateStore(tmp_path, PROJECT, STACK).load()
    assert loaded.get(res.urn) == res
    assert loaded.outputs == {"admin": secret(SECRET_VALUES[3])}
    assert loaded.pending_operations[0].resource.inputs["env"]["DB"] == secret(SECRET_VALUES[1])


def test_ciphertext_follows_pulumis_passphrase_format(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK, passphrase="correct horse")
    res = secret_resource("gw", "1")
    store.begin(PendingOperation(res, "creating"))
    store.end(res.urn, res)
    store.compact()
    latest = json.loads(store.path.read_text())["checkpoint"]["latest"]
    provider = latest["secrets_providers"]
    assert provider["type"] == "passphrase"
    version, salt_b64, check = provider["state"]["salt"].split(":", 2)
    assert version == "v1" and len(base64.b64decode(salt_b64)) == 8
    key = hashlib.pbkdf2_hmac("sha256", b"correct horse", base64.b64decode(salt_b64), 1_000_000, 32)
    assert pulumi_decrypt(key, check) == "pulumi"
    stored = latest["resources"][0]["inputs"]["admin_token"]
    assert set(stored) == {SECRET_SIG_KEY, "ciphertext"} and stored[SECRET_SIG_KEY] == SECRET_SIG
    assert len(base64.b64decode(stored["ciphertext"].split(":")[1])) == 12  # AES-GCM nonce
    # Pulumi encrypts the JSON encoding of the secret's value.
    assert json.loads(pulumi_decrypt(key, stored["ciphertext"])) == SECRET_VALUES[0]
    nested = latest["resources"][0]["outputs"]["keys"][0]
    assert json.loads(pulumi_decrypt(key, nested["ciphertext"])) == {"api_key": SECRET_VALUES[2]}


def test_wrong_passphrase_is_a_clear_state_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK, passphrase="right")
    res = secret_resource("gw", "1")
    store.begin(PendingOperation(res, "creating"))
    store.end(res.urn, res)
    store.compact()
    with pytest.raises(StateError, match=r"incorrect passphrase for stack 'dev'.*GPUSTACK_PASSPHRASE"):
        StateStore(tmp_path, PROJECT, STACK, passphrase="wrong").load()
    # Writing new secrets with the wrong passphrase must fail too, not mint a second key.
    with pytest.raises(StateError, match="incorrect passphrase"):
        StateStore(tmp_path, PROJECT, STACK, passphrase="wrong").set_outputs({"x": secret("y")})


def test_missing_passphrase_names_the_variable(tmp_path: Path) -> None:
    store = StateStore(tmp_path, PROJECT, STACK, passphrase="set-by-argument")
    store.set_outputs({"token": secret("abc-123")})
    with pytest.raises(StateError, match="set GPUSTACK_PASSPHRASE"):
        StateStore(tmp_path, PROJECT, STACK).load()


def test_passphrase_priority_argument_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "from-pulumi-env")
    StateStore(tmp_path, PROJECT, STACK).set_outputs({"k": secret("v")})
    assert not (tmp_path / ".pulumi" / f"passphrase-{STACK}").exists()
    monkeypatch.setenv("GPUSTACK_PASSPHRASE", "other")  # takes precedence, and is wrong
    with pytest.raises(StateError, match="incorrect passphrase"):
        StateStore(tmp_path, PROJECT, STACK).load()
    assert StateStore(tmp_path, PROJECT, STACK, passphrase="from-pulumi-env").load().outputs == {"k": secret("v")}


def test_generated_passphrase_file_is_private_and_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gpustack_iac.engine.secrets"):
        StateStore(tmp_path, PROJECT, STACK).set_outputs({"k": secret("v")})
    path = tmp_path / ".pulumi" / f"passphrase-{STACK}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert any(str(path) in r.getMessage() and "0600" in r.getMessage() for r in caplog.records)
    passphrase = path.read_text().strip()
    assert len(passphrase) >= 32 and passphrase not in caplog.text
    # A later run finds it without any setup.
    assert StateStore(tmp_path, PROJECT, STACK).load().outputs == {"k": secret("v")}


def _key_of(store: StateStore, passphrase: bytes) -> tuple[dict, bytes]:
    latest = json.loads(store.path.read_text())["checkpoint"]["latest"]
    salt = base64.b64decode(latest["secrets_providers"]["state"]["salt"].split(":")[1])
    return latest, hashlib.pbkdf2_hmac("sha256", passphrase, salt, 1_000_000, 32)


def test_a_nested_secret_is_written_as_pulumi_writes_it(tmp_path: Path) -> None:
    # SerializePropertyValue serialises a secret's element with the no-op encrypter: an inner secret keeps its
    # signature and its "ciphertext" is its JSON in the clear; only the outermost is encrypted, as Go's JSON.
    store = StateStore(tmp_path, PROJECT, STACK, passphrase="correct horse")
    res = ResourceState(
        urn=f"urn:pulumi:{STACK}::{PROJECT}::gpustack:local:Gateway::gw", type="gpustack:local:Gateway", custom=True, id="1",
        outputs={"credentials": secret({"user": "admin", "password": secret("hunter2 <&>")})},
    )
    store.begin(PendingOperation(res, "creating"))
    store.end(res.urn, res)
    store.compact()
    latest, key = _key_of(store, b"correct horse")
    stored = latest["resources"][0]["outputs"]["credentials"]
    assert set(stored) == {SECRET_SIG_KEY, "ciphertext"}
    assert pulumi_decrypt(key, stored["ciphertext"]) == (
        '{"password":{"4dabf18193072939515e22adb298388d":"1b47061264138c4ac30d75fd1eb44270",'
        # The inner JSON is Go-escaped once by the no-op encrypter's json.Marshal, then quoted by the outer one.
        '"ciphertext":"\\"hunter2 \\\\u003c\\\\u0026\\\\u003e\\""},"user":"admin"}'
    )
    assert b"hunter2" not in store.path.read_bytes()
    loaded = StateStore(tmp_path, PROJECT, STACK, passphrase="correct horse").load()
    assert loaded.get(res.urn) == res  # the inner secret is still a secret after the round trip


FIXTURE = Path(__file__).parent / "fixtures" / "pulumi_checkpoint_nested_secret.json"


def test_a_checkpoint_in_pulumis_own_shape_is_read_and_written_back_in_it(tmp_path: Path) -> None:
    # A file backend checkpoint as `pulumi up` leaves it: no extension of ours, stack outputs on the root stack
    # resource, a provider reference, a secret holding a nested secret whose inner "ciphertext" is plain JSON.
    store = StateStore(tmp_path, PROJECT, STACK, passphrase="fixture passphrase")
    store.dir.mkdir(parents=True)
    store.path.write_bytes(FIXTURE.read_bytes())
    state = store.load()
    db = state.get(f"urn:pulumi:{STACK}::{PROJECT}::random:index/randomPassword:RandomPassword::db")
    assert db is not None
    assert db.outputs["result"] == secret("s3cr3t-result")
    assert db.outputs["credentials"] == secret({"user": "admin", "password": secret("hunter2-inner")})
    assert db.extra["additionalSecretOutputs"] == ["result"]
    assert state.outputs == {"dbPassword": secret("top-secret-out")}
    # Written back by us (an operation plus a compaction): still Pulumi's shape.
    store.begin(PendingOperation(db, "updating"))
    store.end(db.urn, db)
    store.compact()
    latest, key = _key_of(store, b"fixture passphrase")
    written = next(r for r in latest["resources"] if r["urn"] == db.urn)["outputs"]["credentials"]
    inner = json.loads(pulumi_decrypt(key, written["ciphertext"]))
    assert inner["password"] == {SECRET_SIG_KEY: SECRET_SIG, "ciphertext": '"hunter2-inner"'}
    assert [r["urn"] for r in latest["resources"]][:2] == [
        f"urn:pulumi:{STACK}::{PROJECT}::pulumi:pulumi:Stack::proj-dev",
        f"urn:pulumi:{STACK}::{PROJECT}::pulumi:providers:random::default_4_16_0",
    ]


def test_show_secrets_plaintext_form_is_read_and_encrypted_on_write(tmp_path: Path) -> None:
    # `pulumi stack export --show-secrets` writes {"plaintext": <JSON>} instead of a ciphertext.
    doc = json.loads(FIXTURE.read_text())
    db = doc["checkpoint"]["latest"]["resources"][2]
    db["outputs"]["result"] = {SECRET_SIG_KEY: SECRET_SIG, "plaintext": '"shown-secret"'}
    store = StateStore(tmp_path, PROJECT, STACK, passphrase="fixture passphrase")
    store.dir.mkdir(parents=True)
    store.path.write_text(json.dumps(doc))
    res = store.load().get(db["urn"])
    assert res is not None and res.outputs["result"] == secret("shown-secret")
    store.begin(PendingOperation(res, "updating"))
    store.end(res.urn, res)
    store.compact()
    assert b"shown-secret" not in store.path.read_bytes()


def test_nested_secrets_written_before_the_fix_still_read(tmp_path: Path) -> None:
    # Earlier versions encrypted the inner secret with the stack's key too.
    store = StateStore(tmp_path, PROJECT, STACK, passphrase="fixture passphrase")
    store.dir.mkdir(parents=True)
    store.path.write_bytes(FIXTURE.read_bytes())
    first = store.load()
    from gpustack_iac.engine.secrets import crypter_from_salt_state

    doc = json.loads(FIXTURE.read_text())
    salt_state = doc["checkpoint"]["latest"]["secrets_providers"]["state"]["salt"]
    crypter = crypter_from_salt_state("fixture passphrase", salt_state)
    legacy_inner = json.dumps({"password": {SECRET_SIG_KEY: SECRET_SIG, "ciphertext": crypter.encrypt('"old-inner"')}, "user": "u"})
    doc["checkpoint"]["latest"]["resources"][2]["outputs"]["credentials"]["ciphertext"] = crypter.encrypt(legacy_inner)
    store.path.write_text(json.dumps(doc))
    res = StateStore(tmp_path, PROJECT, STACK, passphrase="fixture passphrase").load().get(doc["checkpoint"]["latest"]["resources"][2]["urn"])
    assert res is not None and res.outputs["credentials"] == secret({"user": "u", "password": secret("old-inner")})
    assert first.resources
