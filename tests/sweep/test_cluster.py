"""--executor ray: sweeps as Ray tasks on a local Ray instance (started once for this module, 2 CPUs), with the
same store, resume and interruption behaviour as the local executor."""

import sys

import pytest
from typer.testing import CliRunner

from flx.cli import app
from flx.experiment.config import Config
from flx.experiment.plan import plan
from flx.results.store import Store
from flx.sweep.run import run_sweep

runner = CliRunner()
GRID = {"loss": ["ce", "focal"], "gamma": [0.0, 2.0], "n_samples": 3000, "ratio": 20.0, "dim": 4, "epochs": 1,
        "batch_size": 256, "seeds": 2}  # fmt: skip


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


def _records(out) -> dict:
    skip = {"wall_time_s", "startup_s", "data_time_s", "created_at", "host"}
    return {r["key"]: {k: v for k, v in r.items() if k not in skip} for r in Store(out).records()}


def test_a_ray_sweep_stores_what_the_local_executor_stores(tmp_path, ray_session):
    configs = plan(None, GRID)
    local = run_sweep(configs, Store(tmp_path / "local"), workers=1)
    ray = run_sweep(configs, Store(tmp_path / "ray"), workers=None, executor="ray")
    assert local.counts == ray.counts == {"ok": 6, "diverged": 0, "collapsed": 0, "failed": 0}
    assert ray.workers == 2 and ray_session.is_initialized()  # a Ray it did not start is left running
    assert _records(tmp_path / "local") == _records(tmp_path / "ray")  # every field, metrics bit for bit
    again = run_sweep(configs, Store(tmp_path / "ray"), workers=None, executor="ray")
    assert again.done_before == 6 and sum(again.counts.values()) == 0  # resumed: nothing to run


def test_an_interrupted_ray_sweep_resumes_without_duplicates(tmp_path, ray_session):
    configs = plan(None, {**GRID, "seeds": 4})  # 12 runs
    store = Store(tmp_path / "runs")
    seen = []

    def stop_after_two(kind, **fields):
        if kind == "record":
            seen.append(fields["record"]["key"])
            if len(seen) == 2:
                raise KeyboardInterrupt  # as Ctrl-C in the middle of the sweep

    first = run_sweep(configs, store, workers=None, executor="ray", on_event=stop_after_two)
    assert first.interrupted == "SIGINT"
    stored = store.done()
    assert 2 <= len(stored) < 12
    second = run_sweep(configs, store, workers=None, executor="ray")
    assert second.done_before == len(stored) and second.counts["ok"] == 12 - len(stored)
    keys = [r["key"] for r in store.records()]
    assert len(keys) == len(set(keys)) == 12 and set(store.statuses().values()) == {"ok"}
    assert not store._read("SELECT * FROM claims")  # no claim left behind


def test_a_missing_ray_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    result = runner.invoke(
        app, ["sweep", "--executor", "ray", "--loss", "ce", "--out", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2, result.output
    assert "--executor ray needs Ray" in result.output and "pip install 'flx[ray]'" in result.output
    assert not (tmp_path / "runs").exists()
    for args, message in (
        (["--executor", "slurm"], "--executor got 'slurm'; accepted: local or ray"),
        (["--ray-address", "10.0.0.1:6379"], "--ray-address is for --executor ray"),
    ):
        result = runner.invoke(app, ["sweep", *args, "--out", str(tmp_path / "runs")])
        assert result.exit_code == 2 and message in result.output, result.output


def test_an_address_where_no_cluster_answers_is_refused_at_once(tmp_path):
    import socket

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["sweep", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--loss", "ce"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "but nothing answers there" in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_ray_batches_runs_and_sizes_itself_by_the_cluster(ray_session):
    from flx.sweep.ray import RayExecutor

    executor = RayExecutor(device="auto").start(pending=40)
    assert executor.slots == 2 and executor.device == "cpu"
    assert executor._batch_size([]) == 1  # until runs have been timed: one run per task
    assert executor._batch_size([0.1, 0.3]) == 6  # short runs: ~2 s per task, at most 40 / (3 x 2 slots)
    assert executor._batch_size([0.5]) == 4 and executor._batch_size([30.0]) == 1
    assert RayExecutor(device="cpu").start(pending=3)._batch_size([0.01]) == 1
    with pytest.raises(Exception, match="no GPU"):
        RayExecutor(device="cuda").start(pending=3)
    assert Config().normalized()  # the executor left the config machinery alone
