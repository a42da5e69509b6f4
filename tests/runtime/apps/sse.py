"""Server-sent-events replica for tests (stdlib only).

GET /health -> 200. GET /stream?n=N&interval=S (or POST /v1/chat/completions with
{"stream": true}) -> text/event-stream, one `data: {"i": k, "t": <unix time>}` event every S
seconds (default 20 events, 0.05 s), then `data: [DONE]`. When the client disconnects early the
server appends a line `cancelled <i>` to the file named by $SSE_CANCEL_FILE (if set), so a test
can prove the upstream stream was cancelled.
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

    def _health(self) -> None:
        data = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, count: int, interval: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        i = 0
        try:
            for i in range(count):
                self._chunk(f"data: {json.dumps({'i': i, 't': time.time()})}\n\n".encode())
                time.sleep(interval)
            self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            cancel_file = os.environ.get("SSE_CANCEL_FILE")
            if cancel_file:
                with open(cancel_file, "a") as f:
                    f.write(f"cancelled {i}\n")
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            self._health()
            return
        query = parse_qs(url.query)
        self._stream(int(query.get("n", ["20"])[0]), float(query.get("interval", ["0.05"])[0]))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        self._stream(int(body.get("n", 20)), float(body.get("interval", 0.05)))

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("sse %s\n" % (format % args))


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"sse listening on 127.0.0.1:{server.server_address[1]} pid {os.getpid()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
