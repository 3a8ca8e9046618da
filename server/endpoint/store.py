"""The endpoint's state that survives: every accepted change, in SQLite under `state_dir`.

A change (the first start, traffic, mirror traffic, a deployment added or removed, a rollback)
is one row written in one transaction, with the whole endpoint state after it, before the change
is acknowledged; with WAL and synchronous=FULL a row that was committed survives kill -9 (and a
power cut). A restarted endpoint resumes from the newest row, not from its file. The rows are
also the history (`hearth endpoint history`) and what rollback returns to."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAFFIC_KINDS = ("init", "traffic", "rollback", "auto_rollback")
DB_NAME = "endpoint.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,          -- unix time
    key_id  TEXT,                   -- who made it (a key fingerprint, never the key); NULL: the endpoint
    kind    TEXT NOT NULL,          -- init | traffic | mirror | add | remove | rollback | auto_rollback
    detail  TEXT NOT NULL,          -- JSON: what the change asked for (and why, for rollbacks)
    state   TEXT NOT NULL           -- JSON: the whole endpoint state after it
)"""


@dataclass(frozen=True)
class Change:
    """One committed change."""

    id: int
    at: float
    key_id: str | None
    kind: str
    detail: dict[str, Any]
    state: dict[str, Any]


class EndpointStore:
    """The changes table of one endpoint. One writer (the endpoint process); not thread-safe."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)  # transactions are explicit
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def record(self, kind: str, detail: dict[str, Any], state: dict[str, Any], key_id: str | None = None) -> Change:
        """Commit one change (and the state after it); returns it once it is durable."""
        at = time.time()
        detail_json, state_json = json.dumps(detail, sort_keys=True), json.dumps(state, sort_keys=True)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute("INSERT INTO changes (at, key_id, kind, detail, state) VALUES (?, ?, ?, ?, ?)",
                                   (at, key_id, kind, detail_json, state_json))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return Change(cur.lastrowid, at, key_id, kind, json.loads(detail_json), json.loads(state_json))

    def latest(self) -> Change | None:
        """The newest change: the state to resume from (None for a new endpoint)."""
        rows = self._rows("SELECT * FROM changes ORDER BY id DESC LIMIT 1")
        return rows[0] if rows else None

    def history(self, limit: int = 100, since: float | None = None) -> list[Change]:
        """The newest `limit` changes (since a unix time, if given), oldest first."""
        rows = self._rows("SELECT * FROM changes WHERE at >= ? ORDER BY id DESC LIMIT ?",
                          (since if since is not None else 0.0, limit))
        return rows[::-1]

    def traffic_before_last_change(self) -> dict[str, int] | None:
        """What rollback returns to: the traffic table as it was before the newest change of the
        traffic (the first start does not count); None when traffic was never changed."""
        last = self._rows("SELECT * FROM changes WHERE kind IN ('traffic', 'rollback', 'auto_rollback') "
                          "ORDER BY id DESC LIMIT 1")
        if not last:
            return None
        before = self._rows("SELECT * FROM changes WHERE id < ? ORDER BY id DESC LIMIT 1", (last[0].id,))
        return dict(before[0].state["traffic"]) if before else None

    def _rows(self, sql: str, args: tuple = ()) -> list[Change]:
        return [Change(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]))
                for r in self._db.execute(sql, args).fetchall()]
