"""A strict stand-in for Cloud Storage's generation preconditions, in front of gcp-storage-emulator.

gcp-storage-emulator stores objects and numbers their generations, but ignores `ifGenerationMatch`
and `ifGenerationNotMatch` (checked by tests/engine/test_gcs_preconditions.py): every conditional
upload or delete succeeds. The lock in a `gs://` store is built on exactly those preconditions, so
this proxy enforces them as Cloud Storage documents ("Request preconditions"): the request goes on
only when the object's live generation matches (`ifGenerationMatch`, where 0 means "no live
object") or differs (`ifGenerationNotMatch`); otherwise the answer is 412 Precondition Failed with
reason `conditionNotMet` (a read whose `ifGenerationNotMatch` fails: 304 Not Modified). The check
and the forwarded request happen under one lock, so, as in Cloud Storage, of two racing creates
exactly one wins. Everything else passes through to the emulator unchanged.

The proxy runs in the test process (a thread) on a loopback port of its own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
_CONDITION_FAILED = {
    "error": {
        "code": 412,
        "message": "At least one of the pre-conditions you specified did not hold.",
        "errors": [{"message": "At least one of the pre-conditions you specified did not hold.",
                    "domain": "global", "reason": "conditionNotMet", "locationType": "header",
                    "location": "If-Match"}],
    }
}


@dataclass(frozen=True)
class Target:
    """The object a request names (bucket, object name), when it names one."""

    bucket: str
    name: str


def request_target(method: str, path: str, query: dict[str, list[str]], body: bytes,
                   content_type: str) -> Target | None:
    """The object of a JSON-API request: from the path (metadata, download, delete, patch) or, for
    uploads, from `name=` or the metadata part of a multipart body / the resumable start's JSON."""
    parts = path.split("/")
    # /storage/v1/b/{bucket}/o/{object}  and  /download/storage/v1/b/{bucket}/o/{object}
    for base in (["", "storage", "v1", "b"], ["", "download", "storage", "v1", "b"]):
        n = len(base)
        if parts[:n] == base and len(parts) > n + 2 and parts[n + 1] == "o":
            return Target(unquote(parts[n]), unquote("/".join(parts[n + 2:])))
    if parts[:5] == ["", "upload", "storage", "v1", "b"] and len(parts) == 7 and parts[6] == "o":
        bucket = unquote(parts[5])
        if "name" in query:
            return Target(bucket, query["name"][-1])
        upload_type = query.get("uploadType", [""])[-1]
        if upload_type == "multipart":
            return Target(bucket, str(_multipart_metadata(body, content_type).get("name", "")))
        if upload_type == "resumable" and body:
            return Target(bucket, str(json.loads(body).get("name", "")))
    return None


def _multipart_metadata(body: bytes, content_type: str) -> dict[str, object]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():  # type: ignore[attr-defined]
        if part.get_content_type() == "application/json":
            return dict(json.loads(part.get_payload(decode=True)))
    return {}


def precondition_status(method: str, query: dict[str, list[str]], live: int) -> int | None:
    """None when the request may go on; else the status Cloud Storage answers. `live`: the live
    generation, 0 when there is no live object."""
    match = query.get("ifGenerationMatch")
    if match is not None and int(match[-1]) != live:
        return 412
    not_match = query.get("ifGenerationNotMatch")
    if not_match is not None and int(not_match[-1]) == live:
        return 304 if method in ("GET", "HEAD") else 412
    return None


class StrictGcsProxy:
    """The proxy: `port` is where clients (STORAGE_EMULATOR_HOST) connect; `upstream` the emulator's port."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.checked = 0  # conditional requests evaluated (a test can see the proxy was on the path)
        self.refused = 0
        self._serial = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="strict-gcs", daemon=True)

    def _upstream(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=60)

    def live_generation(self, target: Target) -> int:
        conn = self._upstream()
        try:
            conn.request("GET", f"/storage/v1/b/{quote(target.bucket, safe='')}/o/{quote(target.name, safe='')}")
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status == 404:
            return 0
        if response.status != 200:
            raise RuntimeError(f"gcp-storage-emulator answered {response.status} reading {target}: {data[:200]!r}")
        return int(json.loads(data)["generation"])

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        split = urlsplit(request.path)
        query = parse_qs(split.query)
        conditional = "ifGenerationMatch" in query or "ifGenerationNotMatch" in query
        # Every write, and every conditional request, is serialised: a check and the write it guards
        # are one step, as in Cloud Storage.
        guard = self._serial if conditional or request.command != "GET" else contextlib.nullcontext()
        with guard:
            if conditional:
                target = request_target(request.command, split.path, query, body,
                                        request.headers.get("Content-Type", ""))
                if target is not None and target.name:
                    self.checked += 1
                    status = precondition_status(request.command, query, self.live_generation(target))
                    if status is not None:
                        self.refused += 1
                        self._reply(request, status, {"Content-Type": "application/json"},
                                    b"" if status == 304 else json.dumps(_CONDITION_FAILED).encode())
                        return
            self._forward(request, body)

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        conn = self._upstream()
        try:
            conn.request(request.command, request.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            out = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
        finally:
            conn.close()
        if "Location" in out:  # a resumable upload's session URL: keep the client on this proxy
            out["Location"] = out["Location"].replace(f"127.0.0.1:{self.upstream}", f"127.0.0.1:{self.port}")
        self._reply(request, response.status, out, data)

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)

    def __enter__(self) -> StrictGcsProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=30)


@contextlib.contextmanager
def strict_gcs(upstream: int) -> Iterator[StrictGcsProxy]:
    with StrictGcsProxy(upstream) as proxy:
        yield proxy
