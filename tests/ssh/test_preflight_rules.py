"""Preflight rules on what a host reported: each refusal is one line naming the host (no SSH needed)."""

from __future__ import annotations

import dataclasses

import pytest

from gpustack_iac.providers.sshconn import SshHostError
from gpustack_iac.providers.sshhost import Preflight, check_preflight

GOOD = Preflight(os="Linux", arch="x86_64", home="/home/u", python="/usr/bin/python3", python_version="3.11",
                 install_dir="/home/u/.gpustack", existed=False, free_mb=4096, writable=True, sudo=False,
                 systemd=False, root=False, gpus=[])


def test_a_good_host_passes() -> None:
    check_preflight(GOOD, "u@h:22")


@pytest.mark.parametrize(("change", "expected"), [
    ({"free_mb": 100}, "host u@h:22: not enough disk: 100 MiB free under /home/u/.gpustack, 512 MiB needed"),
    ({"writable": False}, "host u@h:22: cannot write /home/u/.gpustack: sudo needed but not available"),
    ({"python": ""}, "host u@h:22: no suitable Python: python3 is not on the PATH"),
    ({"python_version": "3.8"}, "host u@h:22: no suitable Python: /usr/bin/python3 is 3.8, 3.10 or newer is needed"),
    ({"python_version": ""}, "host u@h:22: no suitable Python: /usr/bin/python3 has no venv module"),
    ({"os": "Darwin"}, "host u@h:22: Darwin is not supported"),
])
def test_refusals_are_one_line(change: dict[str, object], expected: str) -> None:
    with pytest.raises(SshHostError) as caught:
        check_preflight(dataclasses.replace(GOOD, **change), "u@h:22")
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


def test_wheels_for_another_python_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gpustack_iac.providers.wheelhouse import WheelhouseError, build

    with pytest.raises(WheelhouseError, match="the host has Python 3.9 on aarch64"):
        build(tmp_path, "3.9", "aarch64")


def test_the_systemd_unit_keeps_the_sessions_engine_address() -> None:
    """A unit starts from an empty environment: the DOCKER_HOST the preflight's session had is written into it."""
    from gpustack_iac.providers.sshhost import HostLayout, systemd_unit

    layout = HostLayout.of(GOOD.install_dir, "gpus-h1")
    with_engine = systemd_unit(layout, dataclasses.replace(GOOD, docker_host="unix:///run/user/1000/podman.sock"), 40001, "u")
    assert "Environment=DOCKER_HOST=unix:///run/user/1000/podman.sock\n" in with_engine
    assert "DOCKER_HOST" not in systemd_unit(layout, GOOD, 40001, "u")
