"""Crash safety with real processes killed by SIGKILL: journal replay and atomic checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpustack_iac.engine.wire import wrap_secret as secret
from gpustack_iac.engine.state import StateStore

PROJECT = "proj"
STACK = "dev"
DEADLINE_S = 60.0
ENDED = 12

# Applies ENDED resources (one with a secret), sets outputs, then begins one more and hangs.
APPLY_THEN_HANG = """
import sys, time
from pathlib import Path
from gpustack_iac.engine.wire import wrap_secret as secret
from gpustack_iac.engine.state import PendingOperation, ResourceState, StateStore
root, count = Path(sys.argv[1]), int(sys.argv[2])
store = StateStore(root, "proj", "dev", passphrase="pw")
def res(i, id_):
    inputs = {"index": i}
    if i == 3:
        inputs["token"] = secret("token-of-three")
    return ResourceState(urn=f"urn:pulumi:dev::proj::gpustack:local:Host::h{i}", type="gpustack:local:Host",
                         custom=True, id=id_, inputs=inputs, outputs=dict(inputs))
with store.lock("up"):
    for i in range(count):
        r = res(i, f"id-{i}")
        store.begin(PendingOperation(r, "creating"))
        store.end(r.urn, r)
    store.set_outputs({"done": count})
    store.begin(PendingOperation(res(count, ""), "creating"))
    print("IN-FLIGHT", flush=True)
    time.sleep(120)
"""

# Compacts forever with a growing state, announcing each serial.
COMPACT_FOREVER = """
import sys, time
from pathlib import Path
from gpustack_iac.engine.state import PendingOperation, ResourceState, StateStore
store = StateStore(Path(sys.argv[1]), "proj", "dev")
start = store.load().serial
deadline = time.monotonic() + 120
i = 0
while time.monotonic() < deadline:
    r = ResourceState(urn=f"urn:pulumi:dev::proj::gpustack:local:Host::w{start}-{i}", type="gpustack:local:Host",
                      custom=True, id=str(i), inputs={"pad": "x" * 2000, "i": i})
    store.begin(PendingOperation(r, "creating"))
    store.end(r.urn, r)
    cp = store.compact()
    print("SERIAL", cp.serial, flush=True)
    i += 1
"""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=DEADLINE_S)
            if proc.stdout:
                proc.stdout.close()


def spawn(procs: list[subprocess.Popen[str]], tmp_path: Path, source: str, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / f"child{len(procs)}.py"
    script.write_text(source)
    env = {k: v for k, v in os.environ.items() if k not in ("GPUSTACK_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE")}
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    procs.append(proc)
    return proc


def wait_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + DEADLINE_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"child never printed {prefix!r}; output: {''.join(seen)!r}")


def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=DEADLINE_S) == -signal.SIGKILL


def test_journal_replay_after_kill_9(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    child = spawn(procs, tmp_path, APPLY_THEN_HANG, str(tmp_path), str(ENDED))
    wait_line(child, "IN-FLIGHT")
    kill9(child)

    store = StateStore(tmp_path, PROJECT, STACK, passphrase="pw")
    assert not store.path.exists()  # nothing was compacted: everything comes from the journal
    cp = store.load()
    assert [r.id for r in cp.resources] == [f"id-{i}" for i in range(ENDED)]
    assert cp.get(f"urn:pulumi:{STACK}::{PROJECT}::gpustack:local:Host::h3").inputs["token"] == secret(  # type: ignore[union-attr]
        "token-of-three"
    )
    assert cp.outputs == {"done": ENDED}
    assert len(cp.pending_operations) == 1
    pending = cp.pending_operations[0]
    assert pending.type == "creating"
    assert pending.resource.urn.endswith(f"::h{ENDED}")

    # The dead owner's lock is recognised as stale, cleared, and the next run compacts the journal.
    owner = store.unlock()
    assert owner is not None and owner.pid == child.pid
    with store.lock("up"):
        compacted = store.compact()
    assert compacted.serial == 1 and not store.journal_path.exists()
    assert len(compacted.resources) == ENDED and len(compacted.pending_operations) == 1
    doc = json.loads(store.path.read_text())
    assert doc["checkpoint"]["latest"]["pending_operations"][0]["type"] == "creating"
    assert b"token-of-three" not in store.path.read_bytes()


def test_checkpoint_is_always_valid_json(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    store = StateStore(tmp_path, PROJECT, STACK)
    reads = 0
    for _ in range(3):
        writer = spawn(procs, tmp_path, COMPACT_FOREVER, str(tmp_path))
        wait_line(writer, "SERIAL")
        # Read while compactions replace the file underneath us, for several compactions: every read
        # must parse.
        first = json.loads(store.path.read_bytes())["gpustack"]["serial"]
        serial = first
        deadline = time.monotonic() + DEADLINE_S
        while serial < first + 5 and time.monotonic() < deadline:
            doc = json.loads(store.path.read_bytes())
            assert doc["version"] == 3 and "latest" in doc["checkpoint"]
            serial = doc["gpustack"]["serial"]
            reads += 1
        assert serial >= first + 5, "the writer made no progress"
        kill9(writer)  # at an arbitrary point, quite possibly mid-compaction
        doc = json.loads(store.path.read_bytes())
        cp = store.load()
        assert cp.serial >= first + 5
        # Whatever the kill interrupted, the journal and checkpoint agree on every finished step.
        assert len({r.urn for r in cp.resources}) == len(cp.resources)
        assert len(doc["checkpoint"]["latest"]["resources"]) <= len(cp.resources)
    assert reads >= 3
    leftovers = [p.name for p in store.dir.iterdir() if p.name.endswith(".tmp")]
    # A kill between mkstemp and os.replace may leave a temp file; it is never the checkpoint itself.
    assert all(name.startswith(f".{STACK}.json.") for name in leftovers)
