"""Echo replica for tests (stdlib only): answers every request with JSON describing itself.

GET /health -> 200 {"ok": true}. Any other path -> 200 {"replica", "service", "group", "pid",
"port", "method", "path", "body", "authorization"}; `?delay=S` waits S seconds first, `?status=N`
answers with status N. Listens on 127.0.0.1:$PORT.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PORT = int(os.environ.get("PORT", "0"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
        if url.path == "/health":
            payload: dict[str, object] = {"ok": True}
            status = 200
        elif url.path == "/exists":
            # 200 once the file named by ?path= exists: a probe a test turns green.
            payload = {"path": query.get("path", [""])[0]}
            status = 200 if os.path.exists(str(payload["path"])) else 503
        else:
            delay = float(query.get("delay", ["0"])[0])
            if delay > 0:
                time.sleep(min(delay, 60.0))
            status = int(query.get("status", ["200"])[0])
            payload = {
                "replica": os.environ.get("GPUSTACK_REPLICA_ID"),
                "service": os.environ.get("GPUSTACK_SERVICE"),
                "group": os.environ.get("GPUSTACK_GROUP"),
                "pid": os.getpid(),
                "port": PORT,
                "method": self.command,
                "path": self.path,
                "body": body,
                "authorization": self.headers.get("Authorization"),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "greeting": os.environ.get("GREETING"),
            }
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("echo %s\n" % (format % args))


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    # SIGTERM ends the process through normal interpreter exit, so the log gets flushed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"echo listening on 127.0.0.1:{server.server_address[1]} pid {os.getpid()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
