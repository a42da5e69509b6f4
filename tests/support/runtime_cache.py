"""A cloud runtime cache for tests that plan cloud stacks: small stand-in wheelhouses under every key
compile asks for (Python 3.12 on x86_64 and aarch64, node and gateway sets), so planning an
example never downloads the real wheels. The boot rehearsal builds and installs real ones."""

from __future__ import annotations

from pathlib import Path

from gpustack_iac.providers import runtime_bundle, wheelhouse

WHEELS = ("gpustack_iac-0.0.0-py3-none-any.whl", "installer-0.7.0-py3-none-any.whl")


def seed(cache: Path) -> Path:
    extras = {()} | {tuple(sdks) for sdks in runtime_bundle.GATEWAY_SDKS.values()}
    for machine in runtime_bundle.MACHINES.values():
        for gateway, extra in [(False, ())] + [(True, e) for e in sorted(extras)]:
            key = wheelhouse.wheelhouse_key(runtime_bundle.IMAGE_PYTHON, machine, gateway, extra)
            target = cache / key
            target.mkdir(parents=True, exist_ok=True)
            for name in WHEELS:
                (target / name).write_bytes(f"stand-in {name} for {key}".encode())
            (target / ".complete").write_text(key)
    return cache
