"""Network-namespace "instances" for the boot rehearsal.

One bridge in the root namespace holds 198.19.<n>.1/24 (inside 198.18.0.0/15), where the test's
stand-ins listen (moto, the metadata stub); each instance is a namespace with 198.19.<n>.<10+i>
on a veth pair. A boot script runs in its instance through `nsenter --net=/run/netns/NAME` and
`unshare --mount`: a private mount namespace binds temporary directories over /opt,
/var/lib/gpustack's parent, /etc/systemd/system and /var/log, so the real paths the script writes
land in the test's temp dir, and `systemctl` is the rehearsal's unit runner (bin/systemctl,
unitrun.py), since systemd is not PID 1 here.

Teardown kills every process in each namespace by pid, then removes namespaces, bridge and files,
even after a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import netns

HERE = Path(__file__).resolve().parent
# The directories a boot script writes, each replaced by a private temp dir inside its instance.
PRIVATE = ("/opt", "/var/lib", "/etc/systemd/system", "/var/log")


def can_netns() -> bool:
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "nsenter", "unshare"))


@dataclass
class Instance:
    name: str
    netns: str
    address: str
    root: Path  # this instance's private /opt, /var/lib, ... live below it

    def path(self, inside: str) -> Path:
        """Where a path of the instance (e.g. /var/lib/gpustack/agent.token) is on this machine."""
        for private in sorted(PRIVATE, key=len, reverse=True):
            if inside == private or inside.startswith(private + "/"):
                return self.root / private.strip("/").replace("/", "_") / inside[len(private):].lstrip("/")
        raise ValueError(f"{inside} is not private to the instance")

    def boot(self, script: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a boot script as cloud-init would (root, its own file), to its end; `env` adds to
        cloud-init's environment (a stand-in's CA bundle)."""
        (self.root / "user-data").write_text(script)
        binds = " && ".join(f"mount --bind {self.root / p.strip('/').replace('/', '_')} {p}" for p in PRIVATE)
        python_dir = Path(os.path.realpath(sys._base_executable)).parent  # type: ignore[attr-defined]
        env = {"PATH": f"{HERE / 'bin'}:{python_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "GSR_PYTHON": sys.executable, "GSR_UNITRUN": str(HERE / "unitrun.py"), "LANG": "C.UTF-8", **(env or {})}
        inner = f"{binds} && exec bash {self.root / 'user-data'}"
        argv = ["nsenter", f"--net=/run/netns/{self.netns}", "--", "unshare", "--mount", "--propagation", "private",
                "--", "bash", "-c", inner]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    def pids(self) -> list[int]:
        return sorted(netns.namespace_pids(self.netns))

    def kill_all(self) -> None:
        # Units were detached (setsid) from a boot script that has exited: killed by pid, and a
        # zombie left for init to reap counts as gone.
        netns.kill_all(self.pids())


@dataclass
class Network:
    bridge: str
    prefix: str  # 198.19.<n>
    root: Path
    instances: list[Instance] = field(default_factory=list)

    @property
    def host_address(self) -> str:
        return f"{self.prefix}.1"

    def add(self, name: str) -> Instance:
        i = len(self.instances)
        name_ns, outer, inner = f"{self.bridge}-{name}", f"{self.bridge}o{i}", f"{self.bridge}i{i}"
        inst = Instance(name, name_ns, f"{self.prefix}.{10 + i}", self.root / name)
        for private in PRIVATE:
            (inst.root / private.strip("/").replace("/", "_")).mkdir(parents=True, exist_ok=True)
        self.instances.append(inst)
        netns.add_namespace(name_ns, self.bridge, outer, inner, inst.address)
        return inst

    def teardown(self) -> None:
        for inst in self.instances:
            inst.kill_all()
        netns.remove([i.netns for i in self.instances], self.bridge)
        shutil.rmtree(self.root, ignore_errors=True)


def create_network() -> Network:
    """The bridge; the caller must call `teardown()` (also after a failure here)."""
    bridge = f"gsr{os.getpid() % 100000:05d}"
    net = Network(bridge, netns.free_prefix("198.19"), Path(tempfile.mkdtemp(prefix=f"gsiac-rehearsal-{bridge}-")))
    net.root.chmod(0o755)  # workloads run unprivileged and read below it
    try:
        netns.add_bridge(bridge, net.prefix)
    except BaseException:
        net.teardown()
        raise
    return net
