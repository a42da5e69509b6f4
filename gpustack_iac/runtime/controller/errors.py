"""Lookup failures of the control API: the service, agent or router named is not registered.

Raised by the controller's registration and log calls; the control API answers them with 404.
"""

from __future__ import annotations

from gpustack_iac.errors import RuntimeApiError


class UnknownServiceError(RuntimeApiError):
    """The control API was asked about a service that is not registered."""


class UnknownAgentError(RuntimeApiError):
    """The control API was asked about an agent that is not registered."""


class UnknownRouterError(RuntimeApiError):
    """The control API was asked about a router that is not registered."""
