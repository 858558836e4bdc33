"""Run identity and the constraint table: keys stable as Config grows, data in the key, one wording."""

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flx.cli import app
from flx.errors import ConfigError
from flx.experiment import config as C
from flx.experiment import params as P
from flx.experiment.config import Config, config_from_record
from flx.experiment.params import Param
from flx.experiment.plan import plan
from flx.results.store import Store
from flx.sweep.run import run_sweep
from flx.sweep.worker import prepare
from tests.conftest import TINY, flx_cmd, subprocess_env
from tests.engine.test_engine import TINY_CONFIG, _write_images

runner = CliRunner()
RESULTS = Path(__file__).resolve().parents[2] / "results"


def test_a_new_field_with_a_default_keeps_every_key(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Grown(Config):
        warmup_epochs: int = 0  # a field added later, with its default in the frozen key baseline

    monkeypatch.setitem(P.PARAMS, "warmup_epochs", Param("warmup_epochs", int, "Warm-up epochs.", 0, 100))
    monkeypatch.setattr(C, "KEY_BASELINE", {**C.KEY_BASELINE, "warmup_epochs": 0})
    for fields in ({}, {"loss": "ce"}, {"loss": "focal", "gamma": 1.0, "seed": 3}, TINY_CONFIG):
        old, new = Config(**fields), Grown(**fields)
        assert new.key("d") == old.key("d") and new.config_key() == old.config_key()
    assert Grown(warmup_epochs=5).key("d") != Config().key("d")


def test_committed_records_keep_their_keys():
    """Every committed run's key is its config and data fingerprint: a change to hashing, a default or a
    normalization that would orphan stored runs fails here."""
    for csv in sorted(RESULTS.glob("*/runs.csv")):
        for row in pd.read_csv(csv).to_dict("records"):
            assert config_from_record(row).key(row["data_fingerprint"]) == row["key"], (csv, row["key"])


def test_other_files_other_key_same_files_elsewhere_same_key(tmp_path):
    a = tmp_path / "a"
    _write_images(a / "train", n=8)
    b = tmp_path / "moved" / "b"
    shutil.copytree(a, b)  # the same files in another folder
    c = tmp_path / "c"
    shutil.copytree(a, c)
    (c / "train" / "cat.3.jpg").write_bytes((a / "train" / "cat.4.jpg").read_bytes())  # one file differs
    config = Config(dataset="catsdogs", image_size=16, ratio=2, steps=2, batch_size=8).normalized()
    (ka,), (kb,), (kc,) = (prepare([config], str(d)) for d in (a, b, c))
    assert ka.key == kb.key and ka.key != kc.key
    assert ka.data["data_location"] != kb.data["data_location"]
    # the bug this fixes: a second folder swept into the same store was reported as already done
    out = tmp_path / "runs"
    base = ["sweep", "--dataset", "catsdogs", "--image-size", "16", "--ratio", "2", "--steps", "2"]
    base += ["--batch-size", "8", "--workers", "1", "--out", str(out)]
    assert runner.invoke(app, [*base, "--data-dir", str(a)]).exit_code == 0
    moved = runner.invoke(app, [*base, "--data-dir", str(b)])
    assert "1 runs, 1 already done, 0 to run" in moved.output
    other = runner.invoke(app, [*base, "--data-dir", str(c)])
    assert "1 runs, 0 already done, 1 to run" in other.output, other.output
    records = Store(out).records()
    assert len(records) == 2 and len({r["data_fingerprint"] for r in records}) == 2


def test_one_wording_for_a_bad_value_everywhere(tmp_path):
    expected = "got -1; accepted: a number in [0, 10]"
    with pytest.raises(ConfigError, match=r"^gamma got -1; accepted: a number in \[0, 10\]$"):
        Config(gamma=-1).normalized()
    cli = runner.invoke(app, ["sweep", "--gamma", "-1", "--out", str(tmp_path / "r")])
    assert cli.exit_code == 2 and f"--gamma {expected}" in cli.output
    spec = tmp_path / "s.toml"
    spec.write_text("[[grid]]\ngamma = [1, -1]\n")
    from_spec = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "r")])
    assert from_spec.exit_code == 2 and f"[[grid]] gamma {expected}" in from_spec.output


