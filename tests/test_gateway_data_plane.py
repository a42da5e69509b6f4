"""`data_plane:` on a gateway (docs/gateway.md, Selection): what plan says and refuses, and a local
gateway that runs HAProxy in front when asked to."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from gpustack_iac.compile import facts as facts_module
from gpustack_iac.compile.program import compile_spec
from gpustack_iac.errors import ConfigError
from gpustack_iac.runtime.gateway.haproxy.process import usable
from gpustack_iac.spec.loader import load_text
from gpustack_iac.stacks.context import StackContext

FLEET = "type: fleet\nname: f\nbackends: [local]\nnodes: 1\nresources: {cpu: 1.., memory: 64MB.., disk: 0GB..}\n---\n"


def _gateway(data_plane: str, backend: str = "local") -> str:
    where = "region: us-central1\ndomain: example.com\n" if backend == "gcp" else "certificate: null\n"
    return f"type: gateway\nname: gw\nbackend: {backend}\ndefault: true\n{where}data_plane: {data_plane}\n"


def _compile(text: str, tmp_path: Path) -> list[str]:
    spec = load_text(text, file=str(tmp_path / "s.dstack.yml"), env={})
    ctx = StackContext(project="p", stack="dev", state_root=tmp_path)
    return list(compile_spec(spec, ctx, hosts=[]).hosts)


def _haproxy_here(monkeypatch: pytest.MonkeyPatch, version: tuple[int, int] | None) -> None:
    monkeypatch.setattr(facts_module, "haproxy_version", lambda binary="haproxy": version)


@pytest.mark.parametrize("choice", ["auto", "haproxy"])
def test_plan_says_in_one_line_that_the_gateway_gets_haproxy(choice: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _haproxy_here(monkeypatch, (2, 6))
    lines = _compile(FLEET + _gateway(choice), tmp_path)
    assert [line for line in lines if line.startswith("gateway gw:")] == [
        f"gateway gw: data plane HAProxy 2.6 (data_plane: {choice}), the Python gateway behind it"]


def test_without_haproxy_auto_falls_back_in_one_line_and_haproxy_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _haproxy_here(monkeypatch, None)
    assert "gateway gw: data plane python (data_plane: auto falls back: no haproxy on PATH)" in _compile(FLEET + _gateway("auto"), tmp_path)
    with pytest.raises(ConfigError) as caught:
        _compile(FLEET + _gateway("haproxy"), tmp_path)
    [found] = [d for d in caught.value.diagnostics if d.path == "data_plane"]
    assert "needs HAProxy 2.6 or later" in found.message and "no haproxy on PATH" in found.message


def test_an_old_haproxy_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _haproxy_here(monkeypatch, (2, 4))
    with pytest.raises(ConfigError) as caught:
        _compile(FLEET + _gateway("haproxy"), tmp_path)
    assert "haproxy 2.4 is older than 2.6" in str(caught.value)


def test_the_default_adds_no_line_and_python_is_accepted_everywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _haproxy_here(monkeypatch, None)
    assert not [line for line in _compile(FLEET + _gateway("python"), tmp_path) if line.startswith("gateway")]


@pytest.mark.parametrize("choice", ["auto", "haproxy"])
def test_a_cloud_gateway_refuses_haproxy_naming_property_and_backend(choice: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _compile(FLEET + _gateway(choice, backend="gcp"), tmp_path)
    found = [d for d in caught.value.diagnostics if d.path == "data_plane"]
    assert found and "data_plane" in found[0].message and "gcp" in found[0].message, caught.value


def _haproxy_children(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if "haproxy" in p.name()]
    except psutil.NoSuchProcess:
        return []


def test_a_local_gateway_with_data_plane_haproxy_serves_through_haproxy_and_leaves_nothing(tmp_path: Path) -> None:
    if not usable():
        if os.environ.get("CI"):
            pytest.fail("HAProxy 2.6+ must be installed in CI (.ci/run installs it)")
        pytest.skip("no HAProxy 2.6+ on PATH")
    from gpustack_iac.providers.local import GatewayProvider

    provider = GatewayProvider()
    props = {"name": "gw", "state_dir": str(tmp_path / "gw"), "domain": None, "data_plane": "haproxy"}
    outs = provider.create(props).outs
    haproxy: list[psutil.Process] = []
    try:
        assert outs is not None
        children = haproxy = _haproxy_children(int(outs["pid"]))
        assert children, "the gateway runs no HAProxy"
        request = urllib.request.Request(f"{outs['url']}/services/nothing/", headers={"Authorization": f"Bearer {outs['token']}"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code == 404 and json.loads(answer.value.read())["error"]["code"] == "unknown_service"
        # HAProxy listens on the gateway's port, not the Python plane.
        port = int(str(outs["url"]).rsplit(":", 1)[1])
        listeners = {c.laddr.port for p in children for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert port in listeners
    finally:
        provider.delete("gw", outs or props)
    gone, alive = psutil.wait_procs(haproxy, timeout=30)
    assert not alive, f"HAProxy left running: {alive}"
