"""An agent's URL as this machine reaches it, for a provider's few calls.

Local agents are reached at their URL. SSH fleet agents bind 127.0.0.1 on their host, so a call
goes through an `ssh -N -L` forward held for the block (runtime/tunnels.py's command line: only
the host key verified at provisioning is trusted, nothing asks for input).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from gpustack_iac.runtime.tunnels import OPEN_TIMEOUT, HostTunnels, TunnelSpec


@contextlib.contextmanager
def agent_url(name: str, url: str, tunnel: dict[str, Any] | None) -> Iterator[str | None]:
    """The URL to call for the block; None when the forward does not open (the host is away)."""
    if not tunnel:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="gpustack-forward-") as tmp:
        tunnels = HostTunnels(TunnelSpec.from_json(name, tunnel), Path(tmp))
        forward = tunnels.forward(tunnels.spec.remote_port)
        proc = subprocess.Popen(forward.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + OPEN_TIMEOUT
            opened = False
            while not opened and time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", forward.local_port), timeout=1):
                    opened = True
                if not opened:
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{forward.local_port}" if opened and proc.poll() is None else None
        finally:
            proc.kill()
            proc.wait()
