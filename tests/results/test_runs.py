"""flx runs: list stored runs with filters, show one, JSON/CSV for scripts, one-line errors."""

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from flx.cli import app, main
from flx.results.browse import Condition, CsvRuns, parse_where, select
from flx.results.store import Store

runner = CliRunner()


def _store(tmp_path):
    store = Store(tmp_path / "runs")
    store.create()
    rows = [
        ("aaaa1111", "ok", "ce", None, 0.0, 0, 0.61),
        ("aaaa2222", "ok", "focal", 0.25, 2.0, 0, 0.66),
        ("bbbb3333", "ok", "focal", 0.25, 2.0, 1, 0.64),
        ("cccc4444", "diverged", "focal", 0.75, 5.0, 0, None),
        ("dddd5555", "failed", "poly1", None, None, 0, None),
    ]
    for key, status, loss, alpha, gamma, seed, ap in rows:
        record = {"key": key, "status": status, "dataset": "synthetic", "loss": loss, "alpha": alpha}
        record |= {"gamma": gamma, "seed": seed, "ap": ap, "torch_version": "2.14.1"}
        if key == "aaaa2222":
            record["curve"] = json.dumps([[100, 0.5], [200, 0.6]])
        if status == "failed":
            record["error"] = "ValueError: boom"
        store.put(record)
    return store


def test_where_filters_by_equality_lists_and_comparisons(tmp_path):
    store = _store(tmp_path)
    assert list(select(store, ["loss=focal"])["key"]) == ["aaaa2222", "bbbb3333", "cccc4444"]
    assert list(select(store, ["loss=ce,poly1"])["key"]) == ["aaaa1111", "dddd5555"]
    assert list(select(store, ["loss=focal", "gamma>=3"])["key"]) == ["cccc4444"]
    assert list(select(store, ["alpha=.25", "seed!=0"])["key"]) == ["bbbb3333"]
    assert list(select(store, ["alpha=none"])["key"]) == ["aaaa1111", "dddd5555"]
    assert list(select(store, [], statuses=("diverged", "failed"))["key"]) == ["cccc4444", "dddd5555"]
    assert select(store, ["ap>0.9"]).empty
    assert parse_where(["gamma <= 2"], ["gamma"]) == [Condition("gamma", "<=", ("2",))]


def test_runs_lists_a_table_with_the_fields_that_vary(tmp_path):
    _store(tmp_path)
    result = runner.invoke(app, ["runs", str(tmp_path / "runs"), "--where", "loss=focal"])
    assert result.exit_code == 0, result.output
    assert "3 runs" in result.output and "aaaa2222" in result.output and "aaaa1111" not in result.output
    for column in ("loss", "alpha", "gamma", "seed", "ap"):
        assert column in result.output
    assert "torch_version" not in result.output  # provenance is for `show`


def test_runs_json_and_csv_for_scripts(tmp_path):
    _store(tmp_path)
    folder = str(tmp_path / "runs")
    as_json = runner.invoke(app, ["runs", folder, "--status", "ok", "--json"])
    assert as_json.exit_code == 0
    assert [r["key"] for r in json.loads(as_json.output)] == ["aaaa1111", "aaaa2222", "bbbb3333"]
    as_csv = runner.invoke(app, ["runs", "--out", folder, "--where", "loss=focal", "--csv"])
    assert as_csv.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [r["key"] for r in rows] == ["aaaa2222", "bbbb3333", "cccc4444"] and rows[0]["gamma"] == "2.0"


def test_runs_show_prints_config_metrics_curve_and_provenance(tmp_path):
    _store(tmp_path)
    result = runner.invoke(app, ["runs", "show", "aaaa2", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    for text in (
        "aaaa2222",
        "config",
        "loss: focal",
        "metrics",
        "ap: 0.66",
        "curve",
        "100: 0.5",
        "torch_version",
    ):
        assert text in result.output
    as_json = runner.invoke(app, ["runs", "show", "dddd", str(tmp_path / "runs"), "--json"])
    assert json.loads(as_json.output)["error"] == "ValueError: boom"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["runs", "{d}", "--where", "los=focal"], "--where got field 'los'; accepted: one of"),
        (["runs", "{d}", "--where", "loss"], "--where got 'loss'; accepted: FIELD=VALUE"),
        (["runs", "{d}", "--where", "gamma>two"], "needs a number, got 'two'"),
        (
            ["runs", "{d}", "--where", "loss==focal"],
            "--where got 'loss==focal'; accepted: FIELD=VALUE with one",
        ),
        (
            ["runs", "{d}", "--where", "loss=="],
            "--where got 'loss=='; accepted: FIELD=VALUE with one operator",
        ),
        (["runs", "{d}", "--where", "gamma=>1"], "--where got 'gamma=>1'; accepted"),
        (["runs", "{d}", "--status", "done"], "--status got 'done'; accepted"),
        (["runs", "show", "aaaa", "{d}"], "2 runs have keys starting with 'aaaa'"),
        (["runs", "show", "zzzz", "{d}"], "no run in"),
        (["runs", "{d}/missing"], "does not exist"),
        (["runs", "{d}", "--json", "--csv"], "give one of them"),
    ],
)
def test_runs_bad_input_one_line_exit_2(tmp_path, capsys, args, needle):
    _store(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(d=tmp_path / "runs") for a in args])  # the console entry point, as `flx ...` runs it
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("flx: error: ") and needle in err and len(err.strip().splitlines()) == 1


