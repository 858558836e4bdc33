"""flx export mlflow: every stored run once in MLflow, with its metrics, curves, tags and scores."""

import sys

import pytest
from typer.testing import CliRunner

from flx.cli import app
from flx.results.store import Store
from tests.conftest import TINY

mlflow = pytest.importorskip("mlflow")
runner = CliRunner()


@pytest.mark.slow
def test_export_to_mlflow_twice_holds_each_run_once(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow puts artefacts under the working folder for a sqlite store
    out = tmp_path / "runs"
    swept = runner.invoke(
        app, ["sweep", "--loss", "ce,focal", *TINY, "--epochs", "2", "--workers", "1", "--out", str(out)]
    )
    assert swept.exit_code == 0, swept.output
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["export", "mlflow", str(out), "--tracking-uri", uri, "--experiment", "flx-test"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 runs logged, 0 replaced (status changed), 0 already in MLflow" in first.output
    second = runner.invoke(app, args)
    assert (
        second.exit_code == 0
        and "0 runs logged, 0 replaced (status changed), 2 already in MLflow" in second.output
    )
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("flx-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    stored = {r["key"]: r for r in Store(out).records()}
    for run in runs:
        record = stored[run.data.tags["flx.key"]]
        assert run.info.status == "FINISHED" and run.data.tags["flx.status"] == "ok"
        assert run.data.metrics["ap"] == pytest.approx(record["ap"], abs=0, rel=1e-12)
        assert (
            run.data.params["loss"] == record["loss"]
            and run.data.tags["flx.git_commit"] == record["git_commit"]
        )
        history = client.get_metric_history(run.info.run_id, "curve_val_ap")
        assert [m.step for m in history] == [1, 2]  # the per-epoch validation curve
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["test.npz"]


def test_a_changed_status_replaces_the_mlflow_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from flx.results.export import export_mlflow

    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "runs")
    store.put({"key": "k1", "status": "failed", "loss": "ce", "seed": 0, "error": "boom", "ap": float("nan")})
    store.put({"key": "k2", "status": "ok", "loss": "focal", "seed": 0, "ap": 0.5, "wall_time_s": 2.0})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert export_mlflow(store.out, uri) == {"logged": 2, "replaced": 0, "skipped": 0}
    store.put({"key": "k1", "status": "ok", "loss": "ce", "seed": 0, "ap": 0.7})  # the retried run
    assert export_mlflow(store.out, uri) == {"logged": 0, "replaced": 1, "skipped": 1}
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("runs").experiment_id])
    by_key = {r.data.tags["flx.key"]: r for r in runs}
    assert (
        len(runs) == 2 and by_key["k1"].data.metrics["ap"] == 0.7 and by_key["k1"].info.status == "FINISHED"
    )


