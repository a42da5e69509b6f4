"""SQLite persistence of the controller's registrations: agents, services and replica placements.

A restarted gateway process re-reads these to resume: it asks the recorded agents what runs,
re-probes the recorded replicas and routes the healthy ones again without restarting them.
Writes are tiny and rare (registrations and placements), so synchronous sqlite3 calls on the
event loop are cheaper than a thread hop. The file holds agent tokens: it is created 0600.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpustack_iac.runtime.controller.model import RouterDef, ServiceDef, parse_router, parse_service

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    token TEXT NOT NULL,
    labels TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    previous TEXT,
    rollout TEXT
);
CREATE TABLE IF NOT EXISTS placements (
    replica_id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    grp TEXT NOT NULL,
    generation TEXT NOT NULL,
    agent TEXT NOT NULL,
    gpus TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS routers (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    prefix TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class AgentRecord:
    name: str
    url: str
    token: str
    labels: dict[str, Any]
    tunnel: dict[str, Any] | None = None  # an SSH fleet host: reached through a port forward (runtime/tunnels.py)

    def __hash__(self) -> int:
        return hash((self.name, self.url))

    def __repr__(self) -> str:  # never show the token in logs or tracebacks
        return f"AgentRecord(name={self.name!r}, url={self.url!r}, labels={self.labels!r})"


@dataclass(frozen=True)
class PlacementRecord:
    replica_id: str
    service: str
    group: str
    generation: str
    agent: str
    gpus: tuple[int, ...]
    created_at: float


@dataclass(frozen=True)
class ServiceRecord:
    definition: ServiceDef
    previous: ServiceDef | None  # the version a failed or running rollout falls back to
    rollout: dict[str, Any] | None  # the last rollout report, shown in status


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(agents)")}
        if "tunnel" not in columns:  # a store written before SSH fleets
            self._db.execute("ALTER TABLE agents ADD COLUMN tunnel TEXT")

    def close(self) -> None:
        self._db.close()

    # agents
    def put_agent(self, agent: AgentRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO agents(name, url, token, labels, tunnel) VALUES (?, ?, ?, ?, ?)",
            (agent.name, agent.url, agent.token, json.dumps(agent.labels, sort_keys=True),
             json.dumps(agent.tunnel) if agent.tunnel else None),
        )

    def delete_agent(self, name: str) -> None:
        self._db.execute("DELETE FROM agents WHERE name = ?", (name,))

    def agents(self) -> list[AgentRecord]:
        rows = self._db.execute("SELECT name, url, token, labels, tunnel FROM agents ORDER BY name").fetchall()
        return [AgentRecord(n, u, t, json.loads(lab), json.loads(tun) if tun else None) for n, u, t, lab, tun in rows]

    # services
    def put_service(self, record: ServiceRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO services(name, definition, previous, rollout) VALUES (?, ?, ?, ?)",
            (
                record.definition.name,
                json.dumps(record.definition.to_json()),
                json.dumps(record.previous.to_json()) if record.previous else None,
                json.dumps(record.rollout) if record.rollout is not None else None,
            ),
        )

    def delete_service(self, name: str) -> None:
        self._db.execute("DELETE FROM services WHERE name = ?", (name,))
        self._db.execute("DELETE FROM placements WHERE service = ?", (name,))

    def services(self) -> list[ServiceRecord]:
        rows = self._db.execute("SELECT definition, previous, rollout FROM services ORDER BY name").fetchall()
        return [
            ServiceRecord(
                definition=parse_service(json.loads(d)),
                previous=parse_service(json.loads(p)) if p else None,
                rollout=json.loads(r) if r else None,
            )
            for d, p, r in rows
        ]

    # routers
    def put_router(self, router: RouterDef) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO routers(name, definition) VALUES (?, ?)", (router.name, json.dumps(router.to_json()))
        )

    def delete_router(self, name: str) -> None:
        self._db.execute("DELETE FROM routers WHERE name = ?", (name,))

    def routers(self) -> list[RouterDef]:
        rows = self._db.execute("SELECT definition FROM routers ORDER BY name").fetchall()
        return [parse_router(json.loads(d)) for (d,) in rows]

    # placements
    def put_placement(self, p: PlacementRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO placements(replica_id, service, grp, generation, agent, gpus, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (p.replica_id, p.service, p.group, p.generation, p.agent, json.dumps(list(p.gpus)), p.created_at),
        )

    def delete_placement(self, replica_id: str) -> None:
        self._db.execute("DELETE FROM placements WHERE replica_id = ?", (replica_id,))

    def placements(self) -> list[PlacementRecord]:
        rows = self._db.execute(
            "SELECT replica_id, service, grp, generation, agent, gpus, created_at FROM placements ORDER BY replica_id"
        ).fetchall()
        return [PlacementRecord(r, s, g, gen, a, tuple(json.loads(gp)), c) for r, s, g, gen, a, gp, c in rows]

    # replica numbering: never reuse an id, even after its replica was stopped (an agent may still
    # remember the old one, and a POST with a known id returns that replica)
    def next_index(self, prefix: str) -> int:
        self._db.execute(
            "INSERT INTO counters(prefix, n) VALUES (?, 1) ON CONFLICT(prefix) DO UPDATE SET n = n + 1", (prefix,)
        )
        row = self._db.execute("SELECT n FROM counters WHERE prefix = ?", (prefix,)).fetchone()
        return int(row[0])
