"""The results store: one SQLite database per results directory, one row per run keyed by its config hash.

WAL mode and a busy timeout let several sweeps (processes) write to one store; each record is written in one
short transaction, so after a crash (even kill -9) a record is either fully there or absent. A run whose status
is "ok" or "diverged" is final: writing it again changes nothing. A "failed" run is replaced by a later attempt.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_OUT = "runs"  # flx sweep/run/report use ./runs unless --out / FLX_OUT says otherwise
DB_NAME = "runs.sqlite"
FINAL = ("ok", "diverged")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key        TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    record     TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""


def default_out() -> Path:
    return Path(os.environ.get("FLX_OUT", DEFAULT_OUT))


def _encode(record: dict) -> str:
    """JSON with NaN written as null (portable), decoded back to NaN for metric columns by the reader."""
    return json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()})


class Store:
    """Runs of one results directory. ``Store(out)`` does not create anything until the first write."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.path = self.out / DB_NAME

    def exists(self) -> bool:
        return self.path.exists()

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        if create:
            self.out.mkdir(parents=True, exist_ok=True)
        elif not self.exists():
            raise FileNotFoundError(f"no results store at {self.path}")
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("PRAGMA busy_timeout = 60000")
        if create:
            con.execute("PRAGMA journal_mode = WAL")
            con.execute(_SCHEMA)
        return con

    def put(self, record: dict) -> bool:
        """Store one finished run in one transaction; False if a final record with that key was already there."""
        con = self._connect(create=True)
        try:
            cur = con.execute(
                "INSERT INTO runs (key, status, record, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET status = excluded.status, record = excluded.record, "
                "created_at = excluded.created_at WHERE runs.status NOT IN ('ok', 'diverged')",
                (record["key"], record["status"], _encode(record), datetime.now(timezone.utc).isoformat()),
            )
            return cur.rowcount > 0
        finally:
            con.close()

    def _read(self, sql: str) -> list[tuple]:
        """Rows of a read query; none while the store does not exist yet or another process is still creating it
        (the file appears before its table does)."""
        if not self.exists():
            return []
        con = self._connect()
        try:
            return con.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            con.close()

    def statuses(self) -> dict[str, str]:
        """key -> status of every stored run (empty if there is no store yet)."""
        return dict(self._read("SELECT key, status FROM runs"))

    def done(self) -> set[str]:
        """Keys whose runs are final (ok or diverged): a sweep skips these."""
        return {k for k, s in self.statuses().items() if s in FINAL}

    def records(self) -> list[dict]:
        return [json.loads(r) for (r,) in self._read("SELECT record FROM runs ORDER BY created_at, key")]

    def to_dataframe(self):
        """All runs as a pandas DataFrame, one row per run (config columns, status, metrics, provenance)."""
        import pandas as pd

        from flx.train import METRICS

        df = pd.DataFrame(self.records())
        for col in METRICS:
            if col in df:
                df[col] = pd.to_numeric(df[col], errors="coerce")
        return df
