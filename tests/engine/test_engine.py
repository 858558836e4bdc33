import os
import pickle
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from flx.cli import app
from flx.data.cifar import load_cifar_catsdogs
from flx.data.images import load_catsdogs
from flx.data.synthetic import load_synthetic
from flx.engine.run import run
from flx.errors import DataError
from flx.experiment.config import Config
from flx.experiment.plan import expand
from flx.results.store import Store
from tests.conftest import SHARED_DATA, TINY, flx_cmd, subprocess_env

runner = CliRunner()
TINY_CONFIG = dict(n_samples=3000, ratio=20, dim=4, epochs=1, batch_size=256)


def _sweep(out, *args):
    return runner.invoke(app, ["sweep", *args, *TINY, "--workers", "1", "--out", str(out)])


# ------------------------------------------------------------------------------------------------------------
# sweep end to end
# ------------------------------------------------------------------------------------------------------------
def test_sweep_writes_expected_records_and_resumes(tmp_path):
    out = tmp_path / "runs"
    result = _sweep(out, "--loss", "ce,focal", "--gamma", "0,2", "--alpha", "0.25", "--seeds", "2")
    assert result.exit_code == 0, result.output
    df = Store(out).to_dataframe()
    # ce ignores gamma and alpha: 2 seeds; focal: 2 gammas x 2 seeds
    assert len(df) == 6 and df["key"].is_unique
    assert sorted(df.groupby("loss").size().items()) == [("ce", 2), ("focal", 4)]
    assert set(df["status"]) == {"ok"} and df["ap"].between(0, 1).all()
    assert df.loc[df["loss"] == "ce", "gamma"].isna().all()
    assert "summary" in result.output
    again = _sweep(out, "--loss", "ce,focal", "--gamma", "0,2", "--alpha", "0.25", "--seeds", "2")
    assert again.exit_code == 0 and "0 to run" in again.output
    assert len(Store(out).to_dataframe()) == 6


