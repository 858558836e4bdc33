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

import numpy as np
import torch

from flx import __version__
from flx.config import Config, get_dataset, get_loss
from flx.data import describe, load
from flx.metrics import METRICS, classification_metrics
from flx.models import build_model
from flx.store import ARTEFACTS

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


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> cuda, mps or cpu (what torch finds); others checked: DeviceError (one line) when torch
    finds no such device here."""
    from flx.errors import ConfigError

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise ConfigError(
                f"--device got {device!r}, but torch finds {count} CUDA device(s) here; accepted: "
                + (
                    f"cuda or cuda:0 to cuda:{count - 1}"
                    if count
                    else "cpu or auto (this machine has no CUDA GPU)"
                )
            )
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("--device got 'mps', but torch finds no MPS device here; accepted: cpu or auto")
    return device


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters(), torch.zeros(0)).device


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits for every row of ``x``, in eval mode, on the model's device; returned on the CPU."""
    model.eval()
    device = _device_of(model)
    return torch.cat(
        [
            model(_prepare(x[i : i + batch_size].to(device))).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
    )


def train_model(config: Config, data_dir: str | None = None, on_eval=None, device: str = "cpu"):
    """Train per ``config``; returns (model, test split, mean loss of the last epoch, progress, status): progress
    is the steps run (``config.steps``) or else the epochs run, the status "ok", "diverged" or "collapsed"
    (training stops at the first sign of either). ``on_eval(at, model, train_loss)`` is called every
    ``eval_every`` steps and after the last (with steps), or after each epoch (with epochs), while training is
    ok, with the mean training loss of the steps since the previous call: the learning curve.

    An epoch is a pass over the shuffled training split. A loss with per-epoch weights (``focal_detached``)
    gets them from the model's predictions on the whole split at each epoch's start, in eval mode, detached.
    ``device``: where the model and the training split live (batch order and flips are drawn on the CPU, so a
    run sees the same examples in the same order on every device)."""
    torch.manual_seed(config.seed)
    train, test, _ = load(config.dataset, config.data_params(), config.data_seed, data_dir)
    model = build_model(config.model, tuple(train.x.shape[1:]), config.hidden, config.prior, config.weights)
    model = model.to(device)
    x_train, y_train = train.x.to(device), train.y.to(device)
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    loss_fn = get_loss(config.loss)
    hparams = config.hparams()
    g = torch.Generator().manual_seed(config.seed)
    images = train.x.dim() == 4
    per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.steps or config.epochs * per_epoch
    every = (config.eval_every or 0) if config.steps else 0
    epoch_loss, status, epochs_run, step, first = math.nan, "ok", 0, 0, None
    since = [0.0, 0]  # training loss summed over the steps since the last on_eval, and their number
    while step < total and status == "ok":
        weights = None
        if loss_fn.epoch_weight is not None:
            weights = loss_fn.epoch_weights(predict(model, train.x), train.y, **hparams).to(device)
        model.train()
        order = torch.randperm(len(train), generator=g)
        running, batches = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size].to(device)
            xb = _prepare(x_train[idx])
            if images:  # random horizontal flips
                flip = (torch.rand(len(idx), generator=g) < 0.5).to(device)
                xb[flip] = xb[flip].flip(-1)
            w = weights[idx] if weights is not None else None
            loss = loss_fn(model(xb), y_train[idx], weight=w, **hparams)
            if not torch.isfinite(loss):
                status = "diverged"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = loss.item()
            running += value
            batches += 1
            step += 1
            since[0] += value
            since[1] += 1
            first = running if first is None else first
            if on_eval is not None and every and (step % every == 0 or step == total):
                on_eval(step, model, since[0] / since[1])
                since[:] = [0.0, 0]
            if step == total:
                break
        epochs_run += 1
        epoch_loss = running / max(batches, 1)
        if status == "ok" and first is not None and epoch_loss > EXPLODE_FACTOR * max(first, EXPLODE_FLOOR):
            status = "collapsed"
        if on_eval is not None and not config.steps and status == "ok":
            on_eval(epochs_run, model, since[0] / max(since[1], 1))
            since[:] = [0.0, 0]
    if status == "ok" and not all(torch.isfinite(p).all() for p in model.parameters()):
        status = "diverged"
    return model, test, epoch_loss, step if config.steps else epochs_run, status


