"""Every backend this version knows, by name: one object each (see base.py for the capabilities)."""

from __future__ import annotations

from gpustack_iac.backends.aws import Aws
from gpustack_iac.backends.azure import Azure
from gpustack_iac.backends.base import Backend, NotImplementedBackend, WithPulumiPlugin
from gpustack_iac.backends.gcp import Gcp
from gpustack_iac.backends.host import Local, Ssh
from gpustack_iac.backends.kubernetes import Kubernetes
from gpustack_iac.errors import GpustackError
from gpustack_iac.spec.values import BACKENDS as KNOWN_NAMES

_IMPLEMENTED: tuple[Backend, ...] = (Local(), Ssh(), Aws(), Gcp(), Azure(), Kubernetes())
REGISTRY: dict[str, Backend] = {b.name: b for b in _IMPLEMENTED}
for _name in KNOWN_NAMES:
    REGISTRY.setdefault(_name, NotImplementedBackend(_name))


def get(name: str) -> Backend:
    """The backend called `name`; a name outside dstack's list (a typo the schema let through, or a
    combination such as "aws,gcp") is a backend that deploys nothing, so plan refuses it by name."""
    return REGISTRY.get(name) or NotImplementedBackend(name)


def implemented() -> tuple[Backend, ...]:
    return _IMPLEMENTED


def plugin(name: str) -> WithPulumiPlugin:
    """The backend called `name` when its resources come from a Pulumi provider SDK."""
    backend = get(name)
    if not isinstance(backend, WithPulumiPlugin):
        raise GpustackError(f"backend {name} declares no provider-plugin resources")
    return backend
