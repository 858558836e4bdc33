"""One training run: a frozen config in, a record of metrics out.

A :class:`Config` is plain data. ``normalized()`` fills the data set's and the loss's defaults and blanks every
parameter that does not apply (gamma for ``ce``, dim for ``catsdogs``), so two configs that train the same
model have the same :meth:`Config.key` and a sweep never runs them twice.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from flx import __version__
from flx.data import DATASETS, get_dataset, load
from flx.losses import LOSSES, get_loss
from flx.models import build_model

OPTIMIZERS = ("adam", "sgd")
DATA_PARAMS = ("ratio", "n_samples", "dim", "hard_frac", "image_size", "positive")  # set per data set
LOSS_PARAMS = ("alpha", "gamma", "epsilon", "ohem_k", "ohem_ratio")  # set per loss


@dataclass(frozen=True)
class Config:
    # data (None = the data set's default; blanked where it does not apply)
    dataset: str = "synthetic"
    ratio: float | None = None  # negatives per positive (train split for the image sets)
    n_samples: int | None = None  # synthetic: examples per split
    dim: int | None = None  # synthetic: feature dimension
    hard_frac: float | None = None  # synthetic: fraction of negatives that are hard
    image_size: int | None = None  # catsdogs: images are resized to image_size x image_size
    positive: str | None = None  # image sets: the minority (positive) class, "dog" or "cat"
    data_seed: int = 0
    # model
    model: str | None = None  # None = the data set's (mlp for vectors, cnn for images)
    hidden: int = 64
    prior: float | None = 0.01  # pi of the classifier-bias initialisation; None = bias 0
    # loss (None = the loss's default; blanked where it does not apply)
    loss: str = "focal"
    alpha: float | None = None
    gamma: float | None = None
    epsilon: float | None = None
    ohem_k: int | None = None
    ohem_ratio: float | None = None
    # optimisation
    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 3
    batch_size: int = 1024
    seed: int = 0

    def normalized(self) -> Config:
        """Defaults filled in, non-applicable parameters set to None, numbers in canonical types."""
        self.validate_names()
        data = get_dataset(self.dataset)
        loss = get_loss(self.loss)
        values = dataclasses.asdict(self)
        for names, defaults in ((DATA_PARAMS, data.params), (LOSS_PARAMS, loss.params)):
            for name in names:  # the default where the parameter applies, None where it does not
                given = values[name] if values[name] is not None else defaults.get(name)
                values[name] = given if name in defaults else None
        values["model"] = values["model"] or data.model
        for name in ("prior", "ohem_ratio"):  # spec files write "none" for None (TOML has no null)
            if isinstance(values[name], str) and values[name].lower() == "none":
                values[name] = None
        for name, kind in _TYPES.items():
            if values[name] is not None:
                values[name] = kind(values[name])
        normalized = Config(**values)
        normalized.validate()
        return normalized

    def validate_names(self) -> None:
        get_dataset(self.dataset)
        get_loss(self.loss)

    def validate(self) -> None:
        """ValueError naming the first bad value and the accepted range."""
        checks = [
            ("ratio", self.ratio, lambda v: v >= 1, ">= 1 (negatives per positive)"),
            ("n_samples", self.n_samples, lambda v: v >= 10, "an integer >= 10"),
            ("dim", self.dim, lambda v: v >= 1, "an integer >= 1"),
            ("hard_frac", self.hard_frac, lambda v: 0 <= v <= 1, "[0, 1]"),
            ("image_size", self.image_size, lambda v: v >= 8, "an integer >= 8"),
            ("positive", self.positive, lambda v: v in ("dog", "cat"), "dog or cat"),
            ("hidden", self.hidden, lambda v: v >= 1, "an integer >= 1"),
            ("prior", self.prior, lambda v: 0 < v < 1, "(0, 1), or none"),
            ("alpha", self.alpha, lambda v: 0 <= v <= 1, "[0, 1]"),
            ("gamma", self.gamma, lambda v: 0 <= v <= 10, "[0, 10]"),
            ("epsilon", self.epsilon, lambda v: -100 <= v <= 100, "[-100, 100]"),
            ("ohem_k", self.ohem_k, lambda v: v >= 1, "an integer >= 1"),
            ("ohem_ratio", self.ohem_ratio, lambda v: v > 0, "> 0, or none"),
            ("lr", self.lr, lambda v: 0 < v <= 1e6, "(0, 1e6]"),
            ("epochs", self.epochs, lambda v: v >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size, lambda v: v >= 1, "an integer >= 1"),
        ]
        for name, value, ok, accepted in checks:
            if value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value) or not ok(value):
                raise ValueError(f"{name}={value!r} is out of range; accepted: {accepted}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer={self.optimizer!r} is not supported; choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.model not in (None, "mlp", "cnn"):
            raise ValueError(f"model={self.model!r} is not supported; choose mlp or cnn")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hash of the normalized config: the identity of a run in the store."""
        blob = json.dumps(self.normalized().to_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def hparams(self) -> dict:
        """The loss's hyperparameters of this (normalized) config."""
        return {name: getattr(self, name) for name in get_loss(self.loss).params}

    def data_params(self) -> tuple:
        return tuple(sorted((n, getattr(self, n)) for n in get_dataset(self.dataset).params))


_TYPES = {
    "ratio": float,
    "n_samples": int,
    "dim": int,
    "hard_frac": float,
    "image_size": int,
    "hidden": int,
    "prior": float,
    "alpha": float,
    "gamma": float,
    "epsilon": float,
    "ohem_k": int,
    "ohem_ratio": float,
    "lr": float,
    "epochs": int,
    "batch_size": int,
    "seed": int,
    "data_seed": int,
}
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(Config))
assert set(LOSS_PARAMS) >= {p for spec in LOSSES.values() for p in spec.params}
assert set(DATA_PARAMS) >= {p for spec in DATASETS.values() for p in spec.params}


