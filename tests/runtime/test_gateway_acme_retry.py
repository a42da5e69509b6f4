"""A gateway whose ACME server is unreachable at start (pebble not running yet: three orders fail)
keeps serving plain HTTP, retries issuance with back-off, and serves TLS once pebble answers."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

from gpustack_iac.runtime.auth import new_token, write_token_file
from gpustack_iac.runtime.gateway.tls import self_signed
from tests.runtime.test_gateway_acme import DOMAIN, _free_port, _stop, _wait_https, pytestmark  # noqa: F401


def _wait(check: object, what: str, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout} s\n{log.read_text()[-4000:]}")


@pytest.fixture
def late_pebble(tmp_path: Path) -> Iterator[dict[str, object]]:
    """pebble's ports, chosen now; `start()` starts it later."""
    pair = self_signed(("127.0.0.1", "localhost"), tmp_path / "pebble-tls")
    dns, dir_port, mgmt, http01, tls_port, chall_mgmt = (_free_port() for _ in range(6))
    config = {"pebble": {"listenAddress": f"127.0.0.1:{dir_port}", "managementListenAddress": f"127.0.0.1:{mgmt}",
                         "certificate": str(pair.cert_file), "privateKey": str(pair.key_file), "httpPort": http01,
                         "tlsPort": tls_port, "ocspResponderURL": "", "externalAccountBindingRequired": False}}
    (tmp_path / "pebble.json").write_text(json.dumps(config))
    procs: list[subprocess.Popen[bytes]] = []
    logs = (tmp_path / "challtestsrv.log").open("wb"), (tmp_path / "pebble.log").open("wb")

    def start() -> None:
        procs.append(subprocess.Popen(["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                                       "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                                       "-management", f"127.0.0.1:{chall_mgmt}"], stdout=logs[0], stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(["pebble", "-config", str(tmp_path / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
                                      stdout=logs[1], stderr=subprocess.STDOUT,
                                      env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}))

    try:
        yield {"directory": f"https://127.0.0.1:{dir_port}/dir", "ca_bundle": pair.cert_file, "http01": http01,
               "management": f"https://127.0.0.1:{mgmt}", "start": start}
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for f in logs:
            f.close()


def test_gateway_serves_http_while_acme_fails_then_gets_its_certificate(tmp_path: Path,
                                                                       late_pebble: dict[str, object]) -> None:
    token, admin = tmp_path / "token", tmp_path / "admin.token"
    write_token_file(token, new_token())
    write_token_file(admin, new_token())
    port_file, log = tmp_path / "ports.json", tmp_path / "gateway.log"
    argv = [sys.executable, "-m", "gpustack_iac.runtime.gateway", "--port", "0", "--control-port", "0",
            "--token-file", str(token), "--admin-token-file", str(admin), "--state-dir", str(tmp_path / "state"),
            "--port-file", str(port_file), "--domain", DOMAIN, "--tls-port", "0", "--certificate", "lets-encrypt",
            "--acme-directory", str(late_pebble["directory"]), "--acme-ca-bundle", str(late_pebble["ca_bundle"]),
            "--acme-http-port", str(late_pebble["http01"]), "--acme-retry-base", "0.3"]
    with log.open("wb") as out:
        gateway = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(port_file.exists, "the gateway wrote its ports although ACME failed", log)
        ports = json.loads(port_file.read_text())
        _wait(lambda: "certificate attempt 3 failed" in log.read_text(), "three failed orders", log)
        assert gateway.poll() is None, "the gateway is still running"
        with socket.create_connection(("127.0.0.1", ports["port"]), timeout=10) as plain:
            plain.sendall(f"GET /services/none/ HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n".encode())
            assert plain.recv(100).startswith(b"HTTP/1.1 "), "plain HTTP answers meanwhile"
        late_pebble["start"]()  # type: ignore[operator]
        _wait(lambda: "TLS listener started" in log.read_text(), "a certificate once pebble answers", log)
        root = _wait_https(f"{late_pebble['management']}/roots/0", Path(str(late_pebble["ca_bundle"])))
        (tmp_path / "root.pem").write_bytes(root)
        ctx = ssl.create_default_context(cafile=str(tmp_path / "root.pem"))
        with socket.create_connection(("127.0.0.1", ports["tls_port"]), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        assert "Pebble" in leaf.issuer.rfc4514_string()
    finally:
        _stop(gateway)
