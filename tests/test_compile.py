"""compile: what the local backend honours, rejects (at plan, naming property and backend) or ignores (a warning)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack_iac.compile import compile_spec
from gpustack_iac.errors import ConfigError
from gpustack_iac.runtime.agent.hostinfo import detect_docker
from gpustack_iac.spec.loader import load_text
from gpustack_iac.stacks.context import StackContext

BASE = """
type: fleet
name: local
backends: [local]
nodes: 1
---
type: gateway
name: gw
backend: local
default: true
---
"""


def _compile(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    spec = load_text(BASE + text, file=str(tmp_path / "stack.gpustack.yml"), env={})
    return compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path))


def test_image_without_docker_fails_at_plan_naming_property_and_backend(tmp_path: Path) -> None:
    if detect_docker():
        pytest.skip("a Docker daemon answers here")
    with pytest.raises(ConfigError) as caught:
        _compile("type: service\nname: web\nport: 80\nimage: nginx\n", tmp_path)
    [diag] = caught.value.diagnostics
    assert diag.path == "image" and "local backend" in diag.message and "Docker" in diag.message
    image_line = (BASE + "type: service").count("\n") + 4  # the line of `image:` in the file
    assert diag.file.endswith("stack.gpustack.yml") and (diag.line, diag.column) == (image_line, 1)


def test_unimplemented_backend_is_named(tmp_path: Path) -> None:
    text = "type: fleet\nname: cloud\nbackends: [vultr]\nregions: [ewr]\nnodes: 1\n"
    with pytest.raises(ConfigError) as caught:
        _compile(text, tmp_path)
    [diag] = [d for d in caught.value.diagnostics if "backend vultr is not implemented yet" in d.message]
    assert diag.line == (BASE + text).splitlines().index("backends: [vultr]") + 1


def test_ignored_properties_are_warnings(tmp_path: Path) -> None:
    text = ("type: service\nname: web\nport: 80\ncommands: [python3 app.py]\nregions: [eu-west-1]\n"
            "rate_limits: [{rps: 5}]\nresources: {cpu: 1.., memory: 64MB.., shm_size: 1GB}\n")
    warnings = _compile(text, tmp_path).warnings
    assert "service web group default: regions is ignored by the local backend" in warnings
    assert not [w for w in warnings if "rate_limits" in w]  # enforced by the gateway
    assert "service web: resources.shm_size is ignored by the local backend for group default (no image)" in warnings


def test_rate_limits_reach_the_service_definition(tmp_path: Path) -> None:
    text = ("type: service\nname: web\nport: 80\ncommands: [python3 app.py]\n"
            "rate_limits:\n  - {prefix: /v1, rps: 2.5, burst: 4}\n  - {rps: 1, key: {type: header, header: X-Api-Key}}\n")
    definition = _compile(text, tmp_path).definitions["web"]
    assert definition["rate_limits"] == [
        {"prefix": "/v1", "key": {"type": "ip_address", "header": None}, "rps": 2.5, "burst": 4},
        {"prefix": "/", "key": {"type": "header", "header": "X-Api-Key"}, "rps": 1.0, "burst": 0},
    ]


def test_setup_runs_before_the_commands_and_working_dir_is_the_config_dir(tmp_path: Path) -> None:
    text = "type: service\nname: web\nport: 80\nsetup: [pip install -r req.txt]\ncommands: [python3 app.py]\n"
    [group] = _compile(text, tmp_path).definitions["web"]["groups"]
    assert group["commands"] == ["pip install -r req.txt", "python3 app.py"]
    assert group["working_dir"] == str(tmp_path.resolve())


def test_a_service_needs_a_gateway(tmp_path: Path) -> None:
    spec = load_text("type: service\nname: web\nport: 80\ncommands: [x]\n", file=str(tmp_path / "s.yml"), env={})
    with pytest.raises(ConfigError) as caught:
        compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path))
    assert "no gateway" in caught.value.diagnostics[0].message


LOCAL_GW = "type: fleet\nname: local\nbackends: [local]\nnodes: 1\n---\ntype: gateway\nname: gw\nbackend: local\ndefault: true\n"
SVC = "---\ntype: service\nname: web\nport: 80\ncommands: [x]\n"


def _problems(text: str, tmp_path: Path) -> list[tuple[int, str, str]]:
    spec = load_text(text, file=str(tmp_path / "stack.gpustack.yml"), env={})
    with pytest.raises(ConfigError) as caught:
        compile_spec(spec, StackContext(project="p", stack="dev", state_root=tmp_path))
    return [(d.line, d.path, d.message) for d in caught.value.diagnostics]


@pytest.mark.parametrize(
    ("gateway_extra", "service_extra", "line", "path", "message"),
    [
        ("replicas: 3\n", "", 10, "replicas", "gateway gw: replicas 3, but the local backend runs one gateway process per gateway; set replicas: 1"),
        ("certificate: lets-encrypt\n", "", 10, "certificate", "gateway gw: certificate lets-encrypt needs a domain; without it the local gateway would serve plain HTTP"),
        ("domain: example.com\ncertificate: null\n", "", 13, "https", "service web: gateway gw has domain example.com, but HTTPS would be served as plain HTTP"),
        ("", "https: true\n", 15, "https", "service web: https: true is set, but HTTPS would be served as plain HTTP"),
    ],
    ids=["gateway-replicas", "certificate", "https-by-domain", "https-explicit"],
)
def test_what_the_local_gateway_cannot_serve_is_refused_at_plan(
    tmp_path: Path, gateway_extra: str, service_extra: str, line: int, path: str, message: str
) -> None:
    problems = _problems(LOCAL_GW + gateway_extra + SVC + service_extra, tmp_path)
    assert any(p[0] == line and p[1] == path and message in p[2] for p in problems), problems


def test_a_domain_with_the_default_certificate_is_refused_and_plain_http_is_allowed(tmp_path: Path) -> None:
    problems = _problems(LOCAL_GW + "domain: example.com\n" + SVC + "https: false\n", tmp_path)
    assert [p[1] for p in problems] == ["certificate"], problems
    ok = load_text(LOCAL_GW + "domain: example.com\ncertificate: null\n" + SVC + "https: false\n", env={})
    compile_spec(ok, StackContext(project="p", stack="dev", state_root=tmp_path))


@pytest.mark.parametrize("certificate", ["lets-encrypt", "self-signed"])
def test_a_named_certificate_lifts_the_refusal_the_local_gateway_serves_tls(tmp_path: Path, certificate: str) -> None:
    # A domain with a certificate the configuration names, and https behind it: the local gateway
    # serves TLS (runtime/gateway/tls.py), so nothing is refused.
    ok = load_text(LOCAL_GW + f"domain: example.com\ncertificate: {certificate}\n" + SVC + "https: true\n", env={})
    compile_spec(ok, StackContext(project="p", stack="dev", state_root=tmp_path))


@pytest.mark.parametrize(("gateway", "expected", "prop"), [
    ("host: 10.9.9.9\n", "host '10.9.9.9' is not a host of an SSH fleet in this stack (hosts: 10.0.0.1)", "host"),
    ("host: 10.0.0.1\ncertificate: self-signed\n", "TLS on a gateway on a fleet host is not implemented yet", "certificate"),
])
def test_gateway_on_a_fleet_host_is_checked_at_plan(tmp_path: Path, gateway: str, expected: str, prop: str) -> None:
    text = ("type: fleet\nname: gpus\nssh_config:\n  hosts: [10.0.0.1]\n---\n"
            "type: gateway\nname: gw2\nbackend: ssh\n" + gateway)
    with pytest.raises(ConfigError) as caught:
        _compile(text, tmp_path)
    [diag] = [d for d in caught.value.diagnostics if expected in d.message]
    assert diag.path == prop


def test_gateway_on_backend_ssh_needs_a_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a gateway on backend ssh needs host"):
        _compile("type: gateway\nname: gw2\nbackend: ssh\n", tmp_path)


def _port_service(replicas: int) -> str:
    return (f"type: service\nname: web\nport: 8000\nreplicas: {replicas}\ncommands: [python3 -m http.server 8000]\n"
            "resources: {cpu: 1.., memory: 64MB.., disk: 0GB..}\n")


def test_commands_binding_the_declared_port_get_one_replica_per_host(tmp_path: Path) -> None:
    compiled = _compile(_port_service(1), tmp_path)
    [group] = compiled.definitions["web"]["groups"]
    assert group["host_port"] == 8000
    assert any("bind port 8000 themselves" in w and "one replica runs per host" in w for w in compiled.warnings)
    with pytest.raises(ConfigError) as caught:
        _compile(_port_service(2), tmp_path)
    [diag] = caught.value.diagnostics
    assert diag.path == "replicas" and "2 replicas bind port 8000 themselves" in diag.message and "1 host(s)" in diag.message
    # $PORT in the commands: the agent's port, any number per host.
    relaxed = _port_service(2).replace("http.server 8000", "http.server $PORT")
    assert not [w for w in _compile(relaxed, tmp_path).warnings if "themselves" in w]
