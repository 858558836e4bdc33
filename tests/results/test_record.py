"""The run record: every field named once, every stored key one of them, runs.csv's columns read from it."""

import csv
import json
import pickle
import sqlite3
from pathlib import Path

import pytest

from flx.experiment.config import Config
from flx.results.record import FIELDS, RunRecord, columns, migrate
from flx.results.store import Store
from flx.sweep.run import run_sweep

RESULTS = Path(__file__).resolve().parents[2] / "results"
TINY = dict(n_samples=3000, ratio=20.0, dim=4, epochs=1, batch_size=256)


def test_every_field_has_a_type_and_a_meaning():
    for field in FIELDS.values():
        assert field.type and field.meaning, field.name


def test_every_key_of_a_stored_record_is_a_field(tmp_path):
    configs = [Config(loss=loss, seed=0, **TINY).normalized() for loss in ("focal", "ohem")]
    run_sweep(configs, Store(tmp_path), workers=1)
    with sqlite3.connect(tmp_path / "runs.sqlite") as con:
        stored = [json.loads(r) for (r,) in con.execute("SELECT record FROM runs")]
    assert len(stored) == 2
    for record in stored:
        assert set(record) <= set(FIELDS), set(record) - set(FIELDS)
    view = pd_columns(tmp_path)
    assert set(view) - {"key", "status", "created_at"} <= set(FIELDS)


def pd_columns(folder) -> list[str]:
    with sqlite3.connect(folder / "runs.sqlite") as con:
        return [d[0] for d in con.execute("SELECT * FROM runs_flat").description]


@pytest.mark.parametrize("table", sorted(p.parent.name for p in RESULTS.glob("*/runs.csv")))
def test_committed_runs_csv_columns_are_the_fields_in_their_order(table):
    with open(RESULTS / table / "runs.csv") as f:
        header = next(csv.reader(f))
    assert header == columns(header)


def test_a_record_refuses_a_name_that_is_not_a_field_and_is_read_only():
    with pytest.raises(ValueError, match="app"):
        RunRecord(key="k", status="ok", app=0.5)
    record = RunRecord(key="k", status="ok", ap=0.5)
    assert record.ap == record["ap"] == 0.5 and record.gamma is None
    with pytest.raises(AttributeError):
        record.ap = 0.6
    with pytest.raises(AttributeError):
        record.app  # noqa: B018
    assert record.replace(ap=0.6).ap == 0.6 and record.ap == 0.5


def test_artefacts_travel_beside_the_fields_and_survive_pickling():
    record = RunRecord(key="k", status="ok", artefacts={"test": b"x"})
    assert "artefacts" not in record and record.artefacts == {"test": b"x"}
    back = pickle.loads(pickle.dumps(record))
    assert back == record and back.artefacts == {"test": b"x"}


def test_an_older_record_migrates_keeping_its_key_and_every_value(tmp_path):
    old = {"key": "abc", "status": "ok", "loss": "focal", "ap": None, "n_val_pos": 12}
    record = migrate(old)
    assert record.key == "abc" and record.extra == {"n_val_pos": 12} and record.ap is None
    with sqlite3.connect(tmp_path / "runs.sqlite") as con:  # a store written by hand / an older flx
        Store(tmp_path).create()
        con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?)", ("abc", "ok", json.dumps(old), "2026-01-01T00:00:00")
        )
    (stored,) = Store(tmp_path).records()
    assert stored.key == "abc" and stored.extra == {"n_val_pos": 12}
