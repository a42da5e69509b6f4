"""A service that keeps its data on a volume: every replica appends a line when it starts, and
GET / shows every line so far, so a replica started by a rolling update shows its predecessor's.

The volume's directory is found through its GPUSTACK_MOUNT_* variable (process mode), which works
whether or not the agent could create the link at the mount path.
"""

from __future__ import annotations

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(next(v for k, v in sorted(os.environ.items()) if k.startswith("GPUSTACK_MOUNT_")))
LOG = DATA / "notes.txt"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        body = {"version": os.environ.get("VERSION"), "replica": os.environ.get("GPUSTACK_REPLICA_ID"),
                "notes": LOG.read_text().splitlines() if LOG.exists() else []}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


if __name__ == "__main__":
    with open(LOG, "a") as f:
        f.write(f"version {os.environ.get('VERSION')} started at {time.time():.0f}\n")
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
