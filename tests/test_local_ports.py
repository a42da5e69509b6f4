"""The local backend picks its daemons' ports itself; one taken between the pick and the watchdog's bind
is picked again instead of failing `up` (a full test run lost a container test to "Address already in use")."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gpustack_iac.providers import local


def test_a_port_taken_after_the_pick_is_picked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        taken_port = int(taken.getsockname()[1])
        picks: list[int] = []
        real = local._free_port

        def first_one_taken(preferred: int | None) -> int:
            port = taken_port if not picks else real(preferred)
            picks.append(port)
            return port

        monkeypatch.setattr(local, "_free_port", first_one_taken)
        provider = local.AgentProvider()
        props = {"name": "box-0", "state_dir": str(tmp_path / "box-0")}
        created = provider.create(props)
        outs = created.outs
        assert outs is not None
        try:
            assert picks[0] == taken_port and len(picks) == 2
            assert outs["port"] == picks[1] != taken_port
            assert local._alive(outs)
        finally:
            provider.delete(str(created.id), outs)
    assert not local._alive(outs)
