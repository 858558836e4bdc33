"""The results store: one SQLite database per results directory, one row per run keyed by its run key.

WAL mode and a busy timeout let several sweeps (processes) write to one store; each record is written in one
short transaction, so after a crash (even kill -9) a record is either fully there or absent. A run whose status
is final ("ok", "diverged", "collapsed") is never written again; a "failed" run is replaced by a later attempt.

Sweeps that overlap on one store share it through claims: a sweep claims a run just before training it; the
claim is dropped in the transaction that stores the record, and taken over by another sweep once its owner has
died (same host: its process is gone; another host: no heartbeat for ``CLAIM_TTL_S``).

Readers (``flx report``, ``--dry-run``) open the database read-only and work on a read-only store; a corrupt
file is reported (:class:`StoreError`) and never modified. Imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import socket
import sqlite3
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from flx.errors import StoreError
from flx.results.record import RunRecord, migrate

DEFAULT_OUT = "runs"  # flx sweep/run/report use ./runs unless --out / FLX_OUT says otherwise
DB_NAME = "runs.sqlite"
FINAL = ("ok", "diverged", "collapsed")
SCHEMA_VERSION = 2  # 2: run keys include the data's fingerprint (flx 0.2)
CLAIM_TTL_S = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key        TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    record     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artefacts (
    key  TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (key, name)
);
CREATE TABLE IF NOT EXISTS claims (
    key       TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,
    host      TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS restored (
    key TEXT PRIMARY KEY
);
"""


def default_out() -> Path:
    return Path(os.environ.get("FLX_OUT", DEFAULT_OUT))


def _encode(record) -> str:
    """A record's fields as JSON with NaN written as null (portable), decoded back to NaN for metric columns
    by the reader."""
    return json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()})


