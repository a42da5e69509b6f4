"""Host volumes on the local backend: a service keeps its data across a rolling update, destroy
keeps the data unless auto_cleanup, and a plan that would move the data fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import Project, WideProject, example_project, http, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def volume_project(tmp_path: Path) -> Iterator[Project]:
    with example_project(tmp_path, "volume", "vol", kind=WideProject) as project:
        notes = project.config / "notes.gpustack.yml"
        # The mount path inside the test's directory: the link the agent makes stays there.
        notes.write_text(notes.read_text().replace("notes-data:/data", f"notes-data:{project.root}/mnt/data"))
        yield project


def _get(project: Project) -> dict:
    out = project.outputs()
    status, body = http("GET", out["endpoints"]["notes"] + "/", out["token"])
    assert status == 200, body
    return json.loads(body)


def test_service_data_survives_rolling_update_and_destroy_keeps_it(volume_project: Project) -> None:
    volume_project.cli("up", "vol", "--yes")
    out = volume_project.outputs()
    volume = out["volumes"]["notes-data"]
    assert volume["host"] == "storage-1"
    first = _get(volume_project)
    assert first["version"] == "1" and first["notes"][0].startswith("version 1 started")
    data_dir = Path(volume["path"])
    assert (data_dir / "notes.txt").exists()
    link = volume_project.root / "mnt" / "data"
    assert link.is_symlink() and link.resolve() == data_dir.resolve()
    # The replica runs on the volume's host.
    status = volume_project.cli("status").stdout
    notes_rows = [ln for ln in status.splitlines() if "running" in ln]
    assert notes_rows and all("storage-1" in ln for ln in notes_rows), status
    # A rolling update: the new replica (version 2) reads what version 1 wrote.
    config = volume_project.config / "notes.gpustack.yml"
    config.write_text(config.read_text().replace("VERSION=1", "VERSION=2"))
    volume_project.cli("up", "vol", "--yes")
    second = wait_until(lambda: (r := _get(volume_project))["version"] == "2" and r, 120, what="the new version to serve")
    assert second["replica"] != first["replica"]
    assert [n.split(" started")[0] for n in second["notes"]] == ["version 1", "version 2"]
    # destroy says it keeps the data, and does.
    gone = volume_project.cli("destroy", "--yes")
    assert "volume notes-data: data at storage-1:" in gone.stdout and "is kept" in gone.stdout
    assert (data_dir / "notes.txt").read_text().count("started") == 2


def test_moving_a_volume_fails_at_plan_and_auto_cleanup_deletes_it(volume_project: Project) -> None:
    for name in ("notes.gpustack.yml", "gateway.gpustack.yml", "notes.py"):
        (volume_project.config / name).unlink()
    volume_project.cli("up", "vol", "--yes")
    data_dir = Path(volume_project.outputs()["volumes"]["notes-data"]["path"])
    (data_dir / "kept.txt").write_text("precious")
    data = volume_project.config / "data.gpustack.yml"
    data.write_text(data.read_text().replace("host: storage-1", "host: storage-0"))
    moved = volume_project.cli("plan", "vol", check=False)
    assert moved.returncode != 0
    assert "would move its data (host storage-1 → storage-0)" in moved.stdout + moved.stderr
    assert "Traceback" not in moved.stdout + moved.stderr
    data.write_text(data.read_text().replace("host: storage-0", "host: storage-1"))
    # Turning auto_cleanup on is an in-place change; the plan of a destroy says the data goes.
    data.write_text(data.read_text().replace("auto_cleanup: false", "auto_cleanup: true"))
    volume_project.cli("up", "vol", "--yes")
    assert (data_dir / "kept.txt").read_text() == "precious"
    gone = volume_project.cli("destroy", "--yes").stdout
    assert "is deleted (auto_cleanup)" in gone
    assert not data_dir.exists()
