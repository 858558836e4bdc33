"""One training run: a frozen :class:`~flx.config.Config` in, a record of metrics out.

A run ends in one of four statuses, none of which stops a sweep:

- ``ok``: trained and evaluated;
- ``diverged``: the training loss, the weights or the test scores became non-finite (NaN or inf);
- ``collapsed``: the loss exploded (an epoch's mean training loss above ``EXPLODE_FACTOR`` = 100 times the first
  batch's loss, floored at 0.01) or the model ends with constant test scores (it cannot rank anything);
- ``failed``: an exception (its message is recorded); a later sweep retries it.

Only ``ok`` runs enter a table's means; the others are counted beside them.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import subprocess
import time
from pathlib import Path

import torch

from flx import __version__
from flx.config import Config, get_dataset, get_loss
from flx.data import describe, load
from flx.metrics import METRICS, classification_metrics
from flx.models import build_model

EXPLODE_FACTOR = 100.0
EXPLODE_FLOOR = 0.01


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
def warm_up() -> None:
    """Pay the one-off import costs of a first run now (scikit-learn's metrics; torch's optimizers import
    torch._dynamo on first use, about 3 s), so a run's wall time measures that run alone."""
    import sklearn.metrics  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    _git_commit()


def _prepare(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in about [-2, 2]; feature vectors as they are."""
    return x.float().div_(255).sub_(0.5).div_(0.25) if x.dtype == torch.uint8 else x


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits for every row of ``x``, in eval mode."""
    model.eval()
    return torch.cat([model(_prepare(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])


def train_model(config: Config, data_dir: str | None = None, on_epoch=None):
    """Train per ``config``; returns (model, test split, mean loss of the last epoch, epochs run, status), the
    status being "ok", "diverged" or "collapsed" (training stops at the first sign of either). ``on_epoch(epoch,
    model)`` is called after each epoch that ends ok (the learning curve)."""
    torch.manual_seed(config.seed)
    train, test, _ = load(config.dataset, config.data_params(), config.data_seed, data_dir)
    model = build_model(config.model, tuple(train.x.shape[1:]), config.hidden, config.prior)
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    loss_fn = get_loss(config.loss)
    hparams = config.hparams()
    g = torch.Generator().manual_seed(config.seed)
    images = train.x.dim() == 4
    epoch_loss, status, epochs_run, first = math.nan, "ok", 0, None
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
                status = "diverged"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
            first = total if first is None else first
        epochs_run += 1
        if on_epoch is not None and status == "ok":
            on_epoch(epochs_run, model)
        epoch_loss = total / max(batches, 1)
        if status == "ok" and first is not None and epoch_loss > EXPLODE_FACTOR * max(first, EXPLODE_FLOOR):
            status = "collapsed"
        if status != "ok":
            break
    if status == "ok" and not all(torch.isfinite(p).all() for p in model.parameters()):
        status = "diverged"
    return model, test, epoch_loss, epochs_run, status


def run_detection(config: Config, train, test, meta) -> dict:
    """Train the tiny RetinaNet (:mod:`flx.detection`) and evaluate it on the validation and test images.

    "collapsed" also covers a detector that ends with no detection above the score threshold on the test
    images (it predicts background everywhere: the paper's CE without the prior). With ``eval_every`` the
    validation AP is recorded every that many steps (``curve``, JSON: [[step, val AP, val AP50], ...]).
    """
    from flx.detection import anchor_imbalance, evaluate, train_detector

    curve = []

    def on_eval(step, model):
        m = evaluate(model, meta["val"], "val_")
        curve.append([step, round(m["val_ap"], 5), round(m["val_ap50"], 5)])

    model, status, train_loss, steps_run = train_detector(
        config, train, evaluate_every=config.eval_every or 0, on_eval=on_eval
    )
    record = {
        "train_loss": train_loss,
        "steps_run": steps_run,
        **anchor_imbalance(meta["val"], config, model),
    }
    if status == "ok":
        val, tested = evaluate(model, meta["val"], "val_"), evaluate(model, test)
        if config.eval_every and (not curve or curve[-1][0] != steps_run):  # a curve ends at the last step
            curve.append([steps_run, round(val["val_ap"], 5), round(val["val_ap50"], 5)])
        finite = val.pop("_finite") and tested.pop("_finite")
        metrics = {**val, **tested}
        if not (finite and all(math.isfinite(v) for v in metrics.values())):
            status = "diverged"
        elif metrics["detections"] == 0:
            status = "collapsed"
        record.update({k: v for k, v in metrics.items() if k in METRICS or k == "detections"})
    if curve:
        record["curve"] = json.dumps(curve)
    record["status"] = status
    return record


def run(config: Config, data_dir: str | None = None, data: dict | None = None) -> dict:
    """Train one model and return its record: key, config, status, metrics, data, timings and provenance.

    ``data`` is what :func:`flx.data.describe` says of the config's data, when the caller (a sweep's parent) has
    it; otherwise it is computed here. ``data_time_s`` is the time spent loading data in this run (0 when this
    process has it already); ``wall_time_s`` covers training and evaluation only. Any exception gives status
    "failed" with its message (a sweep goes on; a later one retries it).
    """
    config = config.normalized()
    record = {"key": None, **config.to_dict(), **{m: math.nan for m in METRICS}, **(data or {})}
    t0 = time.perf_counter()
    try:
        train, test, meta = load(config.dataset, config.data_params(), config.data_seed, data_dir)
        record.update(data or describe(train, test, meta))
    except Exception as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", epochs_run=0)
    record["data_time_s"] = time.perf_counter() - t0
    record["key"] = config.key(record.get("data_fingerprint") or "unknown")
    started = time.perf_counter()
    if record.get("status") != "failed" and get_dataset(config.dataset).task == "detection":
        try:
            record.update(run_detection(config, train, test, meta), error=None)
        except Exception as exc:  # recorded, so a sweep goes on; a rerun retries it
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", steps_run=0)
    elif record.get("status") != "failed":
        try:
            curve = []

            def on_epoch(epoch, model):  # validation AP per epoch: shows where training levels off
                if meta.get("val") is not None:
                    val = meta["val"]
                    from sklearn.metrics import average_precision_score

                    scores = torch.sigmoid(predict(model, val.x)).double().numpy()
                    curve.append([epoch, round(float(average_precision_score(val.y.numpy(), scores)), 5)])

            model, test, train_loss, epochs_run, status = train_model(config, data_dir, on_epoch)
            if curve:
                record["curve"] = json.dumps(curve)
            record.update(train_loss=train_loss, epochs_run=epochs_run)
            if status == "ok":
                scores = torch.sigmoid(predict(model, test.x))
                if not torch.isfinite(scores).all():
                    status = "diverged"
                elif float(scores.max() - scores.min()) <= 1e-7:
                    status = "collapsed"  # constant scores rank nothing
                else:
                    record.update(classification_metrics(test.y.numpy(), scores.double().numpy()))
                    if meta.get("val") is not None:  # what choices (best alpha, best OHEM) are made on
                        val = meta["val"]
                        val_scores = torch.sigmoid(predict(model, val.x)).double().numpy()
                        record["val_ap"] = classification_metrics(val.y.numpy(), val_scores)["ap"]
            record.update(status=status, error=None)
        except Exception as exc:  # recorded, so a sweep goes on; a rerun retries it
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", epochs_run=0)
    record["wall_time_s"] = time.perf_counter() - started
    record.update(provenance())
    return record
