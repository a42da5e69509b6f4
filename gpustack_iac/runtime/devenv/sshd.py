"""The sshd of one dev environment: its host key, authorized keys and configuration, in one directory."""

from __future__ import annotations

import getpass
import os
import subprocess
from pathlib import Path
from typing import Mapping

SSHD = "/usr/sbin/sshd"


def host_key(directory: Path) -> str:
    """The public host key, generating the pair on first use (kept across restarts: known_hosts stays valid)."""
    key = directory / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpustack-devenv", "-f", str(key)],
                       check=True, stdin=subprocess.DEVNULL)
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(directory: Path, port: int, listen: str, authorized_keys: str, env: Mapping[str, str]) -> Path:
    auth = directory / "authorized_keys"
    auth.write_text(authorized_keys.strip() + "\n")
    os.chmod(auth, 0o600)
    lines = [
        f"Port {port}",
        f"ListenAddress {listen}",
        f"HostKey {directory / 'ssh_host_ed25519_key'}",
        f"AuthorizedKeysFile {auth}",
        f"PidFile {directory / 'sshd.pid'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {getpass.getuser()}",
        "UsePAM no",
        # The key files live in the stack's directory, not in a home directory sshd would check.
        "StrictModes no",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",
    ]
    if env:
        # Sessions see the run's environment (its env, volume paths), as the IDE's terminal should.
        lines.append("SetEnv " + " ".join(f"{k}={_quote(v)}" for k, v in sorted(env.items())))
    config = directory / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    return config
