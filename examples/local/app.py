"""A tiny HTTP service for the local example (standard library only).

Listens on 127.0.0.1:$PORT and answers GET / and GET /health with JSON naming its replica group,
replica id and process id, so a caller can see which replica served it.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path not in ("/", "/health"):
            self._send(404, {"error": {"code": "not_found", "message": self.path}})
            return
        self._send(
            200,
            {
                "group": os.environ.get("GPUSTACK_GROUP"),
                "replica": os.environ.get("GPUSTACK_REPLICA_ID"),
                "pid": os.getpid(),
            },
        )

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        # Requests are logged (what `gpustack-iac logs` shows); the controller's probes, every few
        # seconds, would drown them: they say who they are in their User-Agent.
        if not (self.headers.get("User-Agent") or "").startswith("gpustack-iac-probe/"):
            print(f"{self.address_string()} {format % args}", flush=True)


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"hello: group {os.environ.get('GPUSTACK_GROUP')} replica {os.environ.get('GPUSTACK_REPLICA_ID')} "
          f"listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