# ------------------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------------------
def expected_calibration_error(y_true, y_score, n_bins: int = 15) -> float:
    """Binary ECE: sum over equal-width bins of p(y = 1) of |bin share| * |mean(y) - mean(score)|."""
    import numpy as np

    y_true = np.asarray(y_true, dtype=float)
    y_score = np.asarray(y_score, dtype=float)
    bins = np.minimum((y_score * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(y_true[mask].mean() - y_score[mask].mean())
    return float(ece)


def classification_metrics(y_true, y_score) -> dict:
    """AP (the paper's metric), ROC-AUC, the best F1 and its precision/recall, and ECE, for the positive class."""
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=float)
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    return {
        "ap": float(average_precision_score(y_true, y_score)),
        "roc_auc": float(roc_auc_score(y_true, y_score)),
        "best_f1": float(f1[best]),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "ece": expected_calibration_error(y_true, y_score),
    }


METRICS = ("ap", "roc_auc", "best_f1", "precision", "recall", "ece", "train_loss")


# ------------------------------------------------------------------------------------------------------------
# Provenance
# ------------------------------------------------------------------------------------------------------------
@functools.cache
def _git_commit() -> str | None:
    """The checkout's commit, looked up once per process (not once per run)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    return {
        "flx_version": __version__,
        "torch_version": torch.__version__,
        "git_commit": _git_commit(),
        "host": platform.node(),
    }


# ------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------
def _prepare(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in about [-2, 2]; feature vectors as they are."""
    return x.float().div_(255).sub_(0.5).div_(0.25) if x.dtype == torch.uint8 else x


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits for every row of ``x``, in eval mode."""
    model.eval()
    return torch.cat([model(_prepare(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])


def train_model(config: Config, data_dir: str | None = None):
    """Train per ``config``; returns (model, test split, mean loss of the last epoch, epochs run, diverged)."""
    torch.manual_seed(config.seed)
    train, test = load(config.dataset, config.data_params(), config.data_seed, data_dir)
    model = build_model(config.model, tuple(train.x.shape[1:]), config.hidden, config.prior)
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    loss_fn = get_loss(config.loss)
    hparams = config.hparams()
    g = torch.Generator().manual_seed(config.seed)
    images = train.x.dim() == 4
    epoch_loss, diverged, epochs_run = math.nan, False, 0
    for _epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train), generator=g)
        total, batches = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            xb = _prepare(train.x[idx])
            if images:  # random horizontal flips
                flip = torch.rand(len(idx), generator=g) < 0.5
                xb[flip] = xb[flip].flip(-1)
            loss = loss_fn(model(xb), train.y[idx], **hparams)
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        epochs_run += 1
        epoch_loss = total / max(batches, 1)
        if diverged:
            break
    if not diverged and not all(torch.isfinite(p).all() for p in model.parameters()):
        diverged = True
    return model, test, epoch_loss, epochs_run, diverged


def run(config: Config, data_dir: str | None = None) -> dict:
    """Train one model and return its record: config, status, metrics and provenance.

    Divergence (a non-finite loss, weights or scores) gives status "diverged" with NaN metrics; data errors
    propagate (the caller reports them); any other exception gives status "failed" with its message.
    """
    from flx.data import DataError

    config = config.normalized()
    started = time.perf_counter()
    record = {"key": config.key(), **config.to_dict(), **{m: math.nan for m in METRICS}}
    try:
        model, test, train_loss, epochs_run, diverged = train_model(config, data_dir)
        record.update(train_loss=train_loss, epochs_run=epochs_run)
        scores = torch.sigmoid(predict(model, test.x)) if not diverged else None
        if scores is not None and not torch.isfinite(scores).all():
            diverged = True
        if diverged:
            record["status"] = "diverged"
        else:
            record.update(classification_metrics(test.y.numpy(), scores.double().numpy()))
            record["status"] = "ok"
        record["error"] = None
    except DataError:
        raise
    except Exception as exc:  # recorded, so a sweep goes on; a rerun retries it
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", epochs_run=0)
    record["wall_time_s"] = time.perf_counter() - started
    record.update(provenance())
    return record