def write_atomic(path: Path, write) -> Path:
    """Write ``path`` through ``write(tmp_path)`` and swap it in: readers and concurrent writers never see half a
    file, and a failed write leaves the old file. OSError propagates (callers say what it means for them)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def new_owner() -> str:
    """An identity for one sweep: host, pid and a random part (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_alive(host: str, pid: int, heartbeat: float) -> bool:
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - heartbeat < CLAIM_TTL_S


def _can_write_file(path: Path) -> bool:
    """Really try (permission bits do not stop root; read-only mounts and immutable files do)."""
    try:
        with open(path, "r+b"):
            return True
    except OSError:
        return False


def _can_write_dir(path: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


FLAT_VIEW = "runs_flat"


def _flat_view_sql() -> str:
    """A view with one column per record field (:data:`flx.results.record.FIELDS`), read from each JSON record
    (no copy of the data): ``pandas.read_sql("SELECT * FROM runs_flat", sqlite3.connect(".../runs.sqlite"))``."""
    from flx.results.record import FIELDS

    names = [n for n in FIELDS if n not in ("key", "status", "created_at", "extra")]
    columns = ", ".join(f"json_extract(record, '$.{n}') AS \"{n}\"" for n in names)
    return f"CREATE VIEW {FLAT_VIEW} AS SELECT key, status, created_at, {columns} FROM runs"


def _ensure_flat_view(con: sqlite3.Connection) -> None:
    """(Re)creates the flat view when it is missing or names other fields than this flx's (a schema change
    only then, so concurrent writers are not disturbed on every connection)."""
    sql = _flat_view_sql()
    row = con.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?", (FLAT_VIEW,)
    ).fetchone()
    if row is None or row[0] != sql:
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(f"DROP VIEW IF EXISTS {FLAT_VIEW}")
            con.execute(sql)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


class Store:
    """Runs of one results directory. ``Store(out)`` creates nothing until :meth:`create` or the first write."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.path = self.out / DB_NAME

    def exists(self) -> bool:
        return self.path.is_file()

    # -- reading -----------------------------------------------------------------------------------------------
    def _corrupt(self, exc: Exception) -> StoreError:
        return StoreError(
            f"results store {self.path} is unreadable or corrupt ({exc}); flx left it untouched: "
            "move it away (or restore a copy) and run again"
        )

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of a read query on a read-only connection; none while there is no store or no table yet."""
        if self.out.exists() and not self.out.is_dir():
            raise StoreError(f"results folder {self.out} is a file; give a folder")
        if not self.exists():
            return []
        last = None
        for uri in (f"file:{self.path}?mode=ro", f"file:{self.path}?immutable=1"):
            try:
                con = sqlite3.connect(uri, uri=True, timeout=60)
            except sqlite3.Error as exc:
                last = exc
                continue
            try:
                return con.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                last = exc  # e.g. a WAL database in a read-only folder: retry as immutable
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(exc) from None
            finally:
                con.close()
        if last is not None and "unable to open" not in str(last) and "readonly" not in str(last):
            raise self._corrupt(last)
        raise StoreError(f"cannot read results store {self.path} ({last})")

    def statuses(self) -> dict[str, str]:
        """key -> status of every stored run (empty if there is no store yet)."""
        return dict(self._read("SELECT key, status FROM runs"))

    def done(self) -> set[str]:
        """Keys whose runs are final (ok, diverged or collapsed): a sweep skips these."""
        return {k for k, s in self.statuses().items() if s in FINAL}

    def records(self, with_time: bool = False, keys=None) -> list[RunRecord]:
        """Every stored record (or those of ``keys``), oldest first (with ``created_at`` set when asked),
        through :func:`flx.results.record.migrate` (records of every flx version read the same). Their artefacts
        are not loaded: :meth:`artefacts` reads them by key."""
        if keys is None:
            rows = self._read("SELECT record, created_at FROM runs ORDER BY created_at, key")
        else:
            keys, found = list(keys), []
            for i in range(0, len(keys), 500):  # SQLite's limit on parameters
                part = keys[i : i + 500]
                marks = ", ".join("?" * len(part))
                found += self._read(
                    f"SELECT created_at, key, record FROM runs WHERE key IN ({marks})", tuple(part)
                )
            rows = [(record, created) for created, _, record in sorted(found)]  # oldest first, as above
        return [migrate(json.loads(r) | ({"created_at": t} if with_time else {})) for r, t in rows]

    def restored(self) -> set[str]:
        """Keys of the runs stored with ``restored`` (:meth:`put`: rebuilt from a committed ``runs.csv``)."""
        if not self.exists() or not self._read("SELECT 1 FROM sqlite_master WHERE name = 'restored'"):
            return set()  # a store written before the table existed
        return {k for (k,) in self._read("SELECT key FROM restored")}

    def artefacts(self, key: str) -> dict[str, bytes]:
        """A run's stored artefacts, name -> blob (decode with :func:`flx.results.artefacts.decode`); {} if none."""
        return {n: bytes(b) for n, b in self._read("SELECT name, data FROM artefacts WHERE key = ?", (key,))}

    def artefact_sizes(self, key: str | None = None) -> dict[str, int]:
        """name -> bytes of one run's artefacts, or (no ``key``) key -> bytes of every run's."""
        if key is not None:
            return dict(self._read("SELECT name, LENGTH(data) FROM artefacts WHERE key = ?", (key,)))
        return dict(self._read("SELECT key, SUM(LENGTH(data)) FROM artefacts GROUP BY key"))

    def version(self) -> int:
        return self._read("PRAGMA user_version")[0][0] if self.exists() else SCHEMA_VERSION

    def needs_migration(self) -> bool:
        """True for a store written before run keys included the data (records but no schema version 2)."""
        return (
            self.exists()
            and self.version() < SCHEMA_VERSION
            and bool(self._read("SELECT 1 FROM runs LIMIT 1"))
        )

    def to_dataframe(self):
        """All runs as a pandas DataFrame, one row per run (config columns, status, metrics, data, provenance)."""
        import pandas as pd

        from flx.experiment.metrics import METRICS
        from flx.results.record import columns

        records = [r.to_dict() for r in self.records()]
        df = pd.DataFrame(records)
        df = df.reindex(columns=columns(df.columns))
        for col in METRICS:
            if col in df:
                df[col] = pd.to_numeric(df[col], errors="coerce")
        return df

    # -- writing -----------------------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """StoreError unless runs can be stored here: checked before anything is trained or written."""
        if self.out.exists() and not self.out.is_dir():
            raise StoreError(f"results folder {self.out} is a file; give a folder (--out or FLX_OUT)")
        if self.exists():
            self._read("SELECT COUNT(*) FROM runs")  # corrupt -> StoreError
            if not (_can_write_file(self.path) and _can_write_dir(self.out)):
                raise StoreError(
                    f"results store {self.path} is read-only; give another --out to store new runs"
                )
            if self.needs_migration():
                raise StoreError(
                    f"results store {self.path} was written by flx < 0.2 (run keys without the data); "
                    f"run `flx migrate {self.out}` once (with --data-dir for image data)"
                )
            return
        parent = self.out
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not _can_write_dir(parent):
            raise StoreError(f"cannot create results folder {self.out}: {parent} is not a writable folder")

    @contextlib.contextmanager
    def _writing(self):
        """A write: a full disk (SQLite's "database or disk is full", or ENOSPC) becomes one StoreError line;
        SQLite rolls the transaction back, so the store keeps every run stored before."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            raise StoreError(self._full(exc)) from None
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise StoreError(self._full(exc)) from None

    def _full(self, exc) -> str:
        return (
            f"results store {self.path}: the disk is full ({exc}); the runs stored so far are kept: free some "
            "space and run the same command again to resume"
        )

    def _connect(self) -> sqlite3.Connection:
        """A write connection (folder and tables created as needed). Callers that must not lose work call
        :meth:`check_writable` once first; this runs on every write, so it only connects."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            con.execute("PRAGMA busy_timeout = 60000")
            con.execute("PRAGMA journal_mode = WAL")
            con.executescript(_SCHEMA)
            _ensure_flat_view(con)
            old = con.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION
            if old and not con.execute("SELECT 1 FROM runs LIMIT 1").fetchone():
                con.execute(
                    f"PRAGMA user_version = {SCHEMA_VERSION}"
                )  # a new (or empty) store, never an old one
            return con
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise StoreError(self._full(exc)) from None
            raise StoreError(f"cannot write results store {self.path}: {exc.strerror or exc}") from None
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise StoreError(self._full(exc)) from None
            raise self._corrupt(exc) from None
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def create(self) -> None:
        """Create the folder and the database (if needed) now."""
        self._connect().close()

    def put(self, record: RunRecord, restored: bool = False) -> bool:
        """Store one finished run's fields (JSON), its artefacts (``record.artefacts``: name -> bytes,
        :mod:`flx.results.artefacts`, each a row beside the record) and drop its claim, in one transaction;
        False if a final record with that key was already there (its artefacts are kept too). ``restored``: the
        record was read back from a committed ``runs.csv`` (``flx runs restore``), and is marked so in the same
        transaction: a sweep may reuse it where this machine draws its generated data differently
        (:mod:`flx.sweep.restored`)."""
        if not isinstance(record, RunRecord):
            record = RunRecord(record)  # a plain dict of fields (ValueError naming any that is not one)
        with self._writing():
            return self._put(record.to_dict(), record.artefacts, restored)

    def _put(self, record: dict, artefacts: dict, restored: bool = False) -> bool:
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            cur = con.execute(
                "INSERT INTO runs (key, status, record, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET status = excluded.status, record = excluded.record, "
                f"created_at = excluded.created_at WHERE runs.status NOT IN {FINAL!r}",
                (record["key"], record["status"], _encode(record), datetime.now(timezone.utc).isoformat()),
            )
            written = cur.rowcount > 0
            if written:
                con.execute("DELETE FROM artefacts WHERE key = ?", (record["key"],))
                con.executemany(
                    "INSERT INTO artefacts (key, name, data) VALUES (?, ?, ?)",
                    [(record["key"], name, sqlite3.Binary(blob)) for name, blob in artefacts.items()],
                )
                if restored:
                    con.execute("INSERT OR IGNORE INTO restored (key) VALUES (?)", (record["key"],))
            con.execute("DELETE FROM claims WHERE key = ?", (record["key"],))
            con.execute("COMMIT")
            return written
        finally:
            con.close()

    def claim(self, key: str, owner: str) -> str:
        """Claim a run before training it: "claimed", "done" (a final record exists) or "taken" (a live sweep
        has it). A claim whose owner has died is taken over."""
        with self._writing():
            return self._claim(key, owner)

    def _claim(self, key: str, owner: str) -> str:
        host, pid = owner.split(":")[:2]
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            status = con.execute("SELECT status FROM runs WHERE key = ?", (key,)).fetchone()
            if status and status[0] in FINAL:
                con.execute("COMMIT")
                return "done"
            held = con.execute(
                "SELECT owner, host, pid, heartbeat FROM claims WHERE key = ?", (key,)
            ).fetchone()
            if held and held[0] != owner and _owner_alive(held[1], held[2], held[3]):
                con.execute("COMMIT")
                return "taken"
            con.execute(
                "INSERT OR REPLACE INTO claims (key, owner, host, pid, heartbeat) VALUES (?, ?, ?, ?, ?)",
                (key, owner, host, int(pid), time.time()),
            )
            con.execute("COMMIT")
            return "claimed"
        finally:
            con.close()

    def heartbeat(self, owner: str) -> None:
        con = self._connect()
        try:
            con.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), owner))
        finally:
            con.close()

    def release(self, owner: str) -> None:
        """Drop every claim of ``owner`` (an interrupted sweep gives its unfinished runs back)."""
        if not self.exists():
            return
        with self._writing():
            con = self._connect()
            try:
                con.execute("DELETE FROM claims WHERE owner = ?", (owner,))
            finally:
                con.close()

    def replace_all(self, records: list) -> None:
        """Rewrite the store with ``records`` (a migration): a new database file swapped in atomically."""
        tmp = self.out / f".{DB_NAME}.migrating{os.getpid()}"
        tmp.unlink(missing_ok=True)
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.executescript(_SCHEMA)
            con.execute("BEGIN")
            for r in map(dict, records):
                created = r.pop("created_at", None) or datetime.now(timezone.utc).isoformat()
                con.execute(
                    "INSERT OR REPLACE INTO runs (key, status, record, created_at) VALUES (?, ?, ?, ?)",
                    (r["key"], r["status"], _encode(r), created),
                )
            con.execute("COMMIT")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            con.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, self.path)
