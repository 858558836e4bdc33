"""Runs leaving flx: ``flx export mlflow DIR`` logs every stored run of a results folder as an MLflow run.

Each MLflow run holds the flx run's config as params (the fields that are set), its metrics (the final ones,
and the learning curves as metric histories: ``curve_val_ap`` and ``curve_train_loss`` by step or epoch), tags
(``flx.key``, ``flx.status``, the data's location and fingerprint, provenance: flx and torch versions, git
commit, host, device) and its stored artefacts as ``.npz`` files (``np.load`` reads them). MLflow's run status is
FINISHED for ``ok`` runs and FAILED for the others (the flx status is in ``flx.status``). A run already exported to
the experiment (the same ``flx.key`` tag) is skipped, so exporting again adds only new runs; a run whose status
changed since (a failed run retried) replaces its old MLflow run.

MLflow is optional (``pip install 'flx[mlflow]'``) and imported only here.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from flx.errors import StoreError, UserError
from flx.experiment.config import CONFIG_FIELDS
from flx.experiment.metrics import METRICS
from flx.results.store import Store

TAGS = ("data_location", "data_fingerprint", "data_split", "data_classes", "flx_version", "torch_version",
        "git_commit", "host", "cpu_capability", "device", "device_name", "error")  # fmt: skip
KEY_TAG, STATUS_TAG = "flx.key", "flx.status"
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
ARTEFACT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")  # a plain file name: what flx itself stores


class ExportError(UserError):
    """An export that cannot be done (MLflow missing, a tracking store it cannot use)."""


def _mlflow():
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database set-up chatter
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ExportError(
            f"flx export mlflow needs MLflow ({exc}); install it with pip install 'flx[mlflow]'"
        ) from None
    return MlflowClient


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _millis(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return None


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _check_sqlite_uri(tracking_uri: str | None) -> Path | None:
    """For a ``sqlite:///PATH`` tracking store: its database's folder, checked to exist and be writable first
    (MLflow would retry an unwritable one for minutes, and create a missing folder silently); else None."""
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri[len("sqlite:///") :]).expanduser()
    folder = database.parent
    if not folder.is_dir():
        raise ExportError(
            f"MLflow tracking store {tracking_uri}: the folder {folder} does not exist; create it first"
        )
    if not _writable(folder) or (database.exists() and not _writable(database)):
        raise ExportError(f"MLflow tracking store {tracking_uri}: {database} is not writable here")
    return folder


def _probe_write(folder: Path, tracking_uri: str) -> None:
    """A real write beside the database (64 KiB, flushed to disk, then removed): a folder that passes
    ``os.access`` but cannot be written (``/proc`` as root, a full or read-only filesystem) fails here in
    milliseconds, where MLflow would retry it for minutes."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".flx-probe-") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise ExportError(
            f"MLflow tracking store {tracking_uri}: {folder} cannot be written ({exc.strerror or exc})"
        ) from None


def check_scheme(tracking_uri: str | None) -> None:
    """ExportError (one line) for a URI whose scheme MLflow has no tracking store for (checked without MLflow)."""
    scheme = urlparse(tracking_uri).scheme.split("+")[0] if tracking_uri else ""
    if len(scheme) > 1 and scheme not in TRACKING_SCHEMES:  # one letter: a Windows drive
        raise ExportError(
            f"MLflow tracking URI {tracking_uri!r}: unknown scheme {scheme!r}; accepted: sqlite:///PATH, a folder "
            "(or file:///PATH), http(s)://HOST:PORT, postgresql://, mysql://, mssql:// or databricks"
        )


def check_tracking(tracking_uri: str | None) -> Path | None:
    """ExportError (one line, in milliseconds) when MLflow is missing, ``tracking_uri`` has a scheme MLflow has
    no store for, or it is a sqlite:/// store that cannot be written (tried with a real write), before a sweep or
    a comparison that logs to it trains anything. Returns a sqlite store's folder (else None)."""
    check_scheme(tracking_uri)
    folder = _check_sqlite_uri(tracking_uri)
    if folder is not None:
        _probe_write(folder, tracking_uri)
    _mlflow()
    return folder


