"""The plan's `cost` object (built by gpustack_iac/cost.py) as text lines, for every renderer."""

from __future__ import annotations

from typing import Any


def _money(v: float | None) -> str:
    return "unbounded" if v is None else f"${v:,.2f}"


def cost_lines(cost: dict[str, Any]) -> list[str]:
    """One line per fleet, gateway and replica group, then the total and the change."""
    lines = []
    for item in cost.get("items", []):
        count = str(item["min_count"]) if item["min_count"] == item["max_count"] else f"{item['min_count']}..{item['max_count'] if item['max_count'] is not None else ''}"
        where = " ".join(p for p in (item.get("instance_type"), item.get("region"), item.get("spot")) if p)
        if item["hourly"]:
            price = f"{_money(item['min_hourly'])}..{_money(item['max_hourly'])}/h ({count} x ${item['hourly']:.4f}"
            if item.get("max_hourly_unit") and item["max_hourly_unit"] != item["hourly"]:
                price += f", on-demand ${item['max_hourly_unit']:.4f} at max"
            price += ")"
        else:
            price = "$0/h" if item["counted"] else "not priced"
        note = f"; {item['note']}" if item.get("note") else ""
        if not item["hourly"] and item.get("note"):
            price, note = ("$0/h; " if item["counted"] else "") + item["note"], ""
        lines.append(f"{item['kind']} {item['name']} [{item['backend']}{' ' + where if where else ''}]: {price}{note}")
    total = cost["total"]
    lines.append(f"total: {_money(total['min_hourly'])}/h at min, up to {_money(total['max_hourly'])}/h")
    if cost.get("deployed") is not None:
        d = cost["deployed"]
        lines.append(f"deployed: {_money(d['min_hourly'])}/h at min, up to {_money(d['max_hourly'])}/h")
    catalog = cost.get("catalog") or {}
    lines.append(f"prices: {catalog.get('source', '?')} catalog snapshot taken {catalog.get('taken', '?')}")
    return lines
