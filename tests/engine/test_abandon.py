"""`destroy --force` and `state rm`: resources whose host is gone for good leave the state, which
records them as abandoned (before, destroy could never finish: "run destroy again" failed forever)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pulumi
import pytest
from click.testing import CliRunner

from filestack import PROJECT, STACK, open_engine
from gonehost import OnHost
from gpustack_iac.cli import main
from gpustack_iac.engine.stores import open_store
from gpustack_iac.providers.file import File


@pytest.fixture()
def host() -> Iterator[socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener
    listener.close()


def _program(listener: socket.socket, files: Path, on_box: bool = True) -> Callable[[], None]:
    port = listener.getsockname()[1]

    def program() -> None:
        box = OnHost("box", {"host": "127.0.0.1", "port": port})
        # A file the box's resources use: deleted first, then the box (dependents before what they need).
        File("uses-box.txt", path=str(files / "uses-box.txt"), content="x",
             opts=pulumi.ResourceOptions(depends_on=[box]) if on_box else None)
        File("elsewhere.txt", path=str(files / "elsewhere.txt"), content="y")

    return program


@pytest.fixture()
def deployed(host: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPUSTACK_PASSPHRASE", "test-passphrase")
    assert open_engine(tmp_path / "state").up(_program(host, tmp_path / "files")).ok
    host.close()  # the host is gone for good
    return tmp_path


def test_destroy_force_abandons_what_the_dead_host_held_and_deletes_the_rest(deployed: Path) -> None:
    plain = CliRunner().invoke(main, ["destroy", "--yes", "--state-dir", "state"])
    assert plain.exit_code != 0 and "destroy --force" in plain.output
    forced = CliRunner().invoke(main, ["destroy", "--yes", "--force", "--state-dir", "state"])
    assert forced.exit_code == 0, forced.output
    assert "Abandoned" in forced.output and "box" in forced.output and "cannot reach 127.0.0.1" in forced.output
    assert not list((deployed / "files").iterdir())  # what could be deleted was
    checkpoint = open_store(str(deployed / "state"), PROJECT, STACK, "test-passphrase").load()
    assert not [r for r in checkpoint.resources if r.custom]
    [gone] = checkpoint.abandoned
    assert gone.urn.endswith("::box") and gone.id.startswith("127.0.0.1:") and "cannot reach" in gone.reason
    listed = CliRunner().invoke(main, ["state", "list", "--state-dir", "state"])
    assert "::box [abandoned " in listed.output


def test_state_rm_drops_one_resource_and_refuses_while_others_use_it(deployed: Path) -> None:
    refused = CliRunner().invoke(main, ["state", "rm", "box", "--state-dir", "state"])
    assert refused.exit_code != 0 and "still used by uses-box.txt" in refused.output
    assert CliRunner().invoke(main, ["state", "rm", "uses-box.txt", "--state-dir", "state"]).exit_code == 0
    removed = CliRunner().invoke(main, ["state", "rm", "box", "--state-dir", "state"])
    assert removed.exit_code == 0, removed.output
    assert "Abandoned" in removed.output and "removed by `state rm`" in removed.output
    # What is left deletes normally; the abandoned entries stay in the state's record.
    done = CliRunner().invoke(main, ["destroy", "--yes", "--state-dir", "state"])
    assert done.exit_code == 0, done.output
    checkpoint = open_store(str(deployed / "state"), PROJECT, STACK, "test-passphrase").load()
    assert sorted(a.urn.rsplit("::", 1)[-1] for a in checkpoint.abandoned) == ["box", "uses-box.txt"]
    assert (deployed / "files" / "uses-box.txt").exists()  # abandoned, never touched