def export_mlflow(
    results_dir: str | Path,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    on_run: Callable[[str, str], None] | None = None,
) -> dict:
    """Log the runs of ``results_dir``'s store to MLflow (``tracking_uri``: MLflow's default when None) under
    ``experiment`` (default: the folder's name). Returns {"logged": n, "replaced": n, "skipped": n};
    ``on_run(key, what)`` is called per run ("logged", "replaced", "skipped")."""
    store = Store(results_dir)
    if not store.exists():
        raise StoreError(
            f"no runs in {results_dir} (no runs.sqlite); run `flx sweep --out {results_dir}` first"
        )
    records = store.records(with_time=True)
    check_artefact_names(store, [r.key for r in records])
    folder = check_tracking(tracking_uri)
    client_class = _mlflow()

    try:
        client = client_class(tracking_uri)
        name = experiment or Path(results_dir).resolve().name
        found = client.get_experiment_by_name(name)
        # a SQLite store keeps its artefacts beside the database, not in ./mlruns of wherever flx ran
        location = (folder / "mlartifacts").resolve().as_uri() if folder is not None else None
        experiment_id = found.experiment_id if found is not None else client.create_experiment(name, location)
        exported = {}
        for run in client.search_runs([experiment_id], max_results=50_000):
            key = run.data.tags.get(KEY_TAG)
            if key:
                exported[key] = (run.info.run_id, run.data.tags.get(STATUS_TAG))
    except Exception as exc:  # MLflow raises its own and SQLAlchemy's kinds for a store it cannot use
        raise ExportError(
            f"MLflow tracking store {tracking_uri or '(default)'}: {type(exc).__name__}: {exc}"
        ) from None
    counts = {"logged": 0, "replaced": 0, "skipped": 0}
    for record in records:
        key = record.key
        what = "logged"
        if key in exported:
            run_id, status = exported[key]
            if status == record.status:
                counts["skipped"] += 1
                if on_run is not None:
                    on_run(key, "skipped")
                continue
            client.delete_run(run_id)
            what = "replaced"
        _log_run(client, experiment_id, record, store.artefacts(key))
        counts[what] += 1
        if on_run is not None:
            on_run(key, what)
    return counts


def plain_file_name(name: str) -> bool:
    """A name that stays in the folder it is joined to: letters, digits, '_', '.', '-', no leading dot, no '..'."""
    return bool(ARTEFACT_NAME.match(name)) and ".." not in name


def check_artefact_names(store: Store, keys: list[str]) -> None:
    """ExportError (one line) for a stored artefact name that is not a plain file name (a separator, '..', an
    absolute path): a store is data, and a name read from it never leaves the folder it is written to."""
    for key in keys:
        for name in store.artefact_sizes(key):
            if not plain_file_name(name):
                raise ExportError(
                    f"{store.out}: run {key[:10]} has an artefact named {name!r}; accepted: a plain file name "
                    "(letters, digits, '_', '.', '-'; no separator, no '..'): the store was altered"
                )


def _log_run(client, experiment_id: str, record, artefacts: dict) -> None:
    """One flx run as an MLflow run; if any part of it cannot be logged (an artefact that does not decode), the
    MLflow run ends FAILED and ExportError says which run and why, in one line."""
    from flx.results.summary import run_label

    start = _millis(record.created_at) or 0
    tags = {KEY_TAG: record.key, STATUS_TAG: record.status}
    tags |= {f"flx.{t}": str(getattr(record, t))[:5000] for t in TAGS if getattr(record, t) is not None}
    run = client.create_run(
        experiment_id, start_time=start, tags=tags, run_name=f"{run_label(record)} seed={record.seed}"
    )
    try:
        _log_contents(client, run.info.run_id, record, artefacts, start)
    except Exception as exc:  # MLflow's, numpy's (an artefact that does not decode), the disk's
        client.set_terminated(run.info.run_id, "FAILED")
        raise ExportError(
            f"run {record.key[:10]} could not be exported (its MLflow run ended FAILED): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    end = start + int(1000 * record.wall_time_s) if _finite(record.wall_time_s) else None
    client.set_terminated(run.info.run_id, "FINISHED" if record.status == "ok" else "FAILED", end_time=end)


def _log_contents(client, run_id: str, record, artefacts: dict, start: int) -> None:
    import json

    import numpy as np
    from mlflow.entities import Metric, Param

    from flx.results.artefacts import decode

    params = [Param(f, str(getattr(record, f))) for f in CONFIG_FIELDS if getattr(record, f) is not None]
    metrics = [Metric(m, float(getattr(record, m)), start, 0) for m in METRICS if _finite(getattr(record, m))]
    for name, field, column in (("curve_val_ap", "curve", 1), ("curve_train_loss", "train_curve", 1)):
        text = getattr(record, field)
        for point in json.loads(text) if isinstance(text, str) and text else []:
            if _finite(point[column]):
                metrics.append(Metric(name, float(point[column]), start, int(point[0])))
    for extra in ("wall_time_s", "train_loss", "best_step", "steps_run", "epochs_run"):
        if _finite(getattr(record, extra)) and extra not in METRICS:
            metrics.append(Metric(extra, float(getattr(record, extra)), start, 0))
    client.log_batch(run_id, params=params)  # fewer than MLflow's 100 per batch
    for i in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        for artefact, blob in artefacts.items():
            path = Path(tmp) / f"{artefact}.npz"
            if not plain_file_name(artefact) or path.resolve().parent != Path(tmp).resolve():
                raise ExportError(
                    f"artefact name {artefact!r} is not a plain file name"
                )  # checked before too
            np.savez_compressed(path, **decode(blob))
            client.log_artifact(run_id, str(path))