def test_dry_run_lists_plan_and_runs_nothing(tmp_path):
    out = tmp_path / "runs"
    _sweep(out, "--loss", "ce", "--seeds", "1")
    result = _sweep(out, "--loss", "ce,focal", "--gamma", "1,2", "--seeds", "1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "3 runs planned, 1 already in" in result.output and "2 to run" in result.output
    assert len(Store(out).to_dataframe()) == 1


def test_sweep_from_spec_with_cli_override(tmp_path):
    spec = tmp_path / "mini.toml"
    spec.write_text(
        'description = "mini"\nseeds = 2\n[config]\nepochs = 5\n'
        '[[grid]]\nloss = ["balanced_ce"]\nalpha = [0.25, 0.75]\n[[grid]]\nloss = "focal"\ngamma = [1.0]\n'
    )
    out = tmp_path / "runs"
    result = _sweep(out, str(spec))  # TINY's --epochs 1 overrides the spec's 5
    assert result.exit_code == 0, result.output
    df = Store(out).to_dataframe()
    assert len(df) == 6 and set(df["epochs"]) == {1}
    assert sorted(df.loc[df["loss"] == "balanced_ce", "alpha"].unique()) == [0.25, 0.75]


def test_diverging_run_is_recorded_and_sweep_goes_on(tmp_path):
    out = tmp_path / "runs"
    result = runner.invoke(
        app,
        [
            "sweep",
            "--loss",
            "ce",
            "--seeds",
            "1",
            *TINY,
            "--optimizer",
            "sgd",
            "--lr",
            "1e5",
            "--workers",
            "1",
            "--out",
            str(out),
            "--prior",
            "0.01,none",
        ],
    )
    assert result.exit_code == 0, result.output
    df = Store(out).to_dataframe()
    assert len(df) == 2 and set(df["status"]) == {"diverged"}
    assert df["ap"].isna().all()
    ok = _sweep(out, "--loss", "ce", "--seeds", "1")  # and the store goes on taking runs
    assert ok.exit_code == 0 and (Store(out).to_dataframe()["status"] == "ok").sum() == 1


def test_same_config_twice_gives_identical_metrics():
    config = Config(loss="focal", gamma=2.0, alpha=0.25, seed=3, **TINY_CONFIG)
    a, b = run(config), run(config)
    for metric in ("ap", "roc_auc", "best_f1", "ece", "train_loss"):
        assert a[metric] == b[metric], metric
    c = run(Config(loss="focal", gamma=2.0, alpha=0.25, seed=4, **TINY_CONFIG))
    assert c["train_loss"] != a["train_loss"]  # the seed matters


def test_run_command_prints_and_stores(tmp_path):
    out = tmp_path / "runs"
    result = runner.invoke(
        app, ["run", "--loss", "ohem", "--ohem-k", "64", "--ohem-ratio", "3", *TINY, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "ohem" in result.output and "status" in result.output
    (record,) = Store(out).records()
    assert record["ohem_k"] == 64 and record["ohem_ratio"] == 3.0 and record["status"] == "ok"
    assert record["torch_version"] == torch.__version__ and record["flx_version"]


# ------------------------------------------------------------------------------------------------------------
# crash safety and concurrency (real processes)
# ------------------------------------------------------------------------------------------------------------
def _count(db):
    """(rows, distinct keys) of a store that exists, after an integrity check; (0, 0) before its table does."""
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
            return (0, 0)
        return con.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM runs").fetchone()
    finally:
        con.close()


def _start_sweep_and_wait(args, db, at_least: int, stdout):
    """Start a sweep in a session of its own (so a signal reaches it and its workers) and return once the
    store holds ``at_least`` runs (or after two minutes)."""
    proc = subprocess.Popen(
        args,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(),
        start_new_session=True,
        # as from a terminal: a test runner started in the background (`cmd &` in a script) ignores SIGINT, and
        # a child would inherit that and never see the Ctrl-C this test sends
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (db.exists() and _count(db)[0] >= at_least):
        time.sleep(0.05)
    return proc


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    out = tmp_path / "runs"
    args = flx_cmd(
        "sweep",
        "--loss",
        "ce,focal,poly1",
        "--gamma",
        "0,1,2",
        "--seeds",
        "3",
        *TINY,
        "--workers",
        "2",
        "--out",
        str(out),
    )
    expected = 3 + 9 + 3
    db = out / "runs.sqlite"
    proc = _start_sweep_and_wait(args, db, at_least=3, stdout=subprocess.DEVNULL)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-way
    proc.wait()
    stored, distinct = _count(db)
    assert 3 <= stored < expected and stored == distinct
    finish = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert finish.returncode == 0, finish.stderr
    assert f"{stored} already done" in finish.stdout
    assert _count(db) == (expected, expected)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_finished_runs(tmp_path):
    out = tmp_path / "runs"
    args = flx_cmd(
        "sweep",
        "--loss",
        "ce,focal",
        "--gamma",
        "0,1,2,5",
        "--seeds",
        "10",  # 50 runs: the sweep is still busy when the signal lands, even on a loaded machine
        *TINY,
        "--epochs",
        "6",
        "--workers",
        "2",
        "--out",
        str(out),
    )
    db = out / "runs.sqlite"
    proc = _start_sweep_and_wait(args, db, at_least=2, stdout=subprocess.PIPE)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole foreground group
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    stored = _count(db)[0]
    assert stored < 50 and f"interrupted (SIGINT): {stored} of 50 runs are in the store" in output
    assert "Traceback" not in output


def test_store_reads_a_store_whose_table_is_not_created_yet(tmp_path):
    sqlite3.connect(tmp_path / "runs.sqlite").close()  # the file exists, its table does not (yet)
    store = Store(tmp_path)
    assert store.statuses() == {} and store.records() == [] and store.done() == set()


def test_store_keeps_final_records_and_retries_failed(tmp_path):
    store = Store(tmp_path)
    assert store.put({"key": "k1", "status": "failed", "ap": float("nan")})
    assert store.done() == set()
    assert store.put({"key": "k1", "status": "ok", "ap": 0.5})
    assert not store.put({"key": "k1", "status": "ok", "ap": 0.9})  # final: unchanged
    (record,) = store.records()
    assert record["ap"] == 0.5 and store.done() == {"k1"}


def test_expand_collapses_inapplicable_parameters():
    configs = expand(Config(**TINY_CONFIG), [{"loss": ["ce", "focal"], "gamma": [0.0, 1.0, 2.0]}], range(2))
    assert len(configs) == 2 + 6
    assert Config(loss="ce", gamma=5.0).config_key() == Config(loss="ce").config_key()
    assert Config(loss="focal", gamma=2).key("d") == Config(loss="focal").key(
        "d"
    )  # 2 is the default, int or float
    assert Config(loss="focal", gamma=1).key("d") != Config(loss="focal").key("d")


# ------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------
def test_synthetic_default_ratio_and_positives():
    t0 = time.perf_counter()
    config = Config().normalized()
    train, test, _ = load_synthetic(**dict(config.data_params()))
    elapsed = time.perf_counter() - t0
    for split in (train, test):
        n_pos = split.n_pos
        assert n_pos >= 500
        assert (len(split) - n_pos) / n_pos == pytest.approx(1000, rel=0.01)
    assert elapsed < 10  # generation is fast (about 0.3 s here); a loose bound for slow CI machines
    again, _, _ = load_synthetic(**dict(config.data_params()))
    assert torch.equal(again.x, train.x)


def _write_fake_cifar(root, per_class=30):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n_per_class):
        labels = np.repeat(np.arange(10), n_per_class)
        return {"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), "labels": labels.tolist()}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_class), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(per_class), f)
    return root


def test_cifar_cat_dog_filter_and_imbalance(tmp_path):
    root = _write_fake_cifar(tmp_path)
    train, test, _ = load_cifar_catsdogs(ratio=10, positive="dog", data_dir=str(root))
    assert test.x.shape == (60, 3, 32, 32) and test.n_pos == 30  # natural balance: 30 cats, 30 dogs
    # the 150 train cats less validation (10%); without a backbone to train, the pool (50%) joins the training
    n_cats = 5 * 30 - 15
    assert len(train) - train.n_pos == n_cats and train.n_pos == round(n_cats / 10)
    swapped, _, _ = load_cifar_catsdogs(ratio=10, positive="cat", data_dir=str(root))
    assert swapped.n_pos == round(n_cats / 10) and len(swapped) - swapped.n_pos == n_cats


def test_cifar_missing_or_malformed(tmp_path):
    with pytest.raises(DataError, match=r"CIFAR-10 not found at .*flx download cifar10"):
        load_cifar_catsdogs(ratio=10, positive="dog", data_dir=str(tmp_path))
    root = _write_fake_cifar(tmp_path / "c")
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch is missing or malformed"):
        load_cifar_catsdogs(ratio=10, positive="dog", data_dir=str(root))


def _write_images(folder, n=20, layout="flat", size=24):
    rng = np.random.default_rng(1)
    for cls in ("cat", "dog"):
        for i in range(n):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            if layout == "flat":
                path = folder / f"{cls}.{i}.jpg"
            else:
                path = folder / f"{cls}s" / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)


@pytest.mark.parametrize("layout", ["flat", "per_class"])
def test_folder_loader_layouts_split_and_cache(tmp_path, layout):
    root = tmp_path / "data"
    target = root / "dogs-vs-cats" / "train" if layout == "flat" else root
    _write_images(target, layout=layout)
    train, test, _ = load_catsdogs(ratio=4, image_size=16, positive="dog", data_dir=str(root))
    assert train.x.shape[1:] == (3, 16, 16) and train.x.dtype == torch.uint8
    assert test.n_pos == 4 and len(test) == 8  # 20% of each class, balanced
    # of 16 train images per class: 2 to validation, 14 to the heads (no backbone trains on the pool: it joins
    # them); dogs cut to 14 / 4
    assert len(train) - train.n_pos == 14 and train.n_pos == 4
    assert list(Path(os.environ["FLX_CACHE_DIR"]).glob("images-16-*.pt")), "decoded images are cached"
    again, _, _ = load_catsdogs(ratio=4, image_size=16, positive="dog", data_dir=str(root))
    assert torch.equal(again.x, train.x)


def test_catsdogs_run_through_cli_on_generated_images(tmp_path):
    root = tmp_path / "data"
    _write_images(root / "train")
    out = tmp_path / "runs"
    result = runner.invoke(
        app,
        [
            "run",
            "--dataset",
            "catsdogs",
            "--data-dir",
            str(root),
            "--image-size",
            "16",
            "--ratio",
            "2",
            "--backbone",
            "scratch",
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    (record,) = Store(out).records()
    assert record["model"] == "cnn" and record["status"] == "ok" and record["dim"] is None


def test_missing_image_folder_message(tmp_path):
    with pytest.raises(DataError, match=r"no cat/dog images found \(looked in .*FLX_DATA_DIR"):
        load_catsdogs(ratio=10, image_size=16, positive="dog", data_dir=str(tmp_path))


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "dogs-vs-cats" / "train").is_dir(), reason="../shared/data is absent")
def test_shared_dogs_vs_cats_integration():
    train, test, _ = load_catsdogs(ratio=10, image_size=16, positive="dog", data_dir=str(SHARED_DATA))
    assert len(test) == 4000 and test.n_pos == 2000
    # 8,000 train images per class: 800 to validation; with no backbone to train, the 4,000 of the backbone
    # pool stay with the heads, so 7,200 negatives and 720 positives at 1:10
    assert len(train) - train.n_pos == 7200 and train.n_pos == 720
    record = run(
        Config(dataset="catsdogs", image_size=16, steps=40, batch_size=256, loss="focal", backbone="scratch"),
        data_dir=str(SHARED_DATA),
    )
    assert record["status"] == "ok" and record["ap"] > 0.5  # real photos carry signal even after 40 steps


# ------------------------------------------------------------------------------------------------------------
# bad input: one line, exit code 2, store untouched
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,needle",
    [
        (["--loss", "hinge"], "--loss got 'hinge'; accepted: one of ce, balanced_ce"),
        (["--loss", ""], "--loss got ''"),
        (["--dataset", "mnist"], "--dataset got 'mnist'; accepted: one of synthetic, catsdogs"),
        (["--gamma", "-1"], "--gamma got -1; accepted: a number in [0, 10]"),
        (["--alpha", "1.5"], "--alpha got 1.5; accepted: a number in [0, 1]"),
        (["--gamma", ","], "--gamma got ','"),
        (["--lr", "0"], "--lr got 0; accepted: a number in (0, 1e+06]"),
        (["--dataset", "catsdogs"], "the catsdogs data set needs image files"),
        (
            ["--dataset", "catsdogs", "--data-dir", "/nonexistent/flx"],
            "data directory /nonexistent/flx does not exist",
        ),
        (["experiments/nope.toml"], "spec file experiments/nope.toml does not exist"),
    ],
)
def test_bad_sweep_input(tmp_path, args, needle):
    out = tmp_path / "runs"
    proc = subprocess.run(
        flx_cmd("sweep", *args, "--out", str(out)),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and needle in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "content,needle",
    [
        ("seeds = [", "is not valid TOML"),
        ("colour = 1", "unknown key(s) ['colour']"),
        ("[[grid]]\nloss = []", "[[grid]] loss is an empty list"),
        ("[[grid]]\nflavour = [1]", "unknown config field 'flavour'"),
        ("seeds = 0", "seeds got 0; accepted: an integer in [1, 100000]"),
        ("[config]\ngamma = -2\nloss = 'focal'", "[config] gamma got -2; accepted: a number in [0, 10]"),
        ("", "is empty"),
        (
            "[report]\nfigures = ['ap_vs_gamma']",
            "[report] figures got ['ap_vs_gamma']; accepted: a list of figures",
        ),
        ("[report]\ncolour = 1", "[report] has unknown key(s) ['colour']"),
        ("[report]\npaper = 'table9'", "[report] paper got 'table9'"),
    ],
)
def test_malformed_spec(tmp_path, content, needle):
    spec = tmp_path / "bad.toml"
    spec.write_text(content)
    out = tmp_path / "runs"
    proc = subprocess.run(
        flx_cmd("sweep", str(spec), "--out", str(out)), capture_output=True, text=True, env=subprocess_env()
    )
    assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
