"""TLS in the gateway, for real: a local gateway with `domain` and `certificate: lets-encrypt` gets its
certificate from pebble (Let's Encrypt's test ACME server) over HTTP-01, and serves HTTPS with it.

pebble resolves names through pebble-challtestsrv's DNS, which answers 127.0.0.1 for every name, so
the HTTP-01 validation really connects to the gateway's challenge responder on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

from gpustack_iac.runtime.gateway.tls import self_signed

pytestmark = pytest.mark.skipif(not (shutil.which("pebble") and shutil.which("pebble-challtestsrv")),
                                reason="pebble is not installed (apt-get install pebble)")
DOMAIN = "llm.example.com"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_https(url: str, cafile: Path, deadline: float = 60.0) -> bytes:
    ctx = ssl.create_default_context(cafile=str(cafile))
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
                return r.read()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[dict[str, object]]:
    pair = self_signed(("127.0.0.1", "localhost"), tmp_path / "pebble-tls")  # pebble's own HTTPS
    dns, dir_port, mgmt, http01, tls_port, chall_mgmt = (_free_port() for _ in range(6))
    config = {"pebble": {"listenAddress": f"127.0.0.1:{dir_port}", "managementListenAddress": f"127.0.0.1:{mgmt}",
                         "certificate": str(pair.cert_file), "privateKey": str(pair.key_file), "httpPort": http01,
                         "tlsPort": tls_port, "ocspResponderURL": "", "externalAccountBindingRequired": False}}
    (tmp_path / "pebble.json").write_text(json.dumps(config))
    logs = (tmp_path / "challtestsrv.log").open("wb"), (tmp_path / "pebble.log").open("wb")
    procs = [subprocess.Popen(["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                               "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                               "-management", f"127.0.0.1:{chall_mgmt}"], stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        procs.append(subprocess.Popen(["pebble", "-config", str(tmp_path / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
                                      stdout=logs[1], stderr=subprocess.STDOUT,
                                      env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}))
        _wait_https(f"https://127.0.0.1:{dir_port}/dir", pair.cert_file)
        yield {"directory": f"https://127.0.0.1:{dir_port}/dir", "ca_bundle": pair.cert_file, "http01": http01,
               "management": f"https://127.0.0.1:{mgmt}"}
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for f in logs:
            f.close()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPUSTACK_PASSPHRASE": "test-passphrase"}
    return subprocess.run([sys.executable, "-m", "gpustack_iac", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


def test_local_gateway_serves_https_with_a_certificate_pebble_issued(tmp_path: Path, pebble: dict[str, object]) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "gateway.gpustack.yml").write_text(
        "type: gateway\nname: gw\nbackend: local\ndefault: true\n"
        f"domain: {DOMAIN}\n"
        "certificate:\n  type: lets-encrypt\n"
        f"  directory: {pebble['directory']}\n  ca_bundle: {pebble['ca_bundle']}\n  http_port: {pebble['http01']}\n")
    state = tmp_path / "state"
    up = _cli("up", str(config), "--yes", "--state-dir", str(state), "--engine", "embedded", cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        out = _cli("output", "gateway_url", "--state-dir", str(state), "--engine", "embedded", cwd=tmp_path)
        url = out.stdout.strip().strip('"')
        assert url.startswith("https://127.0.0.1:"), out.stdout + out.stderr
        port = int(url.rsplit(":", 1)[1])
        # Trust exactly pebble's root (regenerated on each pebble start) and check the chain and the name.
        root = _wait_https(f"{pebble['management']}/roots/0", Path(str(pebble["ca_bundle"])))
        (tmp_path / "pebble-root.pem").write_bytes(root)
        ctx = ssl.create_default_context(cafile=str(tmp_path / "pebble-root.pem"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            tls.sendall(f"GET /services/none/ HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n".encode())
            answer = tls.recv(4096).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 "), answer
        assert "Pebble" in leaf.issuer.rfc4514_string()
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert names == [DOMAIN]
        key = state.parent / "local"
        issued = list(key.rglob("acme.key"))
        assert issued and all(oct(p.stat().st_mode & 0o777) == "0o600" for p in issued)
    finally:
        down = _cli("destroy", "--yes", "--state-dir", str(state), "--engine", "embedded", cwd=tmp_path)
        assert down.returncode == 0, down.stdout + down.stderr


def test_self_signed_and_files_certificates_serve_tls(tmp_path: Path) -> None:
    """The same TLS path without an ACME server: a self-signed certificate, then the same pair as files."""
    import asyncio

    from aiohttp import web

    from gpustack_iac.runtime.gateway.certsource import obtain
    from gpustack_iac.runtime.gateway.tls import TLSOptions, needs_renewal
    from gpustack_iac.runtime.gateway.tls_site import start_tls_site

    pair = obtain(TLSOptions(mode="self-signed", names=("gw.local.test", "127.0.0.1"), cert_dir=tmp_path))
    assert not needs_renewal(pair.cert_file, ("gw.local.test",)) and needs_renewal(pair.cert_file, ("other.test",))
    assert oct(pair.key_file.stat().st_mode & 0o777) == "0o600"
    files = TLSOptions(mode="files", names=("gw.local.test",), cert_dir=tmp_path, cert_file=pair.cert_file, key_file=pair.key_file)

    async def scenario() -> str:
        app = web.Application()
        app.router.add_get("/", lambda _: web.Response(text="over tls"))
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            port = await start_tls_site(runner, "127.0.0.1", files, 0)
            ctx = ssl.create_default_context(cafile=str(pair.cert_file))
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="gw.local.test")
            writer.write(b"GET / HTTP/1.1\r\nHost: gw.local.test\r\nConnection: close\r\n\r\n")
            body = (await reader.read()).decode()
            writer.close()
            return body
        finally:
            await runner.cleanup()

    assert asyncio.run(asyncio.wait_for(scenario(), 30)).endswith("over tls")
