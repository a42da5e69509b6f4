"""A resource monitor living in this process, in the shape the Pulumi SDK calls (like MockMonitor).

The SDK calls these methods from its executor threads with protobuf requests; we turn each
request into a plain `Registration` and hand it to a `RegistrationHandler` (the deployment),
which decides the step, applies it when this is not a dry run, and returns the id and outputs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import engine_pb2, resource_pb2

from gpustack_iac.engine.wire import contains_unknown
from gpustack_iac.engine.embedded.urn import make_urn

log = logging.getLogger("gpustack_iac.engine.embedded")


@dataclass
class Registration:
    """One RegisterResource request, decoded."""

    urn: str
    type: str
    name: str
    custom: bool
    parent: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    protect: bool = False
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    provider: str = ""
    delete_before_replace: bool | None = None  # None: not set by the program
    ignore_changes: list[str] = field(default_factory=list)
    replace_on_changes: list[str] = field(default_factory=list)
    retain_on_delete: bool = False
    additional_secret_outputs: list[str] = field(default_factory=list)
    import_id: str = ""


class RegistrationHandler(Protocol):
    def register(self, reg: Registration) -> tuple[str, dict[str, Any]]:
        """Returns (id, outputs) for the SDK; an empty id or a missing output is unknown in a preview."""
        ...

    def register_outputs(self, urn: str, outputs: dict[str, Any]) -> None: ...


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer():
            return int(number)
        if math.isinf(number) or math.isnan(number):
            # As protobuf's own JSON conversion: such a number has no JSON form for the state.
            raise ValueError(f"a property value is {number}, which has no JSON representation")
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: _from_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_from_value(v) for v in value.list_value.values]
    return None  # null_value, or a Value with nothing set


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """The wire form as plain JSON values: secrets stay wrapped, unknowns stay the unknown sentinel.

    Whole numbers come back as ints (a Struct carries every number as a float). One walk over the
    message, rather than protobuf's generic JSON conversion followed by a second pass for numbers:
    the SDK sends one Struct per resource.
    """
    return {k: _from_value(v) for k, v in struct.fields.items()}


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    # An unknown value left out of the response is what makes the SDK resolve it as unknown.
    struct.update({k: v for k, v in value.items() if not contains_unknown(v)})
    return struct


class EmbeddedMonitor:
    """The `monitor` the SDK's Settings point to."""

    def __init__(self, project: str, stack: str, handler: RegistrationHandler) -> None:
        self.project = project
        self.stack = stack
        self.handler = handler

    def RegisterResource(self, request: Any) -> resource_pb2.RegisterResourceResponse:  # noqa: N802 (SDK's name)
        urn = make_urn(self.stack, self.project, request.type, request.name, request.parent)
        reg = Registration(
            urn=urn,
            type=request.type,
            name=request.name,
            custom=bool(request.custom),
            parent=request.parent,
            inputs=struct_to_dict(request.object),
            protect=bool(request.protect),
            dependencies=list(dict.fromkeys(request.dependencies)),
            property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
            provider=request.provider,
            delete_before_replace=bool(request.deleteBeforeReplace) if request.deleteBeforeReplaceDefined else None,
            ignore_changes=list(request.ignoreChanges),
            replace_on_changes=list(request.replaceOnChanges),
            retain_on_delete=bool(request.retainOnDelete),
            additional_secret_outputs=list(request.additionalSecretOutputs),
            import_id=request.importId,
        )
        id_, outputs = self.handler.register(reg)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=dict_to_struct(outputs))

    def RegisterResourceOutputs(self, request: Any) -> empty_pb2.Empty:  # noqa: N802
        self.handler.register_outputs(request.urn, struct_to_dict(request.outputs))
        return empty_pb2.Empty()

    def ReadResource(self, request: Any) -> Any:  # noqa: N802
        raise RuntimeError(
            f"{request.type} {request.name}: reading existing resources (`get`) is not supported by the embedded "
            "engine; use --engine pulumi"
        )

    def Invoke(self, request: Any) -> Any:  # noqa: N802
        raise RuntimeError(
            f"function {request.tok} needs its provider plugin, which the embedded engine does not run; "
            "use --engine pulumi"
        )

    def Call(self, request: Any) -> Any:  # noqa: N802
        raise RuntimeError(f"method {request.tok} is not supported by the embedded engine; use --engine pulumi")

    def SupportsFeature(self, request: Any) -> resource_pb2.SupportsFeatureResponse:  # noqa: N802
        return resource_pb2.SupportsFeatureResponse(hasSupport=request.id in ("secrets",))

    def GetDeploymentInfo(self, request: Any) -> resource_pb2.DeploymentInfo:  # noqa: N802
        # Only what we implement: options we cannot honour must fail loudly in the SDK, not vanish.
        return resource_pb2.DeploymentInfo(supportedFeatures=[resource_pb2.RESOURCE_MONITOR_FEATURE_SECRETS])

    def RegisterStackTransform(self, request: Any) -> empty_pb2.Empty:  # noqa: N802
        return empty_pb2.Empty()

    def RegisterStackInvokeTransform(self, request: Any) -> empty_pb2.Empty:  # noqa: N802
        return empty_pb2.Empty()

    def RegisterResourceHook(self, request: Any) -> empty_pb2.Empty:  # noqa: N802
        return empty_pb2.Empty()

    def RegisterErrorHook(self, request: Any) -> empty_pb2.Empty:  # noqa: N802
        return empty_pb2.Empty()

    def RegisterPackage(self, request: Any) -> Any:  # noqa: N802
        raise RuntimeError(f"package {request.name} needs its provider plugin; use --engine pulumi")

    def SignalAndWaitForShutdown(self, request: Any) -> empty_pb2.Empty:  # noqa: N802
        return empty_pb2.Empty()


class LogEngine:
    """The `engine` the SDK logs to: messages go to Python logging, warnings and errors are kept."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def Log(self, request: Any) -> empty_pb2.Empty:  # noqa: N802
        if request.severity == engine_pb2.ERROR:
            self.errors.append(request.message)
            log.error("%s", request.message)
        elif request.severity == engine_pb2.WARNING:
            self.warnings.append(request.message)
            log.warning("%s", request.message)
        elif request.severity == engine_pb2.INFO:
            log.info("%s", request.message)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s", request.message)
        return empty_pb2.Empty()


__all__ = ["EmbeddedMonitor", "LogEngine", "Registration", "RegistrationHandler"]
