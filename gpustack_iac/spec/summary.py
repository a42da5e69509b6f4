"""One-line summaries of documents, for `validate`'s table (and later the plan header)."""

from __future__ import annotations

from dataclasses import dataclass

from gpustack_iac.spec.models import (
    DevEnvironmentConfig,
    Document,
    FleetConfig,
    GatewayConfig,
    ProjectConfig,
    RouterConfig,
    ScalingSpec,
    ServiceConfig,
    TaskConfig,
    VolumeConfig,
)


@dataclass(frozen=True)
class Row:
    kind: str
    name: str
    details: list[str]  # one line per group / member / property worth reading
    file: str


def _placement(backends: list[str] | None, regions: list[str] | None) -> str:
    parts = []
    if backends:
        parts.append("backends=" + ",".join(backends))
    if regions:
        parts.append("regions=" + ",".join(regions))
    return (" " + " ".join(parts)) if parts else ""


def _scaling(s: ScalingSpec) -> str:
    """One line of a group's scaling rules, saying where the burst path overrides scale_up_delay."""
    unit = " ms p90 TTFB" if s.metric == "latency" else ""
    text = f"{s.metric} target {s.target:g}{unit}, window {s.window or 60}s, up after {s.scale_up_delay}s"
    if s.metric == "rps" and s.burst is not False:
        text += " (a burst scales up at once, overriding it)"
    text += f", down after {s.scale_down_delay}s"
    if s.schedule:
        text += ", schedule " + "; ".join(f"{e.cron} → min {e.min}" for e in s.schedule)
    return text


def summarize(doc: Document) -> Row:
    name = str(getattr(doc, "name", "") or "")
    file = doc.source.file if doc.source else ""
    details: list[str]
    if isinstance(doc, ServiceConfig):
        details = []
        for g in doc.groups:
            assert g.resources is not None
            scaled = " autoscaled" if not g.replicas.fixed else ""
            details.append(f"{g.name} ×{g.replicas} ({g.resources.describe()}){scaled}{_placement(g.backends, g.regions)}")
            if not g.replicas.fixed and g.scaling is not None:
                details.append(f"{g.name} scaling: {_scaling(g.scaling)}")
        if doc.model is not None:
            details.append(f"model {doc.model.name}")
    elif isinstance(doc, FleetConfig):
        if doc.ssh_config is not None:
            hosts = ", ".join(h.hostname for h in doc.ssh_config.hosts)
            details = [f"ssh hosts: {hosts}"]
        else:
            details = [f"nodes ×{doc.nodes} ({doc.resources.describe()}){_placement(doc.backends, doc.regions)}"]
        if doc.placement == "cluster":
            details.append("placement cluster")
    elif isinstance(doc, GatewayConfig):
        where = doc.backend + (f" ({doc.region})" if doc.region else "")
        details = [where + (f" domain={doc.domain}" if doc.domain else "") + (" default" if doc.default else "")]
    elif isinstance(doc, RouterConfig):
        members = ", ".join(m.service for m in doc.members)
        details = [f"model {doc.model} → {members}", f"strategy {doc.strategy}"]
    elif isinstance(doc, TaskConfig):
        details = [f"nodes ×{doc.nodes} ({doc.resources.describe()})"]
        if doc.schedule is not None:
            details.append(f"schedule {' | '.join(doc.schedule.cron)} (UTC)")
    elif isinstance(doc, DevEnvironmentConfig):
        details = [f"{doc.ide or 'ssh'} ({doc.resources.describe()})"]
    elif isinstance(doc, VolumeConfig):
        details = [f"{doc.backend}" + (f" ({doc.region})" if doc.region else "") + (f" size={doc.size}" if doc.size else f" id={doc.volume_id}")]
    elif isinstance(doc, ProjectConfig):
        details = [f"state {doc.state}", f"secrets {doc.secrets_provider}"]
    else:  # pragma: no cover - every kind is listed above
        details = []
    return Row(doc.KIND, name, details, file)
