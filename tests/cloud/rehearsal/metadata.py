"""A small instance-metadata stand-in for the boot rehearsal: AWS's IMDSv2 (token first, then
role credentials, instance id, private address) and GCP's metadata server (Metadata-Flavor header,
service-account token, instance name, address). The instance is told apart by its source address.

It also stands in for GCP's Secret Manager (no emulator exists): `/v1/projects/P/secrets/S/versions/
latest:access` and the list with a `name:` filter, answered only with the metadata server's token.
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.parse
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROLE = "gpustack-rehearsal-node"


@dataclass
class Identity:
    access_key: str = "ASIAREHEARSAL0000001"
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    session_token: str = field(default_factory=lambda: secrets.token_hex(32))
    gcp_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    imds_tokens: set[str] = field(default_factory=set)
    gcp_secrets: dict[str, str] = field(default_factory=dict)  # "projects/P/secrets/S" -> value
    refused: int = 0  # requests without a session token (IMDSv1) or without Metadata-Flavor


def _handler(ident: Identity) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: str, ctype: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                token = secrets.token_urlsafe(16)
                ident.imds_tokens.add(token)
                return self._send(200, token)
            self._send(400, "bad request")

        def do_GET(self) -> None:
            client = self.client_address[0]
            if self.path.startswith("/latest/"):
                if self.headers.get("X-aws-ec2-metadata-token") not in ident.imds_tokens:
                    ident.refused += 1
                    return self._send(401, "")
                return self._aws(self.path[len("/latest/"):], client)
            if self.path.startswith("/v1/projects/"):
                if self.headers.get("Authorization") != f"Bearer {ident.gcp_token}":
                    ident.refused += 1
                    return self._send(401, "")
                return self._secret_manager(self.path[len("/v1/"):])
            if self.path.startswith("/computeMetadata/v1/"):
                if self.headers.get("Metadata-Flavor") != "Google":
                    ident.refused += 1
                    return self._send(403, "missing Metadata-Flavor")
                return self._gcp(self.path[len("/computeMetadata/v1/"):], client)
            self._send(404, "")

        def _aws(self, path: str, client: str) -> None:
            answers = {
                "meta-data/instance-id": "i-" + "".join(f"{int(o):02x}" for o in client.split(".")) + "0000",
                "meta-data/local-ipv4": client,
                "meta-data/placement/region": "us-east-1",
                "meta-data/placement/availability-zone": "us-east-1a",
                "meta-data/iam/security-credentials/": ROLE,
                f"meta-data/iam/security-credentials/{ROLE}": json.dumps({
                    "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": ident.access_key,
                    "SecretAccessKey": ident.secret_key, "Token": ident.session_token,
                    "Expiration": "2099-01-01T00:00:00Z", "LastUpdated": "2026-01-01T00:00:00Z"}),
            }
            if path in answers:
                return self._send(200, answers[path])
            self._send(404, "")

        def _gcp(self, path: str, client: str) -> None:
            answers = {
                "instance/name": "gce-" + client.replace(".", "-"),
                "instance/network-interfaces/0/ip": client,
                "instance/service-accounts/default/token": json.dumps(
                    {"access_token": ident.gcp_token, "expires_in": 3599, "token_type": "Bearer"}),
            }
            if path in answers:
                return self._send(200, answers[path], "application/json")
            self._send(404, "")

        def _secret_manager(self, path: str) -> None:
            name, _, query = path.partition("?")
            if name.endswith("/versions/latest:access"):
                secret = ident.gcp_secrets.get(name[: -len("/versions/latest:access")])
                if secret is None:
                    return self._send(404, "")
                data = base64.b64encode(secret.encode()).decode()
                return self._send(200, json.dumps({"name": name, "payload": {"data": data}}), "application/json")
            if name.endswith("/secrets"):
                wanted = urllib.parse.parse_qs(query).get("filter", ["name:"])[0].removeprefix("name:")
                listed = [{"name": n} for n in ident.gcp_secrets if n.startswith(name + "/")
                          and wanted in n.rsplit("/", 1)[-1]]
                return self._send(200, json.dumps({"secrets": listed}), "application/json")
            self._send(404, "")

    return Handler


class MetadataStub:
    def __init__(self, host: str) -> None:
        self.identity = Identity()
        self._server = ThreadingHTTPServer((host, 0), _handler(self.identity))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "MetadataStub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
