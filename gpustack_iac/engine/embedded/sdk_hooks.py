"""The one module that touches private parts of the Pulumi SDK, and only on SDK versions verified.

`SUPPORTED` is the range of SDK minors the test suite was run on (pyproject.toml states the same
range). On a version outside it, or when a private name is gone, nothing here patches or reads the
SDK's internals: the embedded engine then runs on the public API alone, correct and slower on large
stacks. Two uses:

1. the registrations in flight (`registrations_in_flight`), which the runner waits for at once
   rather than through the SDK's quadratic wait over every output;
2. shortcuts: skip SDK work whose only consumer is the Pulumi CLI, while (and only while) our
   monitor runs a program.

The Pulumi SDK does some per-resource work that our in-process monitor never reads:
- it walks the Python stack of every resource for the CLI's diagnostics (`_get_stack_trace`);
- it computes a "mock" URN for every registration (`create_urn` awaited in `register_resource`),
  which only a monitor-less test run uses: we compute the URN ourselves;
- it builds a protobuf log request for each of several debug messages per resource, which our
  `LogEngine` drops unless debug logging is on;
- its `contains_unknowns`, called about ten times per resource, defines a recursive closure on every
  call: each call leaves a reference cycle (function, cell, annotations) for the cyclic collector,
  which is more than a third of the garbage a preview leaves. Ours walks the same way without one.
Together that is about a quarter of a large preview. The replacements are installed once into the SDK's
modules and consult a context variable: outside a run of ours (or in a context that did not inherit
it), every call goes to the SDK's original unchanged, so nothing else in the process is affected and
concurrent runs cannot undo each other's patches.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from pulumi import log as pulumi_log
from pulumi.output import Output
from pulumi.runtime import known_types
from pulumi.runtime import resource as pulumi_resource
from pulumi.runtime import rpc as pulumi_rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.proto import source_pb2

# The SDK minors (3.x) whose private parts below were verified by the test suite; keep in step
# with the pulumi requirement in pyproject.toml.
SUPPORTED = (270, 272)
# The private names used, (module, attribute).
_PRIVATE = ((pulumi_resource, "_get_stack_trace"), (pulumi_resource, "create_urn"), (pulumi_log, "debug"),
            (pulumi_rpc, "contains_unknowns"), (pulumi_settings, "_get_rpc_manager"))

# Set on the functions we install, so a second install does not wrap them again.
_MARK = "_gpustack_shortcut"


def sdk_version() -> tuple[int, ...]:
    return tuple(int(p) for p in version("pulumi").split(".")[:3] if p.isdigit())


def supported(sdk: tuple[int, ...] | None = None) -> bool:
    """Whether the private parts may be used: a verified SDK version that still has them all."""
    major, minor = (sdk or sdk_version())[:2]
    return major == 3 and SUPPORTED[0] <= minor <= SUPPORTED[1] and all(hasattr(m, a) for m, a in _PRIVATE)


def registrations_in_flight() -> Collection[Any] | None:
    """The SDK's own list of resource registrations in flight (futures), or None off the supported range."""
    if not supported():
        return None
    rpcs: Collection[Any] = pulumi_settings._get_rpc_manager().rpcs
    return rpcs


@dataclass(frozen=True)
class _Shortcuts:
    drop_debug: bool


_ACTIVE: contextvars.ContextVar[_Shortcuts | None] = contextvars.ContextVar("gpustack_sdk_shortcuts", default=None)


def _wrap_stack_trace(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_stack_trace(*args: Any, **kwargs: Any) -> Any:
        if _ACTIVE.get() is None:
            return original(*args, **kwargs)
        return source_pb2.StackTrace()

    return get_stack_trace


def _wrap_create_urn(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_urn(
        name: Any, type_: Any, parent: Any = None, project: str | None = None, stack: str | None = None
    ) -> Any:
        # Only the all-plain-strings form that registration uses; Outputs and Resources (aliases) go
        # through the SDK. The result is the same known, non-secret, dependency-free Output.
        if (
            _ACTIVE.get() is None
            or not isinstance(name, str)
            or not isinstance(type_, str)
            or not (parent is None or isinstance(parent, str))
        ):
            return original(name, type_, parent, project, stack)
        if parent is not None:
            prefix = parent[0 : parent.rfind("::")] + "$"
        else:
            stack = pulumi_settings.get_stack() if stack is None else stack
            project = pulumi_settings.get_project() if project is None else project
            prefix = "urn:pulumi:" + stack + "::" + project + "::"
        return Output.from_input(prefix + type_ + "::" + name)

    return create_urn


def _wrap_debug(original: Callable[..., Any]) -> Callable[..., Any]:
    def debug(msg: str, resource: Any = None, stream_id: int | None = None, ephemeral: bool | None = None) -> None:
        active = _ACTIVE.get()
        if active is not None and active.drop_debug:
            return
        original(msg, resource, stream_id, ephemeral)

    return debug


def _has_unknowns(val: Any, seen_ids: set[int]) -> bool:
    # The SDK's rpc.contains_unknowns, step for step, as a module-level function.
    if known_types.is_unknown(val):
        return True
    val_id = id(val)
    if val_id in seen_ids:
        return False
    seen_ids.add(val_id)
    if isinstance(val, dict):
        return any(_has_unknowns(val[k], seen_ids) for k in val)
    if isinstance(val, list):
        return any(_has_unknowns(x, seen_ids) for x in val)
    return False


def _wrap_contains_unknowns(original: Callable[..., Any]) -> Callable[..., Any]:
    def contains_unknowns(val: Any) -> bool:
        if _ACTIVE.get() is None:
            return bool(original(val))
        return _has_unknowns(val, set())

    return contains_unknowns


def _install(module: Any, attr: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    current = getattr(module, attr)
    if getattr(current, _MARK, False):
        return
    replacement = wrap(current)
    setattr(replacement, _MARK, True)
    setattr(module, attr, replacement)


def install() -> None:
    """Idempotent; the replacements behave exactly like the originals outside `active()`. Nothing is
    installed off the supported range."""
    if not supported():
        return
    _install(pulumi_resource, "_get_stack_trace", _wrap_stack_trace)
    _install(pulumi_resource, "create_urn", _wrap_create_urn)
    _install(pulumi_log, "debug", _wrap_debug)
    _install(pulumi_rpc, "contains_unknowns", _wrap_contains_unknowns)


@contextlib.contextmanager
def active(debug_logger: logging.Logger) -> Iterator[None]:
    """Take the shortcuts in this context (and the tasks and threads that inherit it)."""
    install()
    token = _ACTIVE.set(_Shortcuts(drop_debug=not debug_logger.isEnabledFor(logging.DEBUG)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


__all__ = ["active", "install"]
