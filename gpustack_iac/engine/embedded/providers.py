"""Dynamic providers, unpickled from the `__provider` input once per distinct pickle."""

from __future__ import annotations

import base64
import threading
from typing import Any

import dill
from pulumi.dynamic import Config, ConfigureRequest, ResourceProvider

from gpustack_iac.engine.embedded.diff import PROVIDER_KEY, unwrap
from gpustack_iac.engine.wire import UNKNOWN
from gpustack_iac.errors import EngineError

DYNAMIC_PREFIX = "pulumi-python:dynamic"


def is_dynamic(type_: str) -> bool:
    return type_.startswith(DYNAMIC_PREFIX)


class ProviderCache:
    """Deserialises each distinct provider pickle once, as Pulumi's dynamic provider host does."""

    def __init__(self, project: str) -> None:
        self._project = project
        self._cache: dict[str, ResourceProvider] = {}
        self._lock = threading.Lock()

    def get(self, urn: str, *bags: dict[str, Any]) -> ResourceProvider:
        """The provider pickled in the first bag that carries a known `__provider`."""
        pickled: str | None = None
        for bag in bags:
            value = unwrap(bag.get(PROVIDER_KEY)) if bag else None
            if isinstance(value, str) and value and value != UNKNOWN:
                pickled = value
                break
        if pickled is None:
            raise EngineError(f"{urn}: no dynamic provider in its inputs or state (`__provider` missing)")
        with self._lock:
            provider = self._cache.get(pickled)
            if provider is None:
                try:
                    provider = dill.loads(base64.b64decode(pickled))
                except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to a user
                    raise EngineError(
                        f"{urn}: cannot load its dynamic provider ({exc}); is the module that defines it importable?"
                    ) from exc
                if not isinstance(provider, ResourceProvider):
                    raise EngineError(f"{urn}: `__provider` is not a pulumi.dynamic.ResourceProvider")
                provider.configure(ConfigureRequest(Config(raw_config={}, project_name=self._project)))
                self._cache[pickled] = provider
            return provider