def test_store_has_one_column_per_config_field_and_metric_for_read_sql(tmp_path):
    import sqlite3

    import pandas as pd

    from flx.experiment.config import CONFIG_FIELDS
    from flx.experiment.metrics import METRICS

    store = _store(tmp_path)
    df = pd.read_sql("SELECT * FROM runs_flat ORDER BY key", sqlite3.connect(store.path))
    assert {"key", "status", "created_at", *CONFIG_FIELDS, *METRICS} <= set(df.columns)
    assert list(df["loss"]) == ["ce", "focal", "focal", "focal", "poly1"]
    assert df.loc[df["key"] == "aaaa2222", "ap"].item() == 0.66 and df["gamma"].isna().sum() == 1


def test_committed_results_without_a_store_are_browsed_from_runs_csv():
    """Issue 22, item 13: the docs' `flx runs results/table1b ...` and `flx runs show KEY results/table1b`
    failed on a fresh clone (committed results have no runs.sqlite); they read runs.csv now. The key is the one
    the docs show, and its listing must show it too."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    results = root / "results" / "table1b"
    if not (results / "runs.csv").is_file():
        pytest.skip("no committed table1b")
    key = re.search(
        r"\$ flx runs show ([0-9a-f]{8}) results/table1b", (root / "docs" / "experiments.md").read_text()
    ).group(1)
    listed = runner.invoke(
        app, ["runs", str(results), "--where", "loss=focal", "--where", "gamma>=2", "--where", "seed=0"]
    )
    assert listed.exit_code == 0 and "3 runs in" in listed.output and key in listed.output
    shown = runner.invoke(app, ["runs", "show", key, str(results)])
    assert shown.exit_code == 0 and f"key: {key}" in shown.output


def test_a_store_restored_from_runs_csv_resumes_a_sweep_with_nothing_to_train(tmp_path):
    """Committed results ship runs.csv without runs.sqlite: `flx runs restore` rebuilds the store, so a sweep (and a
    comparison, cell by cell) resumes on a fresh clone instead of training everything again."""
    import shutil

    from typer.testing import CliRunner

    from flx.cli import app
    from flx.report.tables import load_runs
    from tests.conftest import TINY

    runner = CliRunner()
    out = tmp_path / "runs"
    args = ["sweep", "--loss", "ce,focal", *TINY, "--workers", "1", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    load_runs(out)  # runs.csv, as a report writes it
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(out / "runs.csv", clone / "runs.csv")
    restored = runner.invoke(app, ["runs", "restore", str(clone)])
    assert restored.exit_code == 0 and "2 runs restored" in restored.output, restored.output
    again = runner.invoke(app, [*args[:-1], str(clone)])
    assert again.exit_code == 0 and "2 already done" in again.output, again.output
    twice = runner.invoke(app, ["runs", "restore", str(clone)])
    assert twice.exit_code == 2 and "has a store (runs.sqlite) already" in twice.output
    empty = runner.invoke(app, ["runs", "restore", str(tmp_path / "nothing")])
    assert empty.exit_code == 2 and "has no runs.csv" in empty.output


def test_restored_runs_of_generated_data_drawn_differently_here_are_reused_not_retrained(tmp_path):
    """Another machine's floating point can draw a generated data set's examples differently: the same config,
    another fingerprint and key. A sweep reuses the restored (committed) run of that config; a store this machine
    wrote itself does not get that leeway and trains anew."""
    from flx.experiment.config import config_from_record
    from flx.report.tables import load_runs
    from flx.results.records import read_runs_csv
    from tests.conftest import TINY

    out = tmp_path / "runs"
    args = ["sweep", "--loss", "ce,focal", *TINY, "--workers", "1", "--out"]
    assert runner.invoke(app, [*args, str(out)]).exit_code == 0
    load_runs(out)
    rows = read_runs_csv(out)
    rows["data_fingerprint"] = "sha256:drawn-on-another-machine"  # as committed from elsewhere
    rows["key"] = [config_from_record(r).key(r["data_fingerprint"]) for r in rows.to_dict("records")]
    for name in ("clone", "own"):
        (tmp_path / name).mkdir()
        rows.to_csv(tmp_path / name / "runs.csv", index=False)
    assert runner.invoke(app, ["runs", "restore", str(tmp_path / "clone")]).exit_code == 0
    again = runner.invoke(app, [*args, str(tmp_path / "clone")])
    assert again.exit_code == 0 and "2 already done" in again.output, again.output
    assert "2 restored runs reused" in again.output, again.output
    assert set(Store(tmp_path / "clone").done()) == set(rows["key"])  # nothing new stored
    own = Store(tmp_path / "own")
    for record in CsvRuns(tmp_path / "own").records():
        own.put(record)  # written here, not restored
    trained = runner.invoke(app, [*args, str(tmp_path / "own")])
    assert trained.exit_code == 0 and "reused" not in trained.output and len(own.done()) == 4, trained.output
