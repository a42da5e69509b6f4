"""A small instance-metadata stand-in for the boot rehearsal: AWS's IMDSv2 (token first, then
role credentials, instance id, private address), GCP's metadata server (Metadata-Flavor header,
service-account token, instance name, address) and Azure's IMDS (`Metadata: true`, managed-identity
tokens per resource for the identity's client id, VM name, private address). The instance is told
apart by its source address.

It also stands in for the secret stores no emulator exists for: GCP's Secret Manager
(`/v1/projects/P/secrets/S/versions/latest:access` and the list with a `name:` filter, answered only
with the metadata server's token) and Azure Key Vault (`/keyvault/VAULT/secrets/NAME`, answered only
with a token IMDS issued for https://vault.azure.net).

Azure tokens are JWT-shaped (audience, issuer, lifetime; an unchecked signature), as Azurite's
`--oauth basic` reads them.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.parse
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROLE = "gpustack-rehearsal-node"
TENANT = "00000000-0000-0000-0000-0000000000aa"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def azure_token(resource: str) -> str:
    """A managed-identity access token's shape: header, claims, signature (not checked by Azurite)."""
    now = int(time.time())
    claims = {"aud": resource, "iss": f"https://sts.windows.net/{TENANT}/", "iat": now - 60, "nbf": now - 60,
              "exp": now + 3600, "oid": secrets.token_hex(8)}
    return ".".join([_b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()), _b64url(json.dumps(claims).encode()),
                     _b64url(secrets.token_bytes(32))])


@dataclass
class Identity:
    access_key: str = "ASIAREHEARSAL0000001"
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    session_token: str = field(default_factory=lambda: secrets.token_hex(32))
    gcp_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    imds_tokens: set[str] = field(default_factory=set)
    gcp_secrets: dict[str, str] = field(default_factory=dict)  # "projects/P/secrets/S" -> value
    azure_client_id: str = "rehearsal-client-id"  # the user-assigned identity IMDS answers for
    azure_secrets: dict[str, str] = field(default_factory=dict)  # "VAULT/NAME" -> value
    azure_tokens: dict[str, str] = field(default_factory=dict)  # issued token -> its resource
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
            if self.path.startswith("/metadata/"):
                if self.headers.get("Metadata") != "true":
                    ident.refused += 1
                    return self._send(400, "missing Metadata: true")
                return self._azure(self.path, client)
            if self.path.startswith("/keyvault/"):
                bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if ident.azure_tokens.get(bearer) != "https://vault.azure.net":
                    ident.refused += 1
                    return self._send(401, "")
                return self._key_vault(self.path[len("/keyvault/"):])
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

        def _azure(self, path: str, client: str) -> None:
            name, _, query = path.partition("?")
            args = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
            if name == "/metadata/identity/oauth2/token":
                if args.get("client_id") != ident.azure_client_id or not args.get("resource"):
                    return self._send(400, json.dumps({"error": "invalid_request"}), "application/json")
                token = azure_token(args["resource"])
                ident.azure_tokens[token] = args["resource"].rstrip("/")
                return self._send(200, json.dumps({"access_token": token, "token_type": "Bearer",
                                                   "resource": args["resource"], "expires_in": "3599"}), "application/json")
            answers = {"/metadata/instance/compute/name": "vm-" + client.replace(".", "-"),
                       "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress": client}
            if name in answers and args.get("format") == "text":
                return self._send(200, answers[name])
            self._send(404, "")

        def _key_vault(self, path: str) -> None:
            name, _, query = path.partition("?")
            vault, _, rest = name.partition("/secrets/")
            value = ident.azure_secrets.get(f"{vault}/{urllib.parse.unquote(rest)}")
            if value is None or "api-version=" not in query:
                return self._send(404, "")
            self._send(200, json.dumps({"value": value, "id": f"https://{vault}.vault.azure.net/secrets/{rest}"}),
                       "application/json")

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
