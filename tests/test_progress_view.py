"""Progress inside a long step: the wheelhouse upload to a slow host reports bytes and files, and the
CLI's live view shows it — a live line on a terminal, one line per step over two seconds otherwise.

The host is a stand-in for SFTP that throttles what it receives (a slow link), so the upload takes
over two seconds whatever the machine's load; it really copies the files.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from gpustack_iac.commands.liveview import LiveView
from gpustack_iac.contract import progress
from gpustack_iac.providers import sshhost
from gpustack_iac.providers.wheelhouse import Wheelhouse

CHUNK = 32 * 1024
WHEELS = {"gpustack_iac-1.0-py3-none-any.whl": 96 * 1024, "httptools-0.6-cp311.whl": 160 * 1024,
          "installer-0.7-py3-none-any.whl": 64 * 1024}
TOTAL = sum(WHEELS.values())


class SlowSftp:
    """Receives files at about CHUNK bytes per `pause` seconds, calling back as paramiko's put does."""

    def __init__(self, root: Path, pause: float) -> None:
        self.root, self.pause = root, pause

    def listdir_attr(self, path: str) -> list[Any]:
        return []

    def put(self, local: str, remote: str, callback: Any = None) -> None:
        data = Path(local).read_bytes()
        with open(self.root / Path(remote).name, "wb") as out:
            for start in range(0, len(data), CHUNK):
                out.write(data[start:start + CHUNK])
                time.sleep(self.pause)  # the link's speed, not a wait for a condition
                if callback is not None:
                    callback(min(start + CHUNK, len(data)), len(data))


class SlowHost:
    def __init__(self, root: Path, pause: float) -> None:
        self._sftp = SlowSftp(root, pause)

    def run(self, command: str, **_: Any) -> Any:
        return SimpleNamespace(exited=0, stdout="", stderr="")

    def sftp(self) -> SlowSftp:
        return self._sftp


def _wheelhouse(tmp_path: Path) -> Wheelhouse:
    house = tmp_path / "house"
    house.mkdir()
    for name, size in WHEELS.items():
        (house / name).write_bytes(bytes(size))
    return Wheelhouse(house, "test")


def _upload(tmp_path: Path, pause: float) -> Path:
    received = tmp_path / "received"
    received.mkdir()
    pf = SimpleNamespace(install_dir="/home/u/.gpustack")
    layout = sshhost.HostLayout.of("~/.gpustack", "h1")
    sshhost.upload_wheels(SlowHost(received, pause), "h1", layout, pf, _wheelhouse(tmp_path))  # type: ignore[arg-type]
    return received


def _pause_for_over_two_seconds() -> float:
    chunks = sum(-(-size // CHUNK) for size in WHEELS.values())
    return 2.6 / chunks


def test_not_on_a_terminal_a_long_upload_gets_one_line_with_its_figures(tmp_path: Path) -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, force_terminal=False, width=400))
    with view.showing():
        view.step_started("urn:h1", "+ gpustack:ssh:Host h1")
        received = _upload(tmp_path, _pause_for_over_two_seconds())
        view.step_finished("urn:h1")
    assert sorted(p.name for p in received.iterdir()) == sorted(WHEELS)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("  · host h1: uploading the wheelhouse (3 files): done (")
    assert f"{TOTAL / 1000:.1f} KB of {TOTAL / 1000:.1f} KB, 3 files" in lines[0]
    seconds = float(lines[0].rsplit(" in ", 1)[1].removesuffix(" s"))
    assert seconds >= 2.0


def test_short_work_prints_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    with LiveView(Console(file=out, force_terminal=False, width=400)).showing():
        _upload(tmp_path, 0.0)
        with progress.activity("host h1: installing the agent"):
            pass
    assert out.getvalue() == ""


def test_on_a_terminal_the_live_line_shows_what_how_far_and_since_when(tmp_path: Path) -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, force_terminal=True, width=400))
    seen: list[list[str]] = []
    with view.showing():
        view.step_started("urn:h1", "+ gpustack:ssh:Host h1")
        worker = threading.Thread(target=_upload, args=(tmp_path, _pause_for_over_two_seconds()))
        worker.start()
        deadline = time.monotonic() + 120
        while worker.is_alive() and time.monotonic() < deadline:
            lines = view.lines()
            if any("uploading the wheelhouse" in line for line in lines):
                seen.append(lines)
            time.sleep(0.1)
        worker.join(timeout=120)
        view.step_finished("urn:h1")
    assert seen, "no live line while the upload ran over two seconds"
    step_line, activity_line = seen[-1][0], seen[-1][1]
    assert step_line.startswith("  ⋯ + gpustack:ssh:Host h1  ") and step_line.endswith(" s")
    assert "↳ host h1: uploading the wheelhouse (3 files)" in activity_line
    assert f"of {TOTAL / 1000:.1f} KB" in activity_line
    assert "uploading the wheelhouse" in out.getvalue(), "the live line reached the terminal"
    assert view.lines() == [], "nothing is left on screen once the work ended"
