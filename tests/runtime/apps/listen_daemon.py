"""A minimal daemon for watchdog tests: serves `GET /` with its pid on the socket the watchdog passes
down (or binds --port), writes {"port", "pid"} to --port-file once listening, and writes its own
environment to --env-file so a test can check what it inherited."""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import sys
from pathlib import Path

from gpustack_iac.runtime.listenfds import inherited_socket
from gpustack_iac.runtime.procs import write_port_file


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--env-file", type=Path)
    args = parser.parse_args()
    sock = inherited_socket("port")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler, bind_and_activate=sock is None)
    if sock is not None:
        server.socket.close()
        server.socket = sock
    if args.env_file:
        args.env_file.write_text(json.dumps(dict(os.environ)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    write_port_file(args.port_file, {"port": server.server_address[1] if sock is None else sock.getsockname()[1],
                                     "pid": os.getpid()})
    server.serve_forever()


if __name__ == "__main__":
    main()
