"""The control API over TLS with the gateway's own CA (runtime/gateway/control_tls.py), pinned by
the client (runtime/sync_client.py's `ca`, providers/control.py's `control_ca` input).

A real gateway process serves its control API with a CA the "stack" made; a ServiceRegistration
reaches it over https with that CA pinned; a client pinning another CA, a client trusting the
system store, and a pinned client on plain http are all refused before any token is sent.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any, Iterator

import pytest
from controller_fixtures import GatewayProcess, echo_group, service_def

from gpustack_iac.errors import RuntimeApiError
from gpustack_iac.providers.control import ServiceRegistrationProvider
from gpustack_iac.runtime import sync_client as http
from gpustack_iac.runtime.auth import new_token, write_token_file
from gpustack_iac.runtime.gateway.control_tls import ensure_ca, new_ca


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str]]:
    root = tmp_path_factory.mktemp("gw")
    ca_dir = root / "control-tls"
    ca_dir.mkdir(mode=0o700)
    cert_pem, key_pem = new_ca()  # what the stack keeps in its secrets and writes on the instance
    (ca_dir / "ca.pem").write_bytes(cert_pem)
    (ca_dir / "ca.key").write_bytes(key_pem)
    (ca_dir / "ca.key").chmod(0o600)
    gw = GatewayProcess(root=root, token=new_token(), admin_token=new_token(),
                        extra_flags=["--control-tls-dir", str(ca_dir), "--control-tls-name", "127.0.0.1",
                                     "--control-tls-name", "localhost"])
    write_token_file(root / "token", gw.token)
    write_token_file(root / "admin-token", gw.admin_token)
    try:
        gw.start()
        assert (ca_dir / "ca.pem").read_bytes() == cert_pem  # the stack's CA, not a new one
        yield gw, cert_pem.decode()
    finally:
        gw.stop_everything()


def _https(gw: GatewayProcess) -> str:
    return f"https://127.0.0.1:{gw.control_port}"


def test_a_service_registration_talks_tls_with_the_pinned_ca(tls_gateway: tuple[GatewayProcess, str]) -> None:
    gw, ca = tls_gateway
    props: dict[str, Any] = {"definition": service_def("llm", echo_group("main", "m1", replicas=1)),
                             "control_url": _https(gw), "admin_token": gw.admin_token, "control_ca": ca,
                             "control_wait": 30, "wait": False}
    ServiceRegistrationProvider().create(props)
    status = http.call("GET", _https(gw), "/control/services/llm", gw.admin_token, ca=ca)
    assert status["name"] == "llm"


def test_another_ca_the_system_store_and_plain_http_are_refused(tls_gateway: tuple[GatewayProcess, str]) -> None:
    gw, _ = tls_gateway
    other, _key = new_ca("someone else's CA")
    with pytest.raises(RuntimeApiError, match="CERTIFICATE_VERIFY_FAILED"):
        http.call("GET", _https(gw), "/control/health", gw.admin_token, ca=other.decode())
    # No pin: the system store does not know the gateway's CA either.
    with pytest.raises(RuntimeApiError, match="CERTIFICATE_VERIFY_FAILED"):
        http.call("GET", _https(gw), "/control/health", gw.admin_token)
    with pytest.raises(RuntimeApiError, match="not https"):
        http.call("GET", f"http://127.0.0.1:{gw.control_port}", "/control/health", gw.admin_token, ca=other.decode())


def test_the_server_certificate_is_for_the_given_names_only(tls_gateway: tuple[GatewayProcess, str]) -> None:
    gw, ca = tls_gateway
    ctx = http.pinned_context(ca)
    with socket.create_connection(("127.0.0.1", gw.control_port), timeout=30) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            ctx.wrap_socket(raw, server_hostname="gateway.example.test").close()
    with socket.create_connection(("127.0.0.1", gw.control_port), timeout=30) as raw:
        ctx.wrap_socket(raw, server_hostname="localhost").close()


def test_a_ca_is_generated_at_first_start_and_kept(tmp_path: Path) -> None:
    first = ensure_ca(tmp_path / "ctl")
    assert oct((tmp_path / "ctl" / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert ensure_ca(tmp_path / "ctl").cert_pem == first.cert_pem