def test_export_without_mlflow_or_runs_is_one_line(tmp_path, monkeypatch):
    result = runner.invoke(app, ["export", "mlflow", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no runs in" in result.output
    Store(tmp_path / "runs").put({"key": "k", "status": "ok"})
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    result = runner.invoke(app, ["export", "mlflow", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "flx export mlflow needs MLflow" in result.output and "pip install 'flx[mlflow]'" in result.output


def test_a_sqlite_store_that_cannot_work_is_refused_at_once_and_artefacts_sit_beside_it(
    tmp_path, monkeypatch
):
    """Issue 22, item 9: an unwritable database retried for about 2 minutes with 38 warnings, a missing folder
    was created silently, and the artefacts landed in ./mlruns of the working folder."""
    import os
    import time

    out = tmp_path / "runs"
    swept = runner.invoke(app, ["sweep", "--loss", "ce", *TINY, "--workers", "1", "--out", str(out)])
    assert swept.exit_code == 0, swept.output
    missing = runner.invoke(
        app, ["export", "mlflow", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'no' / 'm.db'}"]
    )
    assert missing.exit_code == 2 and "does not exist; create it first" in missing.output
    assert not (tmp_path / "no").exists()
    db = tmp_path / "store" / "m.db"
    db.parent.mkdir()
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        done = runner.invoke(app, ["export", "mlflow", str(out), "--tracking-uri", f"sqlite:///{db}"])
    finally:
        os.chdir(here)
    assert done.exit_code == 0, done.output
    assert (db.parent / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: make the folder read-only as the check sees it
            from flx.results import export

            monkeypatch.setattr(export, "_writable", lambda path: False)
        t0 = time.perf_counter()
        refused = runner.invoke(
            app, ["export", "mlflow", str(out), "--tracking-uri", f"sqlite:///{locked / 'm.db'}"]
        )
        assert (
            refused.exit_code == 2
            and "is not writable here" in refused.output
            and time.perf_counter() - t0 < 10
        )
    finally:
        locked.chmod(0o700)


def test_a_sweep_logs_each_run_to_mlflow_as_it_finishes(tmp_path, monkeypatch):
    """--mlflow: the runs are in MLflow when the sweep ends (logged per record), and a tracking store that
    cannot work is refused before anything trains."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "live"
    uri = f"sqlite:///{tmp_path / 'live.db'}"
    logged = []
    import flx.results.export as export

    original = export.export_mlflow
    monkeypatch.setattr(export, "export_mlflow", lambda *a, **k: logged.append(original(*a, **k)))
    args = ["sweep", "--loss", "ce,focal", *TINY, "--epochs", "2", "--workers", "1", "--out", str(out)]
    result = runner.invoke(app, [*args, "--mlflow", uri])
    assert result.exit_code == 0, result.output
    assert [c["logged"] for c in logged] == [1, 1]  # one run logged as each one finished
    experiment = MlflowClient(uri).get_experiment_by_name("live")
    assert len(MlflowClient(uri).search_runs([experiment.experiment_id])) == 2
    bad = runner.invoke(app, [*args[:-1], str(tmp_path / "never"), "--mlflow", "sqlite:///nowhere/x/y.db"])
    assert bad.exit_code == 2 and not (tmp_path / "never").exists()


def _crafted_artefact(out, name: str, blob: bytes) -> None:
    """A store altered by hand: one run whose artefact has this name and blob."""
    import sqlite3

    Store(out).put({"key": "k1", "status": "ok", "loss": "ce", "seed": 0, "ap": 0.5, "wall_time_s": 1.0})
    with sqlite3.connect(out / "runs.sqlite") as con:
        con.execute("INSERT INTO artefacts (key, name, data) VALUES (?, ?, ?)", ("k1", name, blob))


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/flx-escaped-abs", "sub/dir", "..", ".hidden"])
def test_an_artefact_name_from_a_store_never_leaves_its_folder(tmp_path, monkeypatch, name):
    import numpy as np

    from flx.results.artefacts import encode

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "a" / "b" / "runs"
    _crafted_artefact(out, name, encode({"x": np.zeros(3)}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["export", "mlflow", str(out), "--tracking-uri", uri])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"artefact named {name!r}" in result.output and "plain file name" in result.output
    assert not list(tmp_path.rglob("escaped*")) and not __import__("os").path.exists(
        "/tmp/flx-escaped-abs.npz"
    )
    assert not (tmp_path / "mlflow.db").exists()  # refused before MLflow was touched


def test_an_artefact_that_does_not_decode_ends_its_mlflow_run_failed_in_one_line(tmp_path, monkeypatch):
    import io
    import zlib

    import numpy as np
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}], dtype=object))  # a pickled object array: never loaded
    _crafted_artefact(tmp_path / "runs", "test", zlib.compress(buffer.getvalue()))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["export", "mlflow", str(tmp_path / "runs"), "--tracking-uri", uri])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "run k1 could not be exported (its MLflow run ended FAILED): ValueError" in result.output
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("runs").experiment_id])
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("command", ["sweep", "compare"])
@pytest.mark.parametrize(
    "uri,expected",
    [
        ("bogus://x", "unknown scheme 'bogus'"),
        ("sqlite:////proc/m.db", "MLflow tracking store sqlite:////proc/m.db: "),
    ],
)
def test_a_tracking_store_mlflow_cannot_use_is_refused_before_anything_trains(
    tmp_path, command, uri, expected
):
    """An unknown scheme, and a sqlite store in a folder that cannot be written (``/proc``, where ``os.access``
    says yes to root), are refused in milliseconds with nothing trained (MLflow retried them for minutes)."""
    import time

    from tests.compare.conftest import rare_table

    out = tmp_path / "out"
    if command == "sweep":
        args = ["sweep", "--loss", "ce", *TINY, "--workers", "1"]
    else:
        table = rare_table(tmp_path / "t.csv", 300, 6, seed=0)
        args = ["compare", str(table), "--label", "label", "--families", "ce,focal", "--budget", "2"]
    t0 = time.perf_counter()
    result = runner.invoke(app, [*args, "--mlflow", uri, "--out", str(out)])
    assert result.exit_code == 2 and expected in result.output, result.output
    assert time.perf_counter() - t0 < 20 and not (out / "runs.sqlite").exists()
