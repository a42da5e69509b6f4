"""Boot scripts for cloud nodes and gateways (providers/cloudboot.py, runtime/bootfetch.py), checked
without an instance: what they install from, their size, their units; SigV4 against botocore's."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpustack_iac.providers.cloudboot import BootSource, GatewayBoot, NodeJoin, gateway_boot, node_boot, unit
from gpustack_iac.providers.runtime_bundle import RuntimeBundle
from gpustack_iac.runtime import bootfetch

MANIFEST = json.dumps({"version": "v", "python": "3.12", "machine": "x86_64", "wheels": []}).encode()
BUNDLE = RuntimeBundle(python="3.12", machine="x86_64", version="py3.12-x86_64-0.1.0-abc", manifest=MANIFEST)
SOURCE = BootSource(cloud="aws", region="us-east-1", bucket="b", bundle=BUNDLE)
JOIN = NodeJoin(agent_token_secret="/p/agent", join_token_secret="/p/joins/gpu", fleet="gpu", node_group="g",
                controller_url="http://10.60.0.10:8443", agent_port=8600, labels=(("spot", "true"),))
GATEWAY = GatewayBoot(token_secret="/p/token", admin_token_secret="/p/admin", args=("--port", "80"),
                      joins_path="/p/joins", node_groups='{"kind": "aws", "groups": []}')


@pytest.mark.parametrize("script", [node_boot(SOURCE, JOIN), gateway_boot(SOURCE, GATEWAY)], ids=["node", "gateway"])
def test_boot_scripts_install_nothing_from_an_index_and_fit_user_data(script: str) -> None:
    for word in ("pip install", "ensurepip", "python3 -m venv", "aws ", "az ", " &\n"):
        assert word not in script
    assert BUNDLE.manifest_sha256 in script
    assert len(script.encode()) < 16384, "EC2 user data is at most 16 KB"
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_units_restart_always_and_keep_secrets_out_of_the_unit() -> None:
    script = node_boot(SOURCE, JOIN)
    assert "Restart=always" in script and "systemctl enable --now gpustack-agent.service" in script
    assert "--join-token-file /var/lib/gpustack/join.token" in script
    text = unit("x", ["/bin/echo", "50%", "${GPUSTACK_NAME}"])
    assert "ExecStart=/bin/echo 50%% '${GPUSTACK_NAME}'" in text


def test_sigv4_matches_botocore() -> None:
    """The boot fetcher signs S3 and SSM requests itself (no SDK on the image): same signature as botocore's."""
    pytest.importorskip("botocore")
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = {"AccessKeyId": "AKIDEXAMPLE", "SecretAccessKey": "secret", "Token": "session"}
    for method, url, body, headers, service in [
            ("GET", "http://s3.us-east-1.amazonaws.com/bucket/runtime/v/a%2Bb-1.0-py3-none-any.whl", b"", {}, "s3"),
            ("POST", "https://ssm.us-east-1.amazonaws.com/", b'{"Name": "/x"}',
             {"content-type": "application/x-amz-json-1.1", "x-amz-target": "AmazonSSM.GetParameter"}, "ssm")]:
        request = AWSRequest(method=method, url=url, data=body,
                             headers={**headers, "x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
        signer = S3SigV4Auth if service == "s3" else SigV4Auth
        signer(Credentials("AKIDEXAMPLE", "secret", "session"), service, "us-east-1").add_auth(request)
        now = datetime.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
        ours = bootfetch.sigv4_headers(method, url, "us-east-1", service, creds, body, headers, now=now)
        assert ours["authorization"] == request.headers["Authorization"]


def test_bootfetch_runs_on_the_standard_library_alone(tmp_path: Path) -> None:
    """It runs before anything is installed: importing it in a bare interpreter (-I -S) works."""
    code = f"import runpy; runpy.run_path({str(Path(bootfetch.__file__))!r}, run_name='bootfetch')"
    assert subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True).returncode == 0
