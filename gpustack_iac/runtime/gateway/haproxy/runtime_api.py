"""HAProxy's Runtime API on the admin socket: one command per connection, text answers."""

from __future__ import annotations

import csv
import io
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from gpustack_iac.errors import GpustackError

ServerState = Literal["ready", "drain", "maint"]


class RuntimeApiError(GpustackError):
    """HAProxy refused a command or its socket did not answer."""


@dataclass(frozen=True)
class ServerStat:
    """One server row of `show stat`: cumulative and current counters."""

    backend: str
    server: str
    sessions_total: int  # stot: connections (requests, with http-reuse) sent to it
    requests_total: int  # hrsp_* summed: HTTP answers relayed
    in_flight: int  # scur
    queued: int  # qcur
    errors_5xx: int  # 5xx answers, failed connects (econ), failed or cut responses (eresp, srv_abrt)


@dataclass(frozen=True)
class RuntimeApi:
    socket_path: Path
    timeout: float = 5.0

    def command(self, line: str) -> str:
        if "\n" in line or ";" in line:
            raise RuntimeApiError(f"refusing a Runtime API command with a separator: {line!r}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.socket_path))
                s.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise RuntimeApiError(f"HAProxy admin socket {self.socket_path}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def checked(self, line: str) -> None:
        """A command whose answer is empty on success (set server ...), else HAProxy's reason."""
        answer = self.command(line).strip()
        if answer and not answer.startswith("IP changed from") and "no need to change" not in answer:
            raise RuntimeApiError(f"HAProxy refused {line.split(' ')[0:3]}: {answer}")

    def set_server(self, backend: str, server: str, address: str | None, state: ServerState) -> None:
        if address is not None:
            host, _, port = address.rpartition(":")
            self.checked(f"set server {backend}/{server} addr {host.strip('[]')} port {port}")
        self.checked(f"set server {backend}/{server} state {state}")

    def info(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.command("show info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    def server_stats(self) -> list[ServerStat]:
        text = self.command("show stat -1 6 -1")  # backend and server rows
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        out = []
        for row in rows:
            num = _counter(row)
            answers = sum(num(f"hrsp_{k}") for k in ("1xx", "2xx", "3xx", "4xx", "5xx", "other"))
            failed = num("hrsp_5xx") + num("srv_abrt") + (num("econ") + num("eresp") + num("wretr") + num("wredis") if row["svname"] != "BACKEND" else 0)
            out.append(ServerStat(row["pxname"], row["svname"], num("stot"), answers, num("scur"), num("qcur"), failed))
        return out


def _counter(row: dict[str, str]) -> Callable[[str], int]:
    """Reads a `show stat` field as an integer (empty fields are 0)."""
    return lambda key: int(row.get(key) or 0)
