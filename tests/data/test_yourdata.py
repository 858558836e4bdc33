"""Your own data: CSV / parquet tables and image folders with any class names, end to end, and every kind of
bad data refused in one line."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from flx.cli import app
from flx.data.tables import load_table
from flx.errors import ConfigError, DataError
from flx.experiment.config import Config
from flx.results.store import Store

runner = CliRunner()
TABLE_RUN = ["--steps", "40", "--eval-every", "20", "--workers", "1"]


def make_table(n: int = 1200, rare: float = 0.08, seed: int = 0) -> pd.DataFrame:
    """Three numeric features, a text label (minority 'fraud') and an integer-coded column."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < rare
    x = rng.normal(size=(n, 3)) + fraud[:, None] * 1.5
    df = pd.DataFrame(x, columns=["amount", "age", "score"])
    df["n_items"] = rng.integers(1, 5, n)
    df["class"] = np.where(fraud, "fraud", "ok")
    return df


def make_folder(root, counts: dict, size: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            pixels = np.clip(rng.normal(70 + 90 * i, 30, (size, size, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{j}.png")
    return root


def sweep(*args):
    return runner.invoke(app, ["sweep", *args])


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_table_runs_end_to_end_and_its_key_follows_its_content(tmp_path, suffix):
    path = tmp_path / f"transactions.{suffix}"
    df = make_table()
    df.to_csv(path, index=False) if suffix == "csv" else df.to_parquet(path)
    out = tmp_path / "runs"
    result = sweep(
        "--data", str(path), "--label", "class", "--loss", "ce,focal", "--out", str(out), *TABLE_RUN
    )
    assert result.exit_code == 0, result.output
    assert "data: table" in result.output and "fraud" in result.output
    runs = Store(out).to_dataframe()
    assert len(runs) == 2 and set(runs["status"]) == {"ok"}
    assert set(runs["dataset"]) == {"table"} and set(runs["data_classes"]) == {"ok/fraud"}
    assert (runs["n_train_pos"] < runs["n_train_neg"] / 5).all()  # the rare class is the positive one
    assert runs["ap"].between(0, 1).all() and (runs["ap"] > 0.3).all()  # learnable: far above the base rate
    # the same content under another name and folder is the same run; other content is not
    moved = tmp_path / "elsewhere" / f"renamed.{suffix}"
    moved.parent.mkdir()
    moved.write_bytes(path.read_bytes())
    again = sweep(
        "--data", str(moved), "--label", "class", "--loss", "ce,focal", "--out", str(out), *TABLE_RUN
    )
    assert again.exit_code == 0 and "0 to run" in again.output, again.output
    changed = make_table(seed=1)
    changed.to_csv(path, index=False) if suffix == "csv" else changed.to_parquet(path)
    dry = sweep(
        "--data", str(path), "--label", "class", "--loss", "ce", "--out", str(out), "--dry-run", *TABLE_RUN
    )
    assert dry.exit_code == 0 and "1 to run" in dry.output, dry.output


def test_table_splits_given_by_a_column_or_a_test_file(tmp_path):
    df = make_table(n=1000)
    df["part"] = np.where(np.arange(1000) < 700, "train", np.where(np.arange(1000) < 800, "val", "test"))
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    train, test, meta = load_table(str(path), "class", split_column="part")
    assert (len(train), len(meta["val"]), len(test)) == (700, 100, 200)
    assert meta["features"] == ["amount", "age", "score", "n_items"]  # the split column is not a feature
    assert "given" in meta["split"]
    # features are standardized with the training rows' statistics
    assert train.x.mean(0).abs().max() < 1e-5 and (train.x.std(0, unbiased=False) - 1).abs().max() < 1e-4
    df.iloc[:800].drop(columns="part").to_csv(tmp_path / "a.csv", index=False)
    df.iloc[800:].drop(columns="part").to_csv(tmp_path / "b.csv", index=False)
    first, test, meta = load_table(str(tmp_path / "a.csv"), "class", test=str(tmp_path / "b.csv"))
    assert len(test) == 200 and len(first) + len(meta["val"]) == 800
    # positive given explicitly: the other class becomes the positive one
    train2, _, meta2 = load_table(str(path), "class", positive="ok", split_column="part")
    assert meta2["classes"] == ("fraud", "ok") and train2.n_pos == train.n_neg


def test_numeric_labels_and_positive_values_match(tmp_path):
    df = make_table()
    df["class"] = (df["class"] == "fraud").astype(float)  # 0.0 / 1.0
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    train, _, meta = load_table(str(path), "class", positive="1")
    assert meta["classes"] == ("0", "1") and train.n_pos < train.n_neg


@pytest.mark.parametrize(
    "change, args, message",
    [
        (
            None,
            dict(label="klass"),
            "--label 'klass' is not a column; columns: amount, age, score, n_items, class",
        ),
        (None, dict(label="class", positive="nope"), "--positive 'nope' is not a value of 'class'"),
        ("one_class", dict(label="class"), "holds one class ('ok'); two are needed"),
        ("infinite", dict(label="class"), "infinite values in feature column(s) 'age'"),
        ("bad_split", dict(label="class", split_column="part"), "accepted values: train, val"),
        (None, dict(label=None), "give --label, the column holding the class"),
        ("header_only", dict(label="class"), "no rows (only a header: amount, age, score, n_items, class)"),
        ("continuous", dict(label="class"), "holds 1200 distinct non-integer numbers"),
    ],
)
def test_bad_tables_are_one_line_errors_naming_the_file(tmp_path, change, args, message):
    """Issue 22, item 8 adds a header-only table (an IndexError traceback before) and a continuous label column
    (misread before as a split holding one class)."""
    df = make_table()
    if change == "header_only":
        df = df.iloc[:0]
    elif change == "continuous":
        df["class"] = np.random.default_rng(0).random(len(df))
    elif change == "one_class":
        df["class"] = "ok"
    elif change == "infinite":
        df.loc[:2, "age"] = np.inf
    elif change == "bad_split":
        df["part"] = "training"
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="t.csv") as err:
        load_table(str(path), **args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_table_files_are_refused_by_the_cli_with_exit_2(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "notes.txt").write_text("a,b\n1,2\n")
    cases = [
        (["--data", str(tmp_path / "missing.csv"), "--label", "a"], "no such file or folder"),
        (["--data", str(tmp_path / "notes.txt"), "--label", "a"], "not a table flx reads"),
        (["--data", str(tmp_path / "broken.parquet"), "--label", "a"], "cannot be read as parquet"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["run", *args, "--no-store", "--steps", "5"])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_an_image_folder_with_any_class_names_runs_end_to_end(tmp_path):
    root = make_folder(tmp_path / "scans", {"healthy tissue": 60, "lesion": 16})
    out = tmp_path / "runs"
    args = ["--data", str(root), "--backbone", "scratch", "--image-size", "12", "--loss", "ce,focal"]
    result = sweep(*args, "--steps", "12", "--eval-every", "6", "--out", str(out), "--workers", "1")
    assert result.exit_code == 0, result.output
    runs = Store(out).to_dataframe()
    assert set(runs["status"]) == {"ok"} and set(runs["dataset"]) == {"images"}
    assert set(runs["data_classes"]) == {"healthy tissue/lesion"}  # the rarer class is positive by default
    assert (runs["n_test_pos"] + runs["n_test_neg"] == 15).all()  # 80/20 per class: 12 + 3
    # issue 22, item 17: a log (not a terminal) gets a progress line at each quarter of a long stage
    assert "decoding images: 76 of 76 images (100%)" in result.output


def test_an_image_folder_with_its_own_split_and_a_chosen_positive(tmp_path):
    from flx.data.images import load_folder

    for part, n in (("train", 20), ("test", 6)):
        make_folder(tmp_path / "d" / part, {"a": n, "b": n, "c": n // 2})
    train, test, meta = load_folder(str(tmp_path / "d"), 12, positive="c", backbone="scratch")
    assert meta["classes"] == ("not c", "c") and "given (train/ + test/)" == meta["split"]
    assert len(test) == 15 and test.n_pos == 3
    with pytest.raises(DataError, match="'z' is not a class folder with images; classes: a, b, c"):
        load_folder(str(tmp_path / "d"), 12, positive="z", backbone="scratch")
    make_folder(tmp_path / "one", {"only": 5})
    with pytest.raises(DataError, match="images of 1 class"):
        load_folder(str(tmp_path / "one"), 12, backbone="scratch")


def test_data_picks_the_data_set_and_paths_stay_out_of_the_key(tmp_path):
    (tmp_path / "f").mkdir()
    table = Config(data=str(tmp_path / "x.csv"), label="y").normalized()
    folder = Config(data=str(tmp_path / "f")).normalized()
    assert (table.dataset, folder.dataset) == ("table", "images")
    assert table.data == str(tmp_path / "x.csv") and "data" not in table.identity()
    with pytest.raises(ConfigError, match="dataset table needs --label"):
        Config(dataset="table", data="x.csv").normalized()
    with pytest.raises(ConfigError, match="positive got 'lesion' for catsdogs; accepted: one of dog, cat"):
        Config(dataset="catsdogs", positive="lesion").normalized()
    with pytest.raises(ConfigError, match="--data is your own data"):
        Config(dataset="catsdogs", data=str(tmp_path / "f")).normalized()


def test_a_sweep_over_two_tables(tmp_path):
    for seed in (0, 1):
        make_table(n=400, seed=seed).to_csv(tmp_path / f"t{seed}.csv", index=False)
    both = f"{tmp_path / 't0.csv'},{tmp_path / 't1.csv'}"
    result = sweep(
        "--data", both, "--label", "class", "--loss", "ce", "--dry-run", "--out", str(tmp_path / "r")
    )
    assert result.exit_code == 0, result.output
    assert "2 runs planned" in result.output and result.output.count("data: table") == 2


def test_one_stratified_splitter_cuts_each_class_into_disjoint_parts():
    """flx.data.base.stratified is the one splitter behind split_off (tables, registered data, folders) and
    carve (image sets): every index lands in exactly one part, and each part takes its share of each class."""
    import torch

    from flx.data.base import carve, split_off, stratified

    y = torch.tensor([0.0] * 40 + [1.0] * 7)
    parts = stratified(y, lambda n: [n // 4, 1], torch.Generator().manual_seed(3))
    assert len(parts) == 3 and sorted(torch.cat(parts).tolist()) == list(range(len(y)))
    positives, negatives = [int(y[p].sum()) for p in parts], [int((1 - y[p]).sum()) for p in parts]
    assert positives == [1, 1, 5] and negatives == [10, 1, 29]
    rest, part = split_off(y, 0.01, torch.Generator().manual_seed(0))  # at least one of each class
    assert int(y[part].sum()) == 1 and int((1 - y[part]).sum()) == 1 and len(rest) == len(y) - 2
    cut = carve(y, torch.Generator().manual_seed(0), "x")
    pool = cut["pool"]  # balanced: half the smaller class of each
    assert int(y[pool].sum()) == int((1 - y[pool]).sum()) == 3


def test_a_log_gets_progress_lines_during_a_long_stage():
    """Issue 22, item 17: in a log (not a terminal) the in-domain backbone's 12 epochs printed one line at the
    start and then nothing for minutes; now a line at each quarter."""
    import io

    from rich.console import Console

    from flx.cli.views import SweepView

    buffer = io.StringIO()
    with SweepView(Console(file=buffer, width=120)) as view:
        for epoch in range(1, 13):
            view.event("decode", done=epoch, total=12, stage="training the in-domain backbone")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "training the in-domain backbone: 12 epochs (cached for later runs)..."
    assert lines[1:] == [
        f"training the in-domain backbone: {e} of 12 epochs ({25 * q}%)"
        for q, e in enumerate((3, 6, 9, 12), 1)
    ]


def test_a_dry_run_on_a_new_image_folder_decodes_nothing_and_plans_the_real_keys(tmp_path, monkeypatch):
    """Issue 22, item 10: --dry-run lists and fingerprints an image folder (seconds), decoding no image and
    training no backbone, and plans the same run keys and split counts as the sweep that then runs."""
    import flx.data.features
    import flx.data.images
    from flx.sweep.worker import prepare

    folder = make_folder(tmp_path / "pets", {"cat": 30, "dog": 12})
    monkeypatch.setenv("FLX_CACHE_DIR", str(tmp_path / "cache"))
    configs = [
        Config(dataset="images", data=str(folder), backbone=b, image_size=12, loss="ce", model=m)
        for b, m in (("indomain", "mlp"), ("scratch", "cnn"))
    ]

    def refuse(*_, **__):
        raise AssertionError("a dry run decoded images or trained a backbone")

    with monkeypatch.context() as m:
        m.setattr(flx.data.images, "decode_images", refuse)
        m.setattr(flx.data.features, "featurize", refuse)
        planned = prepare(configs, plan=True)
        dry = sweep("--set", "dataset=images", "--data", str(folder), "--image-size", "12", "--dry-run",
                    "--out", str(tmp_path / "r"))  # fmt: skip
    assert dry.exit_code == 0 and "not decoded" in dry.output and "1 to run" in dry.output, dry.output
    real = prepare(configs)
    assert [t.key for t in planned] == [t.key for t in real]
    counts = ("n_train_neg", "n_train_pos", "n_test_neg", "n_test_pos")
    for p, r in zip(planned, real, strict=True):
        assert [p.data[k] for k in counts] == [r.data[k] for k in counts]


def test_a_table_as_found_in_the_wild_is_taken_as_it_comes(tmp_path):
    """Issue 30: a `;`-separated CSV with an ID column, text columns, blanks and a Yes/No label trains with no
    preparation by hand: the ID is dropped, text one-hot encoded, blanks imputed with an indicator (all fitted on
    the training split), and the record says so. A complete numeric table is taken untouched."""
    import torch

    from flx.data.prepare import Preparation

    rng = np.random.default_rng(0)
    n = 400
    churn = rng.random(n) < 0.15
    df = pd.DataFrame(
        {
            "customerID": [f"{i:04d}-ABCD" for i in range(n)],
            "contract": rng.choice(["Month-to-month", "One year", "Two year"], n),
            "tenure": rng.integers(0, 72, n),
            "charges": np.where(rng.random(n) < 0.05, np.nan, rng.normal(70, 20, n) + 30 * churn),
            "payment": np.where(rng.random(n) < 0.03, None, rng.choice(["card", "check"], n)),
            "Churn": np.where(churn, "Yes", "No"),
        }
    )
    path = tmp_path / "churn.csv"
    df.to_csv(path, sep=";", index=False)
    train, test, meta = load_table(str(path), label="Churn", positive="yes")
    assert meta["classes"] == ("No", "Yes") and len(train) + len(meta["val"]) + len(test) == n
    prep = meta["extra"]["data_prep"]
    assert "dropped customerID (named like an id)" in prep
    assert "one-hot encoded contract, payment" in prep and "imputed" in prep and "charges (" in prep
    assert torch.isfinite(train.x).all() and train.x.shape[1] == 2 + 1 + 3 + 3  # tenure, charges + indicator
    numeric = make_table()
    numeric.to_csv(tmp_path / "n.csv", index=False)
    _, _, plain = load_table(str(tmp_path / "n.csv"), label="class")
    assert "extra" not in plain  # nothing done, nothing said
    assert Preparation.fit(numeric, ["amount", "age"], {}, "n").transformer is None
