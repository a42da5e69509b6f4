"""`offers`: which instance types fit a resource spec, with $/h, from the shipped catalog (like `dstack offer`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from gpustack_iac.backends import get
from gpustack_iac.catalog.match import Offer, SpotPolicy, find_offers
from gpustack_iac.catalog.snapshot import load
from gpustack_iac.errors import ConfigError, Diagnostic
from gpustack_iac.spec.resources import ResourcesSpec


def _requests(paths: tuple[Path, ...]) -> list[tuple[str, ResourcesSpec | None, dict[str, Any]]]:
    """(label, resources, placement) for every fleet and service replica group in PATHS."""
    from gpustack_iac.spec.loader import load_paths

    spec = load_paths(list(paths), os.environ)
    out: list[tuple[str, ResourcesSpec | None, dict[str, Any]]] = []
    for fleet in spec.fleets:
        if not fleet.is_ssh:
            out.append((f"fleet {fleet.name}", fleet.resources, {"backends": fleet.backends, "regions": fleet.regions,
                        "instance_types": fleet.instance_types, "spot_policy": fleet.spot_policy, "max_price": fleet.max_price}))
    for service in spec.services:
        for group in service.groups:
            out.append((f"service {service.name} group {group.name}", group.resources,
                        {"backends": group.backends, "regions": group.regions, "instance_types": group.instance_types,
                         "spot_policy": group.spot_policy, "max_price": group.max_price}))
    return out


# More GPUs than any single instance holds: a bare number this large was almost surely meant as memory.
_MAX_GPUS_PER_NODE = 16


def count_hint(gpu: str | None) -> str | None:
    """"Did you mean A100:80GB?" for `A100:80`, which asks for 80 GPUs, not 80 GB each."""
    if not gpu:
        return None
    parts = gpu.split(":")
    for i, part in enumerate(parts):
        if part.isdigit() and int(part) > _MAX_GPUS_PER_NODE:
            meant = ":".join(parts[:i] + [f"{part}GB"] + parts[i + 1:])
            return (f"did you mean --gpu {meant}? `{gpu}` asks for {part} GPUs on one node; "
                    f"memory per GPU is written with its unit ({part}GB)")
    return None


def _print_coverage(as_json: bool) -> None:
    snapshot = load()
    if as_json:
        click.echo(json.dumps({"taken": snapshot.taken, "source": snapshot.source,
                               "coverage": [asdict(c) for c in snapshot.coverage()]}, indent=2))
        return
    click.echo(f"catalog: {snapshot.source} snapshot taken {snapshot.taken}")
    for c in snapshot.coverage():
        click.echo(c.line())


def _lines(offers: list[Offer], limit: int) -> list[str]:
    """Plain aligned columns: never wrapped or cut to the terminal's width (instance types are long)."""
    rows = [("#", "BACKEND", "REGION", "INSTANCE TYPE", "RESOURCES", "SPOT", "$/H")]
    for n, o in enumerate(offers[:limit], 1):
        rows.append((str(n), o.backend, o.region, o.instance_type, f"{o.cpu}xCPU, {o.memory_gb:g}GB, {o.gpu}",
                     "spot" if o.spot else "on-demand", f"${o.price:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.rjust(w) if i in (0, 6) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
           for r in rows]
    if len(offers) > limit:
        out.append(f"  ... {len(offers) - limit} more (--limit)")
    return out


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--gpu", default=None, help="A GPU spec, as in resources.gpu: A100:80GB:2, 24GB.., H100,A100:4, nvidia:2..")
@click.option("--cpu", default=None, help="CPU cores, a number or a range (default 2..).")
@click.option("--memory", default=None, help="RAM, a size or a range (default 8GB..).")
@click.option("--backend", "backends", multiple=True, help="Only these backends (repeatable): aws, gcp, azure, lambda, nebius.")
@click.option("--region", "regions", multiple=True, help="Only these regions (repeatable).")
@click.option("--spot", "spot_policy", flag_value="spot", default=None, help="Only spot offers.")
@click.option("--on-demand", "spot_policy", flag_value="on-demand", help="Only on-demand offers.")
@click.option("--max-price", type=float, default=None, help="Only offers at or below this $/h.")
@click.option("--limit", type=int, default=20, show_default=True, help="Show at most this many offers per request.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--coverage", is_flag=True, help="Only print what the snapshot covers: each cloud's regions and families.")
def offers(paths: tuple[Path, ...], gpu: str | None, cpu: str | None, memory: str | None, backends: tuple[str, ...],
           regions: tuple[str, ...], spot_policy: SpotPolicy | None, max_price: float | None, limit: int, as_json: bool,
           coverage: bool) -> None:
    """List instance types that fit a resource spec, cheapest first, with $/h.

    With PATHS, every fleet and service replica group in them is matched with its own
    resources and placement (options given here narrow it further); without, the
    options are the request. Prices come from the catalog snapshot shipped with this
    version (its date is printed); Kubernetes, local and SSH capacity has no price here.

    \b
    Examples:
      gpustack-iac offers --gpu A100:80GB:2
      gpustack-iac offers --gpu 24GB.. --backend aws --region us-east-1 --spot
      gpustack-iac offers examples/aws
      gpustack-iac offers --coverage
    """
    if coverage:
        _print_coverage(as_json)
        return
    overrides: dict[str, Any] = {}
    if gpu is not None:
        overrides["gpu"] = gpu
    if cpu is not None:
        overrides["cpu"] = cpu
    if memory is not None:
        overrides["memory"] = memory
    try:
        base = ResourcesSpec(**overrides)
    except ValueError as exc:
        problems = [Diagnostic(file="<options>", line=0, column=0, path=f"--{'.'.join(str(p) for p in e['loc'])}",
                               message=e["msg"]) for e in exc.errors()]  # type: ignore[attr-defined]
        raise ConfigError(problems) from None
    requests = _requests(paths) if paths else [("request", base, {})]
    requests_placement = {label: placement for label, _, placement in requests}
    snapshot = load()
    results = []
    for label, resources, placement in requests:
        if paths and overrides:
            resources = (resources or ResourcesSpec()).model_copy(update={k: getattr(base, k) for k in overrides})
        found = find_offers(resources, backends=list(backends) or placement.get("backends"),
                            regions=list(regions) or placement.get("regions"),
                            instance_types=placement.get("instance_types"),
                            spot_policy=spot_policy or placement.get("spot_policy"),
                            max_price=max_price if max_price is not None else placement.get("max_price"),
                            snapshot=snapshot)
        results.append((label, resources or ResourcesSpec(), found))
    if as_json:
        click.echo(json.dumps({"catalog": {"taken": snapshot.taken, "source": snapshot.source,
                                           "coverage": [asdict(c) for c in snapshot.coverage()]},
                               "requests": [{"request": label, "resources": r.describe(),
                                             "offers": [asdict(o) for o in found[:limit]], "total": len(found)}
                                            for label, r, found in results]}, indent=2))
        return
    console = Console(highlight=False)
    console.print(f"catalog: {snapshot.source} snapshot taken {snapshot.taken} ({', '.join(snapshot.providers())})", soft_wrap=True)
    console.print("coverage: " + ", ".join(f"{c.provider} {len(c.regions)} regions × "
                                           f"{len(c.gpu_families) + len(c.cpu_families)} families"
                                           for c in snapshot.coverage()) + " (--coverage lists them)", soft_wrap=True)
    for label, resources, found in results:
        if not found:
            asked = set(backends) or set((dict(requests_placement.get(label) or {}).get("backends") or []))
            outside = sorted(b for b in asked if get(b).implemented and not get(b).priced)
            why = f"{', '.join(outside)} capacity is not in the catalog" if outside else "no offer matches"
            console.print(f"{label} ({resources.describe()}): {why}", soft_wrap=True)
            hint = count_hint(gpu)
            if hint:
                console.print(hint, soft_wrap=True)
            continue
        console.print(f"{label}: {resources.describe()}", soft_wrap=True)
        for line in _lines(found, limit):
            console.print(line, soft_wrap=True)
