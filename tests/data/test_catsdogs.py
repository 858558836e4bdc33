"""Cats vs dogs v2: frozen features (in-domain, pretrained, scratch), the detached focal weight, the new
metrics, equivalence claims, and every folder layout through the CLI."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from flx.cli import app
from flx.data import features as F
from flx.data.images import load_catsdogs
from flx.data.load import load
from flx.errors import ConfigError, DataError
from flx.experiment.config import Config
from flx.experiment.metrics import classification_metrics, expected_calibration_error, shift_prior
from flx.experiment.registries import get_loss
from flx.experiment.spec import validate_spec
from flx.report.claims import judge
from flx.results.store import Store
from tests.sweep.test_faults import _flx, _one_line_error

runner = CliRunner()
STEPS = ["--steps", "20", "--eval-every", "10", "--batch-size", "8", "--image-size", "16"]


def _images(folder, layout="flat", n=12, size=20, names=("cat", "dog")):
    """n random images per class: flat Kaggle names (cat.N.jpg) or one folder per class (given names)."""
    rng = np.random.default_rng(len(str(folder)))
    for cls, name in zip(("cat", "dog"), names, strict=True):
        for i in range(n):
            if layout == "flat":
                path = folder / f"{cls}.{i}.jpg"
            else:
                path = folder / name / f"img_{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            # photos of any size: every third image is larger and not square
            shape = (size + 7, size + 13, 3) if i % 3 == 0 else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def _load(root, **kw):
    load.cache_clear()
    params = {"ratio": 2.0, "image_size": 16, "positive": "dog", "backbone": "indomain", "weights": None}
    return load_catsdogs(**(params | kw), data_dir=str(root))


# ------------------------------------------------------------------------------------------------------------
# frozen features
# ------------------------------------------------------------------------------------------------------------
def test_features_are_computed_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("FLX_CACHE_DIR", str(tmp_path / "cache"))
    _images(tmp_path / "data" / "train")
    calls = {"train": 0, "extract": 0}
    train_indomain, extract = F.train_indomain, F.extract

    def counting_train(*a, **k):
        calls["train"] += 1
        return train_indomain(*a, **k)

    def counting_extract(*a, **k):
        calls["extract"] += 1
        return extract(*a, **k)

    monkeypatch.setattr(F, "train_indomain", counting_train)
    monkeypatch.setattr(F, "extract", counting_extract)
    train, test, meta = _load(tmp_path / "data")
    assert calls == {"train": 1, "extract": 1}
    assert (
        train.x.dtype == torch.float32 and train.x.dim() == 2 and train.x.shape[1] == 4 * F.INDOMAIN["width"]
    )
    assert len(list((tmp_path / "cache" / "features").glob("indomain-*.pt"))) == 1
    # a second run, at another ratio, in a fresh process's state: read from the cache, nothing recomputed
    again, test2, meta2 = _load(tmp_path / "data", ratio=4.0)
    assert calls == {"train": 1, "extract": 1}
    assert torch.equal(test2.x, test.x) and meta2["extra"] == meta["extra"]
    assert again.n_pos < train.n_pos and again.n_neg == train.n_neg
    # a different backbone is a different cache file
    _load(tmp_path / "data", backbone="resnet18", weights="random")
    assert calls == {"train": 1, "extract": 2}


def test_indomain_pool_is_disjoint_from_the_heads_images(tmp_path):
    _images(tmp_path / "data" / "train", n=20)
    train, test, meta = _load(tmp_path / "data")
    members = {k: set(v) for k, v in meta["members"].items()}
    assert set(members) == {"pool", "val", "train", "test"}
    for a in members:
        for b in members:
            if a < b:
                assert not members[a] & members[b], f"{a} and {b} share files"
    # file identities: the pool is balanced, from the train split only, and the heads never see it
    pool = sorted(members["pool"])
    assert sum(p.split("/")[-1].startswith("cat.") for p in pool) == len(pool) / 2 == 8  # 50% of 16 per class
    assert len(members["train"]) == len(train) and len(members["test"]) == len(test) == 8
    assert len(members["val"]) == len(meta["val"])
    # the pool is the same whatever the ratio (one backbone serves every ratio)
    _, _, other = _load(tmp_path / "data", ratio=5.0)
    assert set(other["members"]["pool"]) == members["pool"]
    # a backbone that does not train on the pool gives it to the heads; validation stays the same (issue 22, 16)
    _, _, full = _load(tmp_path / "data", ratio=None)
    scratch, _, free = _load(tmp_path / "data", ratio=None, backbone="scratch")
    assert "pool" not in free["members"] and set(free["members"]["val"]) == set(full["members"]["val"])
    assert set(free["members"]["train"]) == set(full["members"]["train"]) | set(full["members"]["pool"])
    assert len(scratch) == len(free["members"]["train"])


def test_pretrained_backbone_builds_and_extracts_with_random_weights(tmp_path):
    _images(tmp_path / "data" / "train")
    train, test, meta = _load(tmp_path / "data", backbone="resnet18", weights="random")
    assert train.x.shape[1] == 512 and torch.isfinite(train.x).all() and test.x.shape == (4, 512)
    assert math.isnan(meta["extra"]["backbone_test_ap"])
    # a state dict from a file: the same model's weights load; another model's are refused in one line
    path = tmp_path / "r18.pt"
    torch.save(F.pretrained_body("resnet18", "random").state_dict() | _fc_state(), path)
    from_file, _, _ = _load(tmp_path / "data", backbone="resnet18", weights=str(path))
    assert from_file.x.shape == train.x.shape
    bad = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(DataError, match=r"cannot load it into torchvision's resnet18"):
        _load(tmp_path / "data", backbone="resnet18", weights=str(bad))


def _fc_state():
    fc = torch.nn.Linear(512, 1000)
    return {"fc.weight": fc.weight.detach(), "fc.bias": fc.bias.detach()}


def test_missing_imagenet_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    _images(tmp_path / "data" / "train")
    with pytest.raises(
        DataError, match=r"ImageNet weights for resnet50 are not in the torch hub cache .*--weights"
    ):
        _load(tmp_path / "data", backbone="resnet50", weights="imagenet")
    with pytest.raises(DataError, match=r"--weights got '/nope.pt': no such file"):
        _load(tmp_path / "data", backbone="resnet18", weights="/nope.pt")


def test_backbone_and_model_must_fit_together():
    assert Config(dataset="catsdogs").normalized().model == "mlp"
    assert Config(dataset="catsdogs", backbone="scratch").normalized().model == "cnn"
    assert Config(dataset="catsdogs", backbone="resnet50").normalized().weights == "imagenet"
    assert Config(dataset="catsdogs", backbone="indomain", weights="random").normalized().weights is None
    with pytest.raises(
        ConfigError, match=r"model got 'cnn' for catsdogs with backbone indomain; accepted: linear"
    ):
        Config(dataset="catsdogs", model="cnn").normalized()
    with pytest.raises(
        ConfigError, match=r"model got 'mlp' for catsdogs with backbone scratch; accepted: cnn"
    ):
        Config(dataset="catsdogs", backbone="scratch", model="mlp").normalized()


# ------------------------------------------------------------------------------------------------------------
# the original experiment's loss
# ------------------------------------------------------------------------------------------------------------
def test_detached_gradient_is_epoch_start_weight_times_ce_gradient():
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), (torch.rand(64) < 0.3).float()
    model = torch.nn.Linear(5, 1)
    spec = get_loss("focal_detached")
    hp = {"alpha": 0.25, "gamma": 2.0}
    with torch.no_grad():
        start = model(x).squeeze(1)
    weight = spec.epoch_weights(start, y, **hp)  # at the epoch's start
    p_t = torch.where(y == 1, torch.sigmoid(start), 1 - torch.sigmoid(start))
    torch.testing.assert_close(weight, 0.25 * (1 - p_t) ** 2)  # the same alpha for both classes
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(3):  # the predictions move on within the epoch; the weight does not
        opt.zero_grad()
        spec(model(x).squeeze(1), y, weight=weight, **hp).backward()
        opt.step()
    logits = model(x).squeeze(1).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(spec(logits, y, weight=weight, **hp), logits)
    ce_grad = (torch.sigmoid(logits) - y) / len(y)  # d mean CE / d logit
    torch.testing.assert_close(grad, weight * ce_grad)
    (focal_grad,) = torch.autograd.grad(get_loss("focal")(logits, y, alpha=0.25, gamma=2.0), logits)
    assert not torch.allclose(grad, focal_grad, atol=1e-4)  # not the focal loss's gradient


def test_detached_weights_are_taken_once_per_epoch(monkeypatch):
    from flx.engine.classification import train_model
    from flx.experiment.registries import LossSpec

    calls = []
    original = LossSpec.epoch_weights
    monkeypatch.setattr(
        LossSpec, "epoch_weights", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    config = Config(
        n_samples=300, dim=4, ratio=5, loss="focal_detached", epochs=3, batch_size=64, seed=1
    ).normalized()
    from flx.data.load import load

    train, _, _ = load(config.dataset, config.data_params(), config.data_seed, None)
    _, done = train_model(config, train)
    assert done.status == "ok" and done.epochs == 3 and len(calls) == 3


# ------------------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------------------
def test_balanced_accuracy_and_accuracy_by_hand():
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.3, 0.1, 0.2, 0.7, 0.4])  # threshold 0.5: TN 5, FP 1, TP 1, FN 1
    m = classification_metrics(y, s)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["balanced_accuracy"] == pytest.approx((5 / 6 + 1 / 2) / 2)


def test_ece_is_measured_after_the_known_prior_shift():
    # trained with positives' share 0.01, tested at 1:1: the odds are multiplied by 0.99 / 0.01 = 99
    y = np.array([0, 0, 1, 1])
    s = np.array([0.01 / 1.01, 0.01 / 1.01, 0.2, 0.2])
    corrected = shift_prior(s, 0.01, 0.5)
    np.testing.assert_allclose(corrected[:2], 0.99 / 1.99)  # odds 0.01 -> 0.99
    odds = 0.2 / 0.8 * 99
    np.testing.assert_allclose(corrected[2:], odds / (1 + odds))
    # by hand: bins 0.497 (two negatives: |0 - 0.497|) and 0.961 (two positives: |1 - 0.961|), half each
    hand = 0.5 * abs(0 - corrected[0]) + 0.5 * abs(1 - corrected[2])
    m = classification_metrics(y, s, train_prior=0.01)
    assert m["ece"] == pytest.approx(hand)
    assert m["ece"] != pytest.approx(expected_calibration_error(y, s))  # uncorrected is another number
    assert shift_prior(s, 0.3, 0.3) == pytest.approx(s)  # no shift, no change


# ------------------------------------------------------------------------------------------------------------
# equivalence claims
# ------------------------------------------------------------------------------------------------------------
def _paired(diffs):
    rows = []
    for seed, d in enumerate(diffs):
        rows.append({"loss": "ce", "seed": seed, "status": "ok", "ap": 0.8, "val_ap": 0.8})
        rows.append({"loss": "focal", "seed": seed, "status": "ok", "ap": 0.8 + d, "val_ap": 0.8})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "diffs,verdict",
    [
        ([0.001, -0.002, 0.002, 0.0, -0.001], "replicated"),
        ([0.03, 0.031, 0.029, 0.032, 0.03], "contradicted"),
        ([-0.03, -0.031, -0.029, -0.032, -0.03], "contradicted"),
        ([0.0, 0.02, -0.01, 0.015, 0.005], "inconclusive"),
    ],
)
def test_equivalence_claim_verdicts(diffs, verdict):
    claim = {"name": "FL ≈ CE", "a": {"loss": "focal"}, "b": {"loss": "ce"}, "direction": "equivalent"}
    v = judge(claim | {"margin": 0.01, "min_seeds": 5}, _paired(diffs))
    assert v.verdict == verdict and v.n == 5 and "±0.01" in v.line()


def test_equivalence_claim_needs_a_margin():
    spec = {"grid": [{}], "report": {"claims": [{"name": "x", "a": {"loss": "focal"}, "b": {"loss": "ce"}}]}}
    spec["report"]["claims"][0]["direction"] = "equivalent"
    with pytest.raises(ConfigError, match=r"margin got None; accepted: a number > 0"):
        validate_spec(spec)
    spec["report"]["claims"][0].update(direction="greater", margin=0.01)
    with pytest.raises(ConfigError, match=r"margin is only for direction"):
        validate_spec(spec)


# ------------------------------------------------------------------------------------------------------------
# any real folder, end to end through the CLI
# ------------------------------------------------------------------------------------------------------------
LAYOUTS = {
    "kaggle flat": lambda root: _images(root / "dogs-vs-cats" / "train"),
    "class folders": lambda root: _images(root, layout="classes", names=("Cats", "DOG")),
    "train/test given": lambda root: (
        _images(root / "train", layout="classes", names=("cat", "dogs")),
        _images(root / "test", layout="classes", n=4, names=("cat", "dogs")),
    ),
    "train/validation given": lambda root: (
        _images(root / "train"),
        _images(root / "Validation", layout="classes", n=4, names=("CAT", "Dog")),
    ),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_folder_layout_runs_end_to_end(tmp_path, layout):
    root = tmp_path / "data"
    LAYOUTS[layout](root)
    out = tmp_path / "runs"
    args = ["sweep", "--dataset", "catsdogs", "--data-dir", str(root), "--loss", "ce,focal_detached"]
    result = runner.invoke(app, [*args, *STEPS, "--ratio", "1,3", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = Store(out).records()
    assert len(records) == 4 and {r["status"] for r in records} == {"ok"}
    for r in records:
        assert r["backbone"] == "indomain" and r["model"] == "mlp" and r["steps_run"] == 20
        assert [c[0] for c in json.loads(r["curve"])] == [10, 20] and r["best_step"] in (10, 20)
        assert r["backbone_pool"] > 0 and 0 <= r["balanced_accuracy"] <= 1
    given = layout.endswith("given")
    assert all(r["data_split"].startswith("given") == given for r in records)
    if layout == "train/test given":
        assert {(r["n_test_neg"], r["n_test_pos"]) for r in records} == {(4, 4)}  # the given test set, whole


def test_scratch_and_random_resnet_backbones_through_the_cli(tmp_path):
    root = tmp_path / "data"
    _images(root / "train")
    out = tmp_path / "runs"
    result = runner.invoke(
        app,
        [
            *("sweep", "--dataset", "catsdogs", "--data-dir", str(root), "--loss", "ce"),
            *("--backbone", "scratch,resnet18", "--weights", "random", *STEPS, "--workers", "1"),
            *("--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    by = {r["backbone"]: r for r in Store(out).records()}
    assert by["scratch"]["model"] == "cnn" and by["scratch"]["weights"] is None
    assert by["resnet18"]["model"] == "mlp" and by["resnet18"]["weights"] == "random"
    assert {r["status"] for r in by.values()} == {"ok"}


def test_folder_without_enough_images_per_class_is_refused(tmp_path):
    _images(tmp_path / "data" / "train", layout="classes", n=2, names=("cats", "dogs"))
    args = ["sweep", "--dataset", "catsdogs", "--data-dir", str(tmp_path / "data"), *STEPS]
    proc = _flx(*args, "--out", str(tmp_path / "r"))
    _one_line_error(
        proc, "the train split holds 2 and 2 images of the two classes; flx needs at least 3 of each"
    )
    assert not (tmp_path / "r").exists()
