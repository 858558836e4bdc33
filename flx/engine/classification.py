"""Training and evaluating a classifier (a head on feature vectors, a CNN, a torchvision or a user's model)
through the one loop, :func:`flx.engine.fit.fit`; how a run ends is :mod:`flx.engine.status`'s to say.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from flx.engine.fit import StepLoss, fit, shuffled_epochs
from flx.engine.status import Watcher
from flx.experiment.config import Config
from flx.experiment.metrics import classification_metrics
from flx.experiment.registries import get_loss
from flx.models.classifiers import build_model
from flx.models.inference import predict


def train_model(config: Config, train, on_eval=None, device: str = "cpu"):
    """Train per ``config`` on the ``train`` split; returns (model, :class:`~flx.engine.fit.Fit`: status, steps,
    epochs, the last epoch's mean loss). Training stops at the first sign of divergence or collapse (the
    Watcher's rules, the exploded one per epoch). ``on_eval(at, model, train_loss)`` is called every
    ``eval_every`` steps and after the last (with steps), or after each epoch (with epochs), while training is
    ok, with the mean training loss of the steps since the previous call: the learning curve.

    An epoch is a pass over the shuffled training split. A loss with per-epoch weights (``focal_detached``)
    gets them from the model's predictions on the whole split at each epoch's start, in eval mode, detached.
    ``device``: where the model and the training split live (batch order and flips are drawn on the CPU, so a
    run sees the same examples in the same order on every device)."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, tuple(train.x.shape[1:]), config.hidden, config.prior, config.weights)
    model = model.to(device)
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    loss_fn, hparams = get_loss(config.loss), config.hparams()
    g = torch.Generator().manual_seed(config.seed)
    total = config.steps or config.epochs * math.ceil(len(train) / config.batch_size)

    def step_loss(batch) -> StepLoss:
        xb, yb, w = batch
        return StepLoss(loss_fn(model(xb), yb, weight=w, **hparams))

    def epoch_weights():  # a loss with per-epoch weights (focal_detached) takes them at each epoch's start
        return loss_fn.epoch_weights(predict(model, train.x), train.y, **hparams)

    every = (config.eval_every or 0) if config.steps else 0
    done = fit(
        model,
        opt,
        shuffled_epochs(
            train.x, train.y, config.batch_size, g, device, epoch_weights if loss_fn.epoch_weight else None
        ),
        step_loss,
        total,
        Watcher(explode_per="epoch"),
        eval_every=every,
        eval_at_end=True,
        on_eval=on_eval if every else None,
        on_epoch=None if config.steps else on_eval,
    )
    return model, done


def round_metric(value: float) -> float | None:
    """A curve's value in JSON: 6 significant digits, None for NaN or inf."""
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _scores(model, split) -> np.ndarray:
    return torch.sigmoid(predict(model, split.x)).double().numpy()


def run_classification(config: Config, train, test, meta, device: str = "cpu") -> tuple[dict, dict]:
    """Train a classifier on ``train`` and evaluate it on the validation and test splits. The validation AP is
    recorded after each epoch (``epochs``) or every ``eval_every`` steps (``steps``) as ``curve`` (JSON:
    [[epoch or step, val AP], ...]). With steps (the image sets), the model tested is the checkpoint with the
    best validation AP (early stopping, ``best_step``): small positive sets overfit, and where to stop is a
    choice made on validation data. Test metrics come with the training split's prior, so calibration is
    measured after correcting for the known train/test prior shift
    (:func:`flx.experiment.metrics.classification_metrics`). Returns (record fields, artefacts)."""
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

    model, done = train_model(config, train, on_eval, device)
    record = {"train_loss": done.epoch_loss, ("steps_run" if config.steps else "epochs_run"): (
        done.steps if config.steps else done.epochs
    )}  # fmt: skip
    artefacts = {}
    if curve:
        record["curve"] = json.dumps(curve)
    if train_curve:
        record["train_curve"] = json.dumps(train_curve)
    if done.status == "ok" and best["state"] is not None:
        model.load_state_dict(best["state"])
        record["best_step"] = best["step"]
    if done.status == "ok":
        logits = predict(model, test.x)
        scores = torch.sigmoid(logits).double().numpy()
        artefacts["test"] = scores_artefact(logits.numpy(), test.y.numpy())
        if done.watcher.scores(scores) == "ok":
            prior = train.n_pos / len(train)
            record.update(classification_metrics(test.y.numpy(), scores, train_prior=prior))
            if val is not None:  # what choices (best alpha, best OHEM) are made on
                record["val_ap"] = float(average_precision_score(val.y.numpy(), _scores(model, val)))
    record["status"] = done.status
    return record, artefacts


def models_to_check(configs) -> list:
    """The configs of ``configs`` whose model :func:`check_models` builds: one per distinct user or torchvision
    model (its hidden size, prior and weights) of a classifier; a built-in model or a detector needs no check."""
    from flx.experiment.registries import get_dataset, model_kind

    seen, picked = set(), []
    for c in configs:
        ident = (c.model, c.hidden, c.prior, c.weights)
        if (
            ident in seen
            or get_dataset(c.dataset).task != "classification"
            or model_kind(c.model) == "builtin"
        ):
            continue
        seen.add(ident)
        picked.append(c)
    return picked


def check_models(configs, train) -> None:
    """Build each distinct model of ``configs`` once on ``train``'s examples (a registered, ``module:function``
    or torchvision model, its weights file included) so that one that cannot work is refused before any run
    starts: ConfigError naming the model and what went wrong."""
    from flx.errors import ConfigError

    for c in models_to_check(configs):
        try:
            build_model(c.model, tuple(train.x.shape[1:]), c.hidden, c.prior, c.weights)
        except Exception as exc:  # anything a user's model or weights file raises: one line, before the sweep
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(
                f"--model {c.model}{f' --weights {c.weights}' if c.weights else ''} cannot be used: {detail}"
            ) from None
