"""Browsing stored runs: list them with filters, show one in full (what ``flx runs`` renders). Torch-free.

- :func:`parse_where` turns ``field=value`` filters (also ``!=``, ``>=``, ``<=``, ``>``, ``<``; ``=a,b`` for any
  of several values) into :class:`Condition` objects, refusing unknown fields with the list of known ones.
- :func:`select` returns the runs of a store that pass the filters and statuses, as a DataFrame, oldest first.
- :func:`find` returns the one run whose key starts with a given prefix.
- :func:`list_columns` picks what a listing shows: the key, status, the config fields that differ between the
  runs listed, and the main metrics.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from flx.errors import StoreError, UserError
from flx.experiment.config import CONFIG_FIELDS
from flx.experiment.metrics import METRICS
from flx.results.store import FINAL, Store, default_out

STATUSES = (*FINAL, "failed")
LIST_METRICS = ("ap", "val_ap", "roc_auc", "ece")
_OPS = ("!=", ">=", "<=", "=", ">", "<")
_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Condition:
    """One ``--where`` filter: ``field op value``; ``=`` and ``!=`` take comma-separated alternatives."""

    field: str
    op: str
    values: tuple[str, ...]

    def matches(self, value) -> bool:
        if self.op in ("=", "!="):
            hit = any(_equal(value, v) for v in self.values)
            return hit if self.op == "=" else not hit
        number = _number(value)
        if number is None:
            return False
        bound = float(self.values[0])
        return {">": number > bound, "<": number < bound, ">=": number >= bound, "<=": number <= bound}[
            self.op
        ]


def _number(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _equal(value, text: str) -> bool:
    """A stored value equals a typed one: as numbers when both are (0.25 = .25), else as text (none = None)."""
    a, b = _number(value), _number(text)
    if a is not None and b is not None:
        return a == b
    if value is None:
        return text.lower() in ("none", "null", "")
    return str(value).lower() == text.lower()


def known_fields(records: list[dict]) -> list[str]:
    """What ``--where`` can name: every config field, every metric, and whatever else the records hold."""
    names = dict.fromkeys([*CONFIG_FIELDS, *METRICS, "status", "key"])  # every field would offer unset ones
    for record in records:
        names.update(dict.fromkeys(record))
    return sorted(names)


def parse_where(expressions: list[str], fields: list[str]) -> list[Condition]:
    """``["loss=focal", "gamma>=1"]`` -> conditions; UserError naming the expression and what is accepted."""
    conditions = []
    for text in expressions:
        m = _WHERE.match(text)
        if not m or not m.group(3) or m.group(3)[0] in "=<>!":  # 'loss==focal': one operator, not two
            raise UserError(
                f"--where got {text!r}; accepted: FIELD=VALUE with one operator (=, !=, >=, <=, >, <; =a,b for any of "
                "several), e.g. --where loss=focal --where gamma>=1"
            )
        field, op, value = m.groups()
        if field not in fields:
            raise UserError(f"--where got field {field!r}; accepted: one of {', '.join(fields)}")
        values = tuple(v.strip() for v in value.split(",")) if op in ("=", "!=") else (value,)
        if op not in ("=", "!=") and _number(value) is None:
            raise UserError(f"--where {text!r}: {op} needs a number, got {value!r}")
        conditions.append(Condition(field, op, values))
    return conditions


def parse_statuses(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    statuses = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in statuses if s not in STATUSES]
    if bad or not statuses:
        raise UserError(f"--status got {text!r}; accepted: comma-separated, from {', '.join(STATUSES)}")
    return statuses


class CsvRuns:
    """The runs of a results folder that holds only ``runs.csv`` (committed results ship without their store):
    the records :func:`select` and :func:`find` read, read-only, with no artefacts."""

    def __init__(self, folder: Path):
        self.out = folder

    def records(self, with_time: bool = False) -> list:
        import math

        from flx.results.record import migrate
        from flx.results.records import read_runs_csv

        rows = read_runs_csv(self.out).to_dict("records")
        return [
            migrate({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()})
            for r in rows
        ]

    def artefact_sizes(self, key: str) -> dict[str, int]:
        return {}


def open_store(folder: str | Path) -> Store | CsvRuns:
    """The store of a results folder, or its runs.csv when it has no store; UserError when it has neither."""
    path = Path(folder)
    if not path.exists():
        raise UserError(f"results folder {path} does not exist; give a folder that `flx sweep --out` wrote")
    store = Store(path)
    if path.is_dir() and not store.exists() and (path / "runs.csv").is_file():
        return CsvRuns(path)
    if path.is_dir() and not store.exists():
        raise UserError(
            f"no runs stored in {path} (no {store.path.name}); give a folder that `flx sweep --out` wrote"
        )
    return store


def select(store: Store, where: list[str] = (), statuses: tuple[str, ...] | None = None):
    """The runs of ``store`` that satisfy every ``where`` expression and have one of ``statuses``, as a
    DataFrame (one row per run, oldest first, ``created_at`` included)."""
    import pandas as pd

    records = store.records(with_time=True)
    conditions = parse_where(list(where), known_fields(records))
    kept = [
        r
        for r in records
        if (statuses is None or r.get("status") in statuses)
        and all(c.matches(r.get(c.field)) for c in conditions)
    ]
    return pd.DataFrame(kept)


def list_columns(df) -> list[str]:
    """Key and status, then the config fields whose values differ between the rows (always dataset and loss),
    then the main metrics that any row has."""
    if df.empty:
        return []
    varying = [
        f
        for f in CONFIG_FIELDS
        if f in df and (f in ("dataset", "loss") or df[f].astype(str).nunique(dropna=False) > 1)
    ]
    metrics = [m for m in LIST_METRICS if m in df and df[m].notna().any()]
    return ["key", "status", *varying, *metrics]


def find(store: Store, prefix: str):
    """The stored record whose key starts with ``prefix``; UserError if none or several do."""
    prefix = prefix.strip()
    if not prefix:
        raise UserError("flx runs show needs a run key (or the start of one): see `flx runs`")
    hits = [r for r in store.records(with_time=True) if str(r.key or "").startswith(prefix)]
    if not hits:
        raise UserError(
            f"no run in {store.out} has a key starting with {prefix!r}; `flx runs {store.out}` lists them"
        )
    if len(hits) > 1:
        keys = ", ".join(sorted(r.key[: len(prefix) + 4] for r in hits)[:5])
        raise UserError(
            f"{len(hits)} runs have keys starting with {prefix!r} ({keys}, ...); give more of the key"
        )
    return hits[0]


def _curve(text) -> list:
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError:
            return []
    return text if isinstance(text, list) else []


def sections(record, artefacts: dict[str, int] | None = None) -> dict[str, dict]:
    """One run's record split for display: config, metrics, curves, data, provenance, the error (if any) and
    its stored artefacts (``artefacts``: name -> bytes)."""
    config = {f: getattr(record, f) for f in CONFIG_FIELDS if getattr(record, f) is not None}
    metrics = {m: getattr(record, m) for m in METRICS if getattr(record, m) is not None}
    rest = {k: v for k, v in record.items() if k not in CONFIG_FIELDS and k not in metrics and v is not None}
    data = {k: v for k, v in rest.items() if k.startswith(("data_", "n_", "backbone_"))}
    shown = {*data, "curve", "train_curve", "key", "status", "error"}
    provenance = {k: v for k, v in rest.items() if k not in shown}
    out = {
        "run": {"key": record.key, "status": record.status},
        "config": config,
        "metrics": metrics,
        "data": data,
        "provenance": provenance,
    }
    if record.error:
        out["run"]["error"] = record.error
    curve, train_curve = _curve(record.curve), _curve(record.train_curve)
    if curve:  # [step, validation AP, (AP50)]
        out["curve"] = {str(c[0]): c[1] for c in curve}
    if train_curve:
        out["train_curve"] = {str(c[0]): c[1] for c in train_curve}
    if artefacts:
        out["artefacts"] = {name: f"{size / 1024:.1f} KB" for name, size in artefacts.items()}
    return out


def list_runs(folder: str | Path | None, where: list[str] = (), status: str | None = None):
    """``flx runs``: the store of ``folder`` (default: ``FLX_OUT`` / ./runs) and its runs that pass ``where`` and
    ``status`` (a comma list), as a DataFrame."""
    store = open_store(folder or default_out())
    return store, select(store, where, parse_statuses(status))


def show_run(folder: str | Path | None, prefix: str) -> tuple[dict, dict[str, dict]]:
    """``flx runs show``: the record whose key starts with ``prefix`` and its :func:`sections`."""
    store = open_store(folder or default_out())
    record = find(store, prefix)
    return record, sections(record, store.artefact_sizes(record.key))


def restore_store(folder: str | Path) -> int:
    """``flx runs restore``: rebuild ``folder``'s store from its committed ``runs.csv`` (the records, without
    artefacts), so that a sweep or a comparison resumes there instead of training them again; returns how many.
    StoreError (one line) where a store exists already or there is no ``runs.csv``."""
    folder = Path(folder)
    store = Store(folder)
    if store.exists():
        raise StoreError(f"{folder} has a store (runs.sqlite) already; restore only rebuilds a missing one")
    if not (folder / "runs.csv").is_file():
        raise StoreError(f"{folder} has no runs.csv to restore a store from")
    records = CsvRuns(folder).records()
    for record in records:
        store.put(record, restored=True)
    return len(records)
