"""Run secrets (`gpustack-iac secret`): encrypted with the stack's key beside its checkpoint, per stack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpustack_iac.engine.runsecrets import RunSecrets
from gpustack_iac.engine.state import StateStore
from gpustack_iac.errors import StateError


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUSTACK_PASSPHRASE", "unit-test-passphrase")


def test_set_list_delete_and_values_are_encrypted(tmp_path: Path) -> None:
    secrets = RunSecrets(StateStore(tmp_path, "proj", "dev"))
    assert secrets.names() == [] and secrets.values() == {}
    assert secrets.set("HF_TOKEN", "hf_plaintext_value") is True
    assert secrets.set("HF_TOKEN", "hf_plaintext_value2") is False
    assert secrets.names() == ["HF_TOKEN"]
    raw = secrets.path.read_bytes()
    assert b"hf_plaintext_value" not in raw and oct(secrets.path.stat().st_mode & 0o777) == "0o600"
    # Another store of the same stack (another command) reads it back with the passphrase.
    assert RunSecrets(StateStore(tmp_path, "proj", "dev")).values() == {"HF_TOKEN": "hf_plaintext_value2"}
    # Per stack: another stack does not see it.
    assert RunSecrets(StateStore(tmp_path, "proj", "prod")).names() == []
    assert secrets.delete("HF_TOKEN") is True and secrets.delete("HF_TOKEN") is False
    assert secrets.names() == []


def test_wrong_passphrase_and_bad_names_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    RunSecrets(StateStore(tmp_path, "proj", "dev")).set("A", "v")
    monkeypatch.setenv("GPUSTACK_PASSPHRASE", "wrong")
    with pytest.raises(StateError):
        RunSecrets(StateStore(tmp_path, "proj", "dev")).values()
    with pytest.raises(StateError, match="secret name"):
        RunSecrets(StateStore(tmp_path, "proj", "dev")).set("1BAD", "v")
    assert "GPUSTACK_PASSPHRASE" in os.environ
