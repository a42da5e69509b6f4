"""PostgreSQL: psycopg 3, the objects as rows of one table, locking by the primary key.

The table (`pulumi_state` unless `?table=` names another) holds one row per key, like Pulumi's
`postgres://` DIY backend: key, data, created and updated times. `create` is an INSERT that does
nothing on a conflicting key, so exactly one of two racing writers gets the row.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from gpustack_iac.engine.remote.objects import Location, require
from gpustack_iac.errors import StateError

_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _connection_url(url: str) -> tuple[str, str]:
    """The URL psycopg connects to (our own `table` option removed) and the table name."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    table = query.pop("table", ["pulumi_state"])[-1]
    if not _TABLE_RE.match(table):
        raise StateError(f"table name {table!r} in the state location is not a plain SQL identifier")
    scheme = "postgresql" if parts.scheme == "postgresql" else "postgres"
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query, doseq=True), "")), table


class PostgresStore:
    def __init__(self, location: Location) -> None:
        self._psycopg = require("psycopg", "state-postgres")
        self.location = location
        self._url, self._table = _connection_url(location.url)
        parts = urlsplit(self._url)
        self._shown = f"postgres://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
        self._lock = threading.Lock()  # one connection, shared by the engine's parallel steps
        try:
            self._conn = self._psycopg.connect(self._url, autocommit=True)
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (key TEXT PRIMARY KEY, data BYTEA NOT NULL, "
                "created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        except self._psycopg.Error as exc:
            # Never the URL itself in a message: it may carry a password.
            raise StateError(f"cannot use the PostgreSQL state at {self._shown}: {str(exc).strip()}") from None

    def describe(self) -> str:
        return f"{self._shown} (table {self._table})"

    def _run(self, what: str, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                cur = self._conn.execute(sql.replace("{t}", self._table), args)
                return list(cur.fetchall()) if cur.description else [(cur.rowcount,)]
        except self._psycopg.Error as exc:
            raise StateError(f"cannot {what} in the PostgreSQL state at {self._shown}: {str(exc).strip()}") from None

    def get(self, key: str) -> bytes | None:
        rows = self._run("read", "SELECT data FROM {t} WHERE key = %s", (key,))
        return bytes(rows[0][0]) if rows else None

    def put(self, key: str, data: bytes) -> None:
        self._run("write", "INSERT INTO {t} (key, data) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                  "SET data = EXCLUDED.data, updated_at = now()", (key, data))

    def create(self, key: str, data: bytes) -> bool:
        rows = self._run("create", "INSERT INTO {t} (key, data) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, data))
        return bool(rows and rows[0][0] == 1)

    def delete(self, key: str) -> None:
        self._run("delete", "DELETE FROM {t} WHERE key = %s", (key,))

    def list(self, prefix: str) -> list[str]:
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return [str(r[0]) for r in self._run("list", "SELECT key FROM {t} WHERE key LIKE %s ORDER BY key", (like,))]
