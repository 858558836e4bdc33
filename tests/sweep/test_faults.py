"""Faults and bad input through real processes: one line on stderr, exit code 2, no traceback, nothing written;
signals end a sweep and its workers; overlapping sweeps train each run once."""

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flx.cli import app
from flx.data import base as D
from flx.data.images import load_catsdogs
from flx.results.store import Store
from tests.conftest import TINY, flx_cmd, subprocess_env, sweep_cmd
from tests.engine.test_engine import _count, _start_sweep_and_wait, _write_images

runner = CliRunner()


def _flx(*args, cwd=None, env=None, timeout=300):
    return subprocess.run(
        flx_cmd(*args), capture_output=True, text=True, env=env or subprocess_env(), cwd=cwd, timeout=timeout
    )


def _one_line_error(proc, needle: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr, proc.stdout[-2000:])
    assert len(lines) == 1 and needle in lines[0], lines
    assert "Traceback" not in proc.stderr + proc.stdout


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------------------
# instant validation: refused before torch is imported
# ------------------------------------------------------------------------------------------------------------
NO_TORCH = """
import sys
from flx.cli import main
try:
    main({args!r})
except SystemExit as exc:
    print("exit", exc.code, "torch" in sys.modules)
"""


@pytest.mark.parametrize(
    "args,needle",
    [
        (["sweep", "--gamma", "-1"], "--gamma got -1; accepted: a number in [0, 10]"),
        (["sweep", "--loss", "ce,hinge"], "--loss got 'hinge'; accepted: one of ce, balanced_ce"),
        (["sweep", "--seeds", "1000000"], "--seeds got 1000000; accepted: an integer in [1, 100000]"),
        (["sweep", "--gamma", "0,1,2,3,4", "--alpha", "0.1,0.2,0.3", "--seeds", "10000"], "at most 100,000"),
        (["sweep", "--workers", "0"], "--workers got 0"),
        (["sweep", "--image-size", "1000000"], "--image-size got 1000000; accepted: an integer in [8, 1024]"),
        (["sweep", "--lr", "abc"], "--lr got 'abc'"),
        (["run", "--epochs", "2.5"], "--epochs got 2.5; accepted: an integer"),
        (["run", "--prior", "1"], "--prior got 1; accepted: a number in (0, 1), or none"),
    ],
)
def test_bad_values_are_refused_before_torch_is_imported(tmp_path, args, needle):
    code = NO_TORCH.format(args=[*args, "--out", str(tmp_path / "runs")])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert proc.stdout.strip().splitlines()[-1] == "exit 2 False", proc.stdout + proc.stderr
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_spec_values_are_refused_before_torch_is_imported(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text("[config]\nepochs = 0\n")
    code = NO_TORCH.format(args=["sweep", str(spec)])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert proc.stdout.strip().endswith("exit 2 False")
    assert f"spec file {spec}: [config] epochs got 0; accepted: an integer in [1, 100000]" in proc.stderr


def test_workers_above_the_cores_are_capped_with_a_note(tmp_path):
    result = runner.invoke(app, ["sweep", "--loss", "ce", *TINY, "--workers", "1000", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert re.search(r"note: --workers 1000 is more than the \d+ available cores; using \d+", result.output)


# ------------------------------------------------------------------------------------------------------------
# stores and folders
# ------------------------------------------------------------------------------------------------------------
def test_corrupt_store_is_reported_and_never_modified(tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    db = out / "runs.sqlite"
    db.write_bytes(os.urandom(8192))
    before = _md5(db)
    for args in (
        ["sweep", "--loss", "ce", *TINY, "--out", str(out)],
        ["sweep", "--loss", "ce", *TINY, "--out", str(out), "--dry-run"],
        ["report", str(out)],
        ["run", *TINY, "--out", str(out)],
    ):
        _one_line_error(_flx(*args), f"results store {db} is unreadable or corrupt")
    assert _md5(db) == before and sorted(p.name for p in out.iterdir()) == ["runs.sqlite"]


@contextlib.contextmanager
def read_only(*paths: Path):
    """Make paths read-only for this process: permission bits, or (as root, whom they do not stop) the
    immutable attribute; skips the test where neither is possible."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    done = []
    try:
        for p in paths:
            if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
                pytest.skip("running as root where chattr +i is not available: cannot make a read-only store")
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)


def test_read_only_store_readers_work_writers_refuse_before_training(tmp_path):
    out = tmp_path / "runs"
    assert (
        runner.invoke(app, ["sweep", "--loss", "ce", *TINY, "--workers", "1", "--out", str(out)]).exit_code
        == 0
    )
    files = sorted(out.iterdir())
    before = {p.name: _md5(p) for p in files}
    with read_only(*files, out):
        dry = _flx("sweep", "--loss", "ce,focal", *TINY, "--out", str(out), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "2 runs planned, 1 already in" in dry.stdout
        elsewhere = tmp_path / "report"
        rep = _flx("report", str(out), "--no-plots", "--to", str(elsewhere))
        assert rep.returncode == 0, rep.stderr
        assert "| ce " in (elsewhere / "table.md").read_text()
        _one_line_error(_flx("report", str(out), "--no-plots"), "write the report elsewhere with --to DIR")
        _one_line_error(_flx("sweep", "--loss", "ce,focal", *TINY, "--out", str(out)), "is read-only")
        t0 = time.perf_counter()
        ran = _flx("run", "--loss", "focal", *TINY, "--epochs", "50", "--out", str(out))
        _one_line_error(ran, "is read-only")
        assert "status" not in ran.stdout  # refused before training, not after
    assert {p.name: _md5(p) for p in sorted(out.iterdir())} == before
    del t0


def test_out_that_is_a_file_or_unwritable(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    env = subprocess_env() | {"FLX_OUT": str(afile)}
    _one_line_error(_flx("sweep", "--loss", "ce", *TINY, env=env), f"results folder {afile} is a file")
    _one_line_error(_flx("report", env=env), f"results folder {afile} is a file")
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        _one_line_error(
            _flx("sweep", "--loss", "ce", *TINY, "--out", str(locked / "runs")), "is not a writable folder"
        )
    assert afile.read_text() == "x" and list(locked.iterdir()) == []


@pytest.mark.parametrize(
    "content,needle",
    [('a,b\n1,2,3,4\n"', "cannot read"), ("x,y\n1,2\n", "is not an flx runs file"), ("", "cannot read")],
)
def test_malformed_runs_csv_is_one_line(tmp_path, content, needle):
    (tmp_path / "runs.csv").write_text(content)
    _one_line_error(_flx("report", str(tmp_path)), needle)


# ------------------------------------------------------------------------------------------------------------
# data checked once, in the parent, before any run
# ------------------------------------------------------------------------------------------------------------
def _images_sweep(data, out, *extra):
    return _flx(
        "sweep", "--dataset", "catsdogs", "--data-dir", str(data), "--image-size", "16", "--ratio", "2",
        "--steps", "2", "--batch-size", "8", "--workers", "1", "--out", str(out), *extra,
    )  # fmt: skip


def test_single_class_folder_is_refused_before_training(tmp_path):
    data = tmp_path / "data"
    _write_images(data / "train", n=10, layout="per_class")
    for p in (data / "train" / "dogs").iterdir():
        p.unlink()
    (data / "train" / "dogs").rmdir()
    _one_line_error(
        _images_sweep(data, tmp_path / "runs"), "holds 10 cat and 0 dog images; both classes are needed"
    )
    assert not (tmp_path / "runs").exists()


def test_every_undecodable_image_is_reported_at_once(tmp_path):
    data = tmp_path / "data"
    _write_images(data / "train", n=10)
    for i in range(4):
        (data / "train" / f"dog.{100 + i}.jpg").write_bytes(b"not a jpeg" * i)
    proc = _images_sweep(data, tmp_path / "runs")
    _one_line_error(proc, "4 of 24 images cannot be decoded: ")
    assert "dog.100.jpg" in proc.stderr and "and 1 more; remove or replace them" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_images_that_would_not_fit_in_memory_are_refused(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _write_images(data / "train", n=10)
    monkeypatch.setattr(D, "available_memory", lambda: 10_000_000)
    result = runner.invoke(
        app,
        [
            "sweep",
            "--dataset",
            "catsdogs",
            "--data-dir",
            str(data),
            "--image-size",
            "512",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert (
        result.exit_code == 2 and "decoded images" in result.output and "lower --image-size" in result.output
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.parametrize("test_name", ["Test", "validation", "val"])
def test_a_folder_with_its_own_split_is_used_as_given(tmp_path, test_name):
    data = tmp_path / "data"
    _write_images(data / "train", n=12, layout="per_class")
    _write_images(data / test_name, n=5, layout="per_class")
    (data / test_name / "dogs").rename(data / test_name / "DOG")  # any case, singular or plural
    train, test, meta = load_catsdogs(ratio=3, image_size=16, positive="dog", data_dir=str(data))
    assert len(test) == 10 and test.n_pos == 5  # the given test set, whole
    # of 12 train images per class: 1 to validation, 11 to the heads (no backbone trains on the pool: it joins
    # them); dogs cut to 11 / 3. The sweep's in-domain backbone holds the pool (6) back: 5 cats, 5 / 2 dogs
    assert len(train) - train.n_pos == 11 and train.n_pos == 4 and len(meta["val"]) == 2
    assert meta["split"] == f"given (train/ + {test_name}/)"
    proc = _images_sweep(data, tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    assert f"split given (train/ + {test_name}/): train 5 cat + 2 dog; test 5 cat + 5 dog" in proc.stdout
    (record,) = Store(tmp_path / "runs").records()
    assert (record["n_train_neg"], record["n_train_pos"], record["n_test_neg"], record["n_test_pos"]) == (
        5,
        2,
        5,
        5,
    )
    assert record["data_location"].endswith(f"train + {data.resolve() / test_name}")


# ------------------------------------------------------------------------------------------------------------
# signals: finished runs kept, workers end with the sweep
# ------------------------------------------------------------------------------------------------------------
def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _long_sweep(out):
    return sweep_cmd(
        out, "--loss", "ce,focal", "--gamma", "0,1,2,5", "--seeds", "3", "--epochs", "8", workers=2
    )


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_parent_alone_signalled_leaves_no_worker_alive(tmp_path, sig):
    out = tmp_path / "runs"
    db = out / "runs.sqlite"
    proc = _start_sweep_and_wait(_long_sweep(out), db, at_least=2, stdout=subprocess.PIPE)
    workers = _descendants(proc.pid)
    assert workers, "the sweep has worker processes"
    os.kill(proc.pid, sig)  # the parent alone, as a scheduler or the OOM killer does
    output, _ = proc.communicate(timeout=60)
    deadline = time.time() + 10
    while _alive(workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(workers), f"workers outlived the sweep: {_alive(workers)}"
    stored, distinct = _count(db)
    assert stored == distinct and stored >= 2
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "Traceback" not in output
        assert f"interrupted (SIGTERM): {stored} of 15 runs are in the store" in output
    again = subprocess.run(
        _long_sweep(out), capture_output=True, text=True, env=subprocess_env(), timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert f"{stored} already done" in again.stdout and _count(db) == (15, 15)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_one_worker_sweep_mid_run_and_stores_no_run_as_failed(tmp_path, sig):
    """--workers 1 trains in this process: the signal must pass the run's own failure handler (which records an
    error as failed and goes on) and end the sweep, with the run it cut short not stored."""
    out = tmp_path / "runs"
    db = out / "runs.sqlite"
    cmd = sweep_cmd(
        out, "--loss", "ce,focal", "--gamma", "0,1,2,5", "--seeds", "3", "--epochs", "8", workers=1
    )
    proc = _start_sweep_and_wait(cmd, db, at_least=1, stdout=subprocess.PIPE)
    time.sleep(0.3)  # into the next run
    os.kill(proc.pid, sig)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), output
    assert "Traceback" not in output and "interrupted (SIG" in output
    records = Store(out).records()
    assert records and len(records) < 15 and all(r.status == "ok" for r in records), [
        r.error for r in records
    ]


@pytest.mark.slow
def test_overlapping_sweeps_train_each_run_once(tmp_path):
    out = tmp_path / "runs"
    a = sweep_cmd(out, "--loss", "focal", "--gamma", "0,1,2", "--seeds", "3")
    b = sweep_cmd(out, "--loss", "focal,ce", "--gamma", "1,2,5", "--seeds", "3")
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
        for cmd in (a, b)
    ]
    outputs = []
    for p in procs:
        stdout, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outputs.append(stdout)
    trained = [m for o in outputs for m in re.findall(r"^\[\d+/\d+\] (.+? seed=\d+): AP", o, flags=re.M)]
    assert len(trained) == len(set(trained)) == 15  # focal gamma {0,1,2,5} x 3 + ce x 3, each trained once
    assert _count(out / "runs.sqlite") == (15, 15)
    assert "stored meanwhile by another sweep" in "".join(outputs)  # the overlap really happened


def test_a_full_disk_is_one_line_and_the_store_stays_resumable(tmp_path, monkeypatch):
    """Issue 22, item 7: SQLite's SQLITE_FULL while storing a run (injected on the second record) was two
    chained tracebacks and a stale claim; now one line, exit 2, the first run kept, nothing claimed, and the same
    command resumes."""
    import sqlite3

    puts = []
    original = Store._put

    def full_after_one(self, record, artefacts, restored=False):
        if puts:
            raise sqlite3.OperationalError("database or disk is full")
        puts.append(record["key"])
        return original(self, record, artefacts, restored)

    monkeypatch.setattr(Store, "_put", full_after_one)
    args = ["sweep", "--loss", "ce,focal", *TINY, "--workers", "1", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "the disk is full (database or disk is full)" in result.output and "Traceback" not in result.output
    store = Store(tmp_path)
    assert [r["key"] for r in store.records()] == puts
    assert not store._read("SELECT key FROM claims")
    monkeypatch.setattr(Store, "_put", original)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 already done, 1 to run" in again.output
    assert len(Store(tmp_path).records()) == 2


def test_a_stop_signal_swallowed_in_a_gc_callback_still_stops_the_sweep_silently(
    tmp_path, monkeypatch, capsys
):
    """Python swallows an exception raised while it runs a weakref or garbage-collection callback (it prints
    "Exception ignored ... Traceback"): a SIGTERM that lands there is noted, printed nowhere, and the sweep stops
    before its next run."""
    import dataclasses
    import weakref

    import torch.nn.functional as F

    from flx.experiment.config import Config
    from flx.experiment.registries import LOSSES
    from flx.sweep.run import run_sweep

    class Target:
        pass

    fired = []

    def loss(logits, targets, reduction="mean", **_):
        if not fired:  # once: a callback that signals this process while Python runs it
            target = Target()
            fired.append(weakref.ref(target, lambda _: os.kill(os.getpid(), signal.SIGTERM)))
            del target
        return F.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)

    monkeypatch.setitem(LOSSES, "ce", dataclasses.replace(LOSSES["ce"], objective=loss))
    configs = [
        Config(loss="ce", n_samples=3000, ratio=20, dim=4, epochs=1, batch_size=256, seed=s).normalized()
        for s in range(4)
    ]
    result = run_sweep(configs, Store(tmp_path / "runs"), workers=1)
    assert result.interrupted == "SIGTERM" and result.exit_code == 143
    records = Store(tmp_path / "runs").records()
    assert len(records) <= 1 and all(r.status == "ok" for r in records)
    assert "Exception ignored" not in capsys.readouterr().err
