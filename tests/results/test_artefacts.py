"""Every run keeps its curves and test scores; figures and metrics come from stored runs alone."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from flx.cli import app
from flx.engine.run import run
from flx.experiment.config import Config
from flx.results.artefacts import decode, encode, logit_histogram, scores_artefact, stored_scores
from flx.results.record import RunRecord
from flx.results.store import Store
from tests.data.test_yourdata import make_table

runner = CliRunner()


def test_encode_decode_is_exact_for_every_dtype():
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.normal(size=1001).astype(np.float32) * 1e4,
        "f64": rng.normal(size=(3, 7)),
        "f16": rng.normal(size=5).astype(np.float16),
        "i32": rng.integers(-5, 5, 17).astype(np.int32),
        "u8": rng.integers(0, 255, (2, 3, 4, 4)).astype(np.uint8),
        "empty": np.zeros((0, 4), np.float32),
        "special": np.array([np.nan, np.inf, -np.inf, -0.0], np.float32),
    }
    back = decode(encode(arrays))
    assert set(back) == set(arrays)
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape
        assert back[name].tobytes() == a.tobytes()  # bit for bit (NaN and -0.0 included)


def test_a_run_stores_curves_and_scores_that_give_its_metrics_back():
    config = Config(loss="focal", n_samples=3000, ratio=20, dim=4, epochs=3, batch_size=256)
    record = run(config)
    assert record["status"] == "ok"
    curve, train_curve = json.loads(record["curve"]), json.loads(record["train_curve"])
    assert [c[0] for c in curve] == [c[0] for c in train_curve] == [1, 2, 3]  # one point per epoch
    assert all(np.isfinite(c[1]) and c[1] > 0 for c in train_curve)
    y, scores = stored_scores(decode(record.artefacts["test"]))
    assert len(y) == record["n_test_pos"] + record["n_test_neg"] and y.sum() == record["n_test_pos"]
    assert average_precision_score(y, scores) == record["ap"]  # exactly what training measured
    assert len(record.artefacts["test"]) < 4 * len(y)  # compressed: below one float32 per example


def test_scores_artefact_keeps_labels_of_any_length():
    for n in (1, 7, 8, 9, 1000):
        y = np.arange(n) % 3 == 0
        back_y, scores = stored_scores(decode(scores_artefact(np.linspace(-3, 3, n), y)))
        assert back_y.tolist() == y.astype(np.float32).tolist() and len(scores) == n


def test_detection_artefacts_give_coco_ap_back():
    from flx.data.shapes import render
    from flx.engine.coco import coco_metrics, detection_artefacts, stored_detections

    split = render(5, 32, seed=3)
    g = torch.Generator().manual_seed(0)
    dets = []
    for boxes in split.boxes:  # the truth jittered, plus a false positive per image
        noisy = boxes + torch.randn(boxes.shape, generator=g)
        fake = torch.tensor([[1.0, 1.0, 9.0, 9.0]])
        dets.append({"boxes": torch.cat([noisy, fake]), "scores": torch.rand(len(boxes) + 1, generator=g)})
    logits, labels = torch.randn(500, generator=g) * 5, (torch.rand(500, generator=g) < 0.1).long()
    stored = detection_artefacts(split, dets, logits, labels)
    truth, back = stored_detections(decode(stored["detections"]))
    assert coco_metrics(truth, back) == coco_metrics(split.boxes, dets)
    assert decode(stored["detections"])["images"].shape == (5, 3, 32, 32)  # fewer than 6 images: all of them
    hist = decode(stored["anchors"])
    assert hist["counts"].sum(1).tolist() == [int((labels == 0).sum()), int((labels == 1).sum())]


def test_logit_histogram_puts_extreme_logits_in_the_end_bins():
    hist = logit_histogram(np.array([-1e4, 0.0, 1e4]), np.array([0, 0, 1]))
    assert hist["counts"][0, 0] == 1 and hist["counts"][1, -1] == 1 and hist["counts"].sum() == 3


SPEC = """
name = "yours"
seeds = 2
[config]
steps = 60
eval_every = 20
label = "class"
[[grid]]
loss = ["focal"]
gamma = [0, 0.5, 2]
alpha = [0.25]
[report]
figures = ["pr_curves", "loss_cdf", "learning_curves"]
"""


def test_a_report_from_stored_runs_alone_reproduces_the_figures(tmp_path):
    data = tmp_path / "data" / "transactions.csv"
    data.parent.mkdir()
    make_table(n=800).to_csv(data, index=False)
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "runs"
    result = runner.invoke(
        app, ["sweep", str(spec), "--data", str(data), "--out", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert len(Store(out).artefact_sizes()) == 6
    first = runner.invoke(app, ["report", str(out), "--to", str(tmp_path / "a")])
    assert first.exit_code == 0 and "note" not in first.output, first.output
    data.unlink()
    data.parent.rmdir()  # the data is gone: the report needs only the store
    second = runner.invoke(app, ["report", str(out), "--to", str(tmp_path / "b")])
    assert second.exit_code == 0 and "note" not in second.output, second.output
    for name in ("pr_curves.png", "loss_cdf.png", "learning_curves.png", "table.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # the records alone (runs.csv, no store): the table, and a note for each figure that needs scores
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("runs.csv", "spec.toml"):
        (alone / name).write_bytes(
            (out / name).read_bytes() if name == "spec.toml" else (tmp_path / "a" / name).read_bytes()
        )
    third = runner.invoke(app, ["report", str(alone)])
    assert third.exit_code == 0, third.output
    assert "figure pr_curves left out" in third.output and "figure loss_cdf left out" in third.output
    assert (alone / "table.md").exists() and (alone / "learning_curves.png").exists()
    assert "Traceback" not in third.output


def test_runs_show_prints_the_curves_and_artefact_sizes(tmp_path):
    out = tmp_path / "runs"
    config = ["--n-samples", "3000", "--ratio", "20", "--dim", "4", "--epochs", "2", "--batch-size", "256"]
    result = runner.invoke(app, ["run", *config, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "artefacts" in result.output and "KB" in result.output
    key = Store(out).to_dataframe()["key"][0]
    shown = runner.invoke(app, ["runs", "show", key[:8], str(out)])
    assert shown.exit_code == 0, shown.output
    assert "training loss by step: 1:" in shown.output and "validation AP by step: 1:" in shown.output
    assert "test:" in shown.output and "KB" in shown.output


@pytest.mark.parametrize("status", ["diverged"])
def test_a_failed_put_of_a_final_run_keeps_its_artefacts(tmp_path, status):
    store = Store(tmp_path)
    record = RunRecord({"key": "k1", "status": status}, artefacts={"test": b"first"})
    assert store.put(record)
    assert not store.put(RunRecord({"key": "k1", "status": "ok"}, artefacts={"test": b"second"}))
    assert store.artefacts("k1") == {"test": b"first"}
    assert "artefacts" not in store.records()[0]  # blobs live beside the JSON record, not in it