def run_detection(config: Config, train, test, meta, device: str = "cpu") -> dict:
    """Train the tiny RetinaNet (:mod:`flx.detection`) and evaluate it on the validation and test images.

    "collapsed" also covers a detector that ends with no detection above the score threshold on the test
    images (it predicts background everywhere: the paper's CE without the prior). With ``eval_every`` the
    validation AP is recorded every that many steps (``curve``, JSON: [[step, val AP, val AP50], ...]).
    """
    from flx.detection import anchor_imbalance, evaluate, train_detector

    curve, train_curve = [], []

    def on_eval(step, model, train_loss):
        m = evaluate(model, meta["val"], "val_")
        curve.append([step, round(m["val_ap"], 5), round(m["val_ap50"], 5)])
        train_curve.append([step, _round(train_loss)])

    model, status, train_loss, steps_run = train_detector(
        config, train, evaluate_every=config.eval_every or 0, on_eval=on_eval, device=device
    )
    record = {
        "train_loss": train_loss,
        "steps_run": steps_run,
        **anchor_imbalance(meta["val"], config, model),
    }
    if status == "ok":
        artefacts: dict = {}
        val, tested = evaluate(model, meta["val"], "val_"), evaluate(model, test, artefacts=artefacts)
        record[ARTEFACTS] = artefacts
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
    if train_curve:
        record["train_curve"] = json.dumps(train_curve)
    record["status"] = status
    return record


def _round(value: float) -> float | None:
    """A curve's value in JSON: 6 significant digits, None for NaN or inf."""
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _scores(model, split) -> np.ndarray:
    return torch.sigmoid(predict(model, split.x)).double().numpy()


def run_classification(config: Config, test, meta, data_dir=None, device: str = "cpu") -> dict:
    """Train a classifier and evaluate it on the validation and test splits. The validation AP is recorded
    after each epoch (``epochs``) or every ``eval_every`` steps (``steps``) as ``curve`` (JSON: [[epoch or
    step, val AP], ...]). With steps (the image sets), the model tested is the checkpoint with the best
    validation AP (early stopping, ``best_step``): small positive sets overfit, and where to stop is a choice
    made on validation data. Test metrics come with the training split's prior, so calibration is measured
    after correcting for the known train/test prior shift (:func:`flx.metrics.classification_metrics`)."""
    import copy

    from sklearn.metrics import average_precision_score

    from flx.artefacts import scores_artefact

    val = meta.get("val")
    curve, train_curve, best = [], [], {"ap": -math.inf, "step": None, "state": None}

    def on_eval(at, model, train_loss):  # validation AP: shows where training levels off
        train_curve.append([at, _round(train_loss)])
        if val is None:
            return
        ap = float(average_precision_score(val.y.numpy(), _scores(model, val)))
        curve.append([at, round(ap, 5)])
        if config.steps and ap > best["ap"]:
            best.update(ap=ap, step=at, state=copy.deepcopy(model.state_dict()))

    model, test, train_loss, progress, status = train_model(config, data_dir, on_eval, device)
    train, _, _ = load(config.dataset, config.data_params(), config.data_seed, data_dir)
    record = {"train_loss": train_loss, ("steps_run" if config.steps else "epochs_run"): progress}
    if curve:
        record["curve"] = json.dumps(curve)
    if train_curve:
        record["train_curve"] = json.dumps(train_curve)
    if status == "ok" and best["state"] is not None:
        model.load_state_dict(best["state"])
        record["best_step"] = best["step"]
    if status == "ok":
        logits = predict(model, test.x)
        scores = torch.sigmoid(logits).double().numpy()
        record[ARTEFACTS] = {"test": scores_artefact(logits.numpy(), test.y.numpy())}
        if not np.isfinite(scores).all():
            status = "diverged"
        elif float(scores.max() - scores.min()) <= 1e-7:
            status = "collapsed"  # constant scores rank nothing
        else:
            prior = train.n_pos / len(train)
            record.update(classification_metrics(test.y.numpy(), scores, train_prior=prior))
            if val is not None:  # what choices (best alpha, best OHEM) are made on
                record["val_ap"] = float(average_precision_score(val.y.numpy(), _scores(model, val)))
    record["status"] = status
    return record


def run(config: Config, data_dir: str | None = None, data: dict | None = None, device: str = "cpu") -> dict:
    """Train one model on ``device`` (a resolved one: cpu, cuda, cuda:N, mps) and return its record: key,
    config, status, metrics, data, timings, provenance and the device, with its artefacts (bytes, under
    ``record["artefacts"]``: :meth:`flx.store.Store.put` stores them beside the JSON record).

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
            record.update(run_detection(config, train, test, meta, device), error=None)
        except Exception as exc:  # recorded, so a sweep goes on; a rerun retries it
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", steps_run=0)
    elif record.get("status") != "failed":
        try:
            record.update(run_classification(config, test, meta, data_dir, device), error=None)
        except Exception as exc:  # recorded, so a sweep goes on; a rerun retries it
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", epochs_run=0)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    record["wall_time_s"] = time.perf_counter() - started
    record.update(provenance(), device=device)
    if device.startswith("cuda"):
        record["device_name"] = torch.cuda.get_device_name(device)
    return record
