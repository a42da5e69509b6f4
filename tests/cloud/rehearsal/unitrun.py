"""Runs one systemd service unit as systemd would, for the boot rehearsal (systemd is not PID 1 here).

What it honours of [Service], the only keys the boot scripts write: EnvironmentFile=, Environment=
(a clean environment otherwise, as systemd gives), ExecStart= (quoted words, `${NAME}` expanded from
that environment, `%%` for `%`), Restart=always with RestartSec=. Anything else in the unit fails
the run, so the rehearsal never passes over a unit line it does not understand.

    python unitrun.py /etc/systemd/system/NAME.service
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

KNOWN = {"Type", "EnvironmentFile", "Environment", "ExecStart", "Restart", "RestartSec"}
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def parse(path: Path) -> dict[str, list[str]]:
    section, service = "", {}  # type: ignore[var-annotated]
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]":
            if key not in KNOWN:
                raise SystemExit(f"unitrun: {path}: [Service] {key}= is not rehearsed")
            service.setdefault(key, []).append(value)
    return service


def environment(service: dict[str, list[str]]) -> dict[str, str]:
    env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8"}
    for f in service.get("EnvironmentFile", []):
        for line in Path(f).read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, _, v = line.partition("=")
                env[k.strip()] = v.strip()
    for value in service.get("Environment", []):
        for word in shlex.split(value):
            k, _, v = word.partition("=")
            env[k] = v
    return env


def main() -> None:
    service = parse(Path(sys.argv[1]))
    always = service.get("Restart", ["no"])[0] == "always"
    delay = float(service.get("RestartSec", ["0.1"])[0])
    child: subprocess.Popen[bytes] | None = None

    def stop(*_: object) -> None:
        if child is not None and child.poll() is None:
            child.terminate()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        env = environment(service)  # read at every start, as systemd does
        argv = [re.sub(r"\$\{(\w+)\}", lambda m, env=env: env.get(m.group(1), ""), w).replace("%%", "%")
                for w in shlex.split(service["ExecStart"][0])]
        child = subprocess.Popen(argv, env=env, cwd="/")
        code = child.wait()
        print(f"unitrun: {argv[0]} exited with {code}", flush=True)
        if not always:
            raise SystemExit(code)
        time.sleep(delay)


if __name__ == "__main__":
    main()
