"""One training run: a frozen :class:`~flx.experiment.config.Config` in, a record of metrics out.

A run ends in one of four statuses, none of which stops a sweep:

- ``ok``: trained and evaluated;
- ``diverged``: the training loss, the weights or the test scores became non-finite (NaN or inf);
- ``collapsed``: the loss exploded (an epoch's mean training loss above ``EXPLODE_FACTOR`` = 100 times the first
  batch's loss, floored at 0.01) or the model ends with constant test scores (it cannot rank anything);
- ``failed``: an exception (its message is recorded); a later sweep retries it.

Only ``ok`` runs enter a table's means; the others are counted beside them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from flx.data.load import load
from flx.engine.status import EXPLODE_FACTOR, EXPLODE_FLOOR
from flx.experiment.config import Config
from flx.experiment.metrics import classification_metrics
from flx.experiment.registries import get_loss
from flx.models.classifiers import build_model
from flx.models.inference import predict, prepare_inputs


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
            xb = prepare_inputs(x_train[idx])
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


def round_metric(value: float) -> float | None:
    """A curve's value in JSON: 6 significant digits, None for NaN or inf."""
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _scores(model, split) -> np.ndarray:
    return torch.sigmoid(predict(model, split.x)).double().numpy()


def run_classification(config: Config, test, meta, data_dir=None, device: str = "cpu") -> tuple[dict, dict]:
    """Train a classifier and evaluate it on the validation and test splits. The validation AP is recorded
    after each epoch (``epochs``) or every ``eval_every`` steps (``steps``) as ``curve`` (JSON: [[epoch or
    step, val AP], ...]). With steps (the image sets), the model tested is the checkpoint with the best
    validation AP (early stopping, ``best_step``): small positive sets overfit, and where to stop is a choice
    made on validation data. Test metrics come with the training split's prior, so calibration is measured
    after correcting for the known train/test prior shift (:func:`flx.experiment.metrics.classification_metrics`).
    Returns (record fields, artefacts)."""
    import copy

    from sklearn.metrics import average_precision_score

    from flx.results.artefacts import scores_artefact

    val = meta.get("val")
    curve, train_curve, best = [], [], {"ap": -math.inf, "step": None, "state": None}

    def on_eval(at, model, train_loss):  # validation AP: shows where training levels off
        train_curve.append([at, round_metric(train_loss)])
        if val is None:
            return
        ap = float(average_precision_score(val.y.numpy(), _scores(model, val)))
        curve.append([at, round(ap, 5)])
        if config.steps and ap > best["ap"]:
            best.update(ap=ap, step=at, state=copy.deepcopy(model.state_dict()))

    model, test, train_loss, progress, status = train_model(config, data_dir, on_eval, device)
    train, _, _ = load(config.dataset, config.data_params(), config.data_seed, data_dir)
    record = {"train_loss": train_loss, ("steps_run" if config.steps else "epochs_run"): progress}
    artefacts = {}
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
        artefacts["test"] = scores_artefact(logits.numpy(), test.y.numpy())
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
    return record, artefacts


def check_models(configs, train) -> None:
    """Build each distinct model of ``configs`` once on ``train``'s examples (a registered, ``module:function``
    or torchvision model, its weights file included) so that one that cannot work is refused before any run
    starts: ConfigError naming the model and what went wrong."""
    from flx.errors import ConfigError
    from flx.experiment.registries import get_dataset, model_kind

    seen = set()
    for c in configs:
        ident = (c.model, c.hidden, c.prior, c.weights)
        if (
            ident in seen
            or get_dataset(c.dataset).task != "classification"
            or model_kind(c.model) == "builtin"
        ):
            continue
        seen.add(ident)
        try:
            build_model(c.model, tuple(train.x.shape[1:]), c.hidden, c.prior, c.weights)
        except Exception as exc:  # anything a user's model or weights file raises: one line, before the sweep
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(
                f"--model {c.model}{f' --weights {c.weights}' if c.weights else ''} cannot be used: {detail}"
            ) from None