def test_every_config_field_has_a_constraint_and_a_key_baseline():
    assert set(C.CONFIG_FIELDS) <= set(P.PARAMS) and set(C.CONFIG_FIELDS) == set(C.KEY_BASELINE)
    for name in C.CONFIG_FIELDS:
        default = getattr(Config(), name)
        if default is not None:
            assert P.check(name, default) == default, name  # every default passes its own constraint


def test_python_api_runs_a_sweep(tmp_path):
    """What README's 'Python API' section shows: plan, then run_sweep, with no CLI involved."""
    configs = plan(None, {"loss": ["ce", "focal"], "gamma": [2.0], "seeds": 2, **TINY_CONFIG})
    assert len(configs) == 4
    events = []
    result = run_sweep(
        configs, Store(tmp_path / "runs"), workers=1, on_event=lambda kind, **f: events.append(kind)
    )
    assert result.counts["ok"] == 4 and result.exit_code == 0 and result.interrupted is None
    assert events.count("record") == 4 and "data" in events and "start" in events
    again = run_sweep(configs, Store(tmp_path / "runs"), workers=1)
    assert again.done_before == 4 and sum(again.counts.values()) == 0
    for record in Store(tmp_path / "runs").records():
        assert record["wall_time_s"] > 0 and record["data_time_s"] >= 0 and record["startup_s"] >= 0
        assert (record["n_train_neg"], record["n_train_pos"]) == (2857, 143)
        assert record["data_location"] == "generated" and record["data_fingerprint"].startswith("sha256:")


def test_start_up_is_recorded_apart_from_the_runs(tmp_path):
    result = runner.invoke(
        app, ["sweep", "--loss", "ce", "--seeds", "2", *TINY, "--workers", "1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0
    first, second = sorted(Store(tmp_path).records(), key=lambda r: r["seed"])
    assert first["startup_s"] > 0 and second["startup_s"] == 0  # the worker's start-up: its first run only
    # data loading is timed apart too (that in-process runs reuse the data their sweep checked is counted in
    # tests/sweep/test_sweep_options.py)
    assert first["data_time_s"] >= 0 and second["data_time_s"] >= 0 and first["wall_time_s"] > 0


def test_an_old_store_is_refused_by_sweeps_until_migrated_and_reported_as_it_is(tmp_path):
    import json
    import sqlite3

    from flx.engine.run import run

    out = tmp_path / "old"
    out.mkdir()
    config = Config(loss="ce", **TINY_CONFIG).normalized()
    record = run(config)
    old = {
        k: v for k, v in record.items() if k not in (*P.DATA_COLUMNS, "artefacts")
    }  # flx < 0.2: no artefacts
    old["key"] = "0123456789abcdef"  # flx < 0.2: a hash of the config alone
    con = sqlite3.connect(out / "runs.sqlite")
    con.execute("CREATE TABLE runs (key TEXT PRIMARY KEY, status TEXT, record TEXT, created_at TEXT)")
    con.execute("INSERT INTO runs VALUES (?, ?, ?, ?)", (old["key"], "ok", json.dumps(old), "2026-01-01"))
    con.commit()
    con.close()
    args = ["sweep", "--loss", "ce", *TINY, "--workers", "1", "--out", str(out)]
    refused = subprocess.run(flx_cmd(*args), capture_output=True, text=True, env=subprocess_env())
    assert refused.returncode == 2 and f"run `flx migrate {out}` once" in refused.stderr
    reported = runner.invoke(app, ["report", str(out), "--no-plots"])  # readers need no migration
    assert reported.exit_code == 0 and "| ce " in (out / "table.md").read_text()
    migrated = runner.invoke(app, ["migrate", str(out)])
    assert migrated.exit_code == 0, migrated.output
    (new,) = Store(out).records()
    assert new["key"] == record["key"] and new["ap"] == record["ap"] and new["n_train_pos"] == 143
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 runs, 1 already done, 0 to run" in again.output
    assert len(Store(out).records()) == 1
