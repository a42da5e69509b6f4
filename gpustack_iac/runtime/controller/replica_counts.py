"""How many replicas each group wants: its fixed count, or the autoscaler's decision fed with the gateway's load.

One autoscaler per service, built the first time a group has a replica range and reconfigured in
place when the ranges or scaling rules change, so the load history survives a re-registration.
"""

from __future__ import annotations


from gpustack_iac.runtime.autoscaler import ServiceAutoscaler
from gpustack_iac.runtime.controller.core import ControllerCore
from gpustack_iac.runtime.controller.live import ServiceState
from gpustack_iac.runtime.controller.model import effective_scaling
from gpustack_iac.runtime.scaling.config import GroupConfig, LoadSample


def desired_counts(core: ControllerCore, service: str, now: float) -> dict[str, int]:
    """Replicas wanted per group: the fixed count, or the autoscaler's decision for ranges."""
    st = core.services[service]
    groups = st.definition.groups
    if all(g.replicas.fixed for g in groups):
        return {g.name: g.replicas.min for g in groups}
    scaler = _autoscaler(core, st)
    load = core.load.get(service)
    scaler.observe(
        LoadSample(
            at=now,
            requests_total=load.requests_total if load else 0,
            in_flight=load.in_flight if load else 0,
            waiting=load.waiting if load else 0,
            ttfb_buckets=load.ttfb_buckets if load else (),
        )
    )
    ready = {g.name: 0 for g in groups}
    for r in core.replicas.values():
        if r.record.service == service and r.routable:
            ready[r.record.group] = ready.get(r.record.group, 0) + 1
    decided = scaler.decide(ready, st.no_capacity)
    out = {g.name: max(g.replicas.min, min(g.replicas.max, int(decided.get(g.name, g.replicas.min)))) for g in groups}
    if st.demand and sum(out.values()) == 0:
        # A request is held at the gateway: start one replica in the first group that can take it.
        for g in groups:
            if g.replicas.max > 0 and g.name not in st.no_capacity:
                out[g.name] = 1
                break
    return out


def _autoscaler(core: ControllerCore, st: ServiceState) -> ServiceAutoscaler:
    d = st.definition
    key = tuple((g.name, g.replicas, effective_scaling(d, g)) for g in d.groups) + (d.scaling,)
    if st.autoscaler is None or st.autoscaler_key != key:
        configs = [
            GroupConfig(name=g.name, min=g.replicas.min, max=g.replicas.max, scaling=g.scaling)
            for g in d.groups
        ]
        if st.autoscaler is None:
            st.autoscaler = ServiceAutoscaler(configs, d.scaling, clock=core.clock, tuning=core.settings.tuning)
        else:
            # Range or scaling changes apply in place, keeping the load history; no restart.
            st.autoscaler.reconfigure(configs, d.scaling)
        st.autoscaler_key = key
    return st.autoscaler

