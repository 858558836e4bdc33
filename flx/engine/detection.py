"""Training and evaluating the tiny RetinaNet the paper's way (SGD with momentum, warm-up, lr decays), and
the anchor statistics of a data set under a detector's anchors.
"""

from __future__ import annotations

import json
import math

import torch

from flx.engine.classification import round_metric
from flx.engine.coco import coco_metrics, detection_artefacts
from flx.experiment.config import Config
from flx.experiment.metrics import METRICS, average_precision
from flx.experiment.registries import LR_DECAYS
from flx.models.anchors import BETWEEN, Assignment
from flx.models.retinanet import build_detector

HARD_P = 0.05  # a background anchor scored above this is a hard negative (``hard_negatives``)

WEIGHT_DECAY, MOMENTUM, WARMUP_FACTOR = 1e-4, 0.9, 1 / 3


def lr_factor(step: int, steps: int) -> float:
    """Warm-up from 1/3 over the first 10% of steps, then 1, 0.1 after 2/3 and 0.01 after 8/9 of the steps."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return WARMUP_FACTOR + (1 - WARMUP_FACTOR) * step / warmup
    return (1.0, 0.1, 0.01)[sum(step >= steps * frac for frac in LR_DECAYS)]


def assignment(split, anchors: torch.Tensor) -> Assignment:
    """The anchor matches of every image of ``split`` (both flips), computed once per split and anchor layout
    and kept with the split."""
    key = ("assignment", len(anchors), float(anchors.sum()))
    if key not in split.cache:
        split.cache[key] = Assignment(split, anchors.cpu())
    return split.cache[key]


def batch_of(split, idx, flip, matches: Assignment, device):
    """Images ``idx`` (flipped where ``flip``) as a uint8 batch, their anchor matches and padded boxes."""
    images = split.images[idx]
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    matched, boxes = matches.batch(idx, flip)
    return images.to(device), matched.to(device), boxes.to(device)


def train_detector(config, train, evaluate_every: int = 0, on_eval=None, device: str = "cpu"):
    """Train per ``config`` for ``config.steps`` steps through :func:`flx.engine.fit.fit`: SGD with momentum,
    the warm-up and lr decays of :func:`lr_factor`, gradients clipped to a total norm of ``config.clip_grad``
    (as mmdetection's RetinaNet; the Watcher sees the norm before clipping). Returns (model, status, mean loss of
    the last 10% of steps, steps run, :class:`flx.engine.status.Watcher`: the largest gradient norm and a
    knock-back's step).
    ``evaluate_every`` > 0 calls ``on_eval(step, model, mean training loss of the steps since the last call)``
    on a schedule (the learning-curve check)."""
    from flx.engine.fit import StepLoss, fit
    from flx.engine.status import Watcher

    torch.manual_seed(config.seed)
    model = build_detector(config).to(device)
    matches = assignment(train, model.anchors_for(train.images.shape[-1]))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or ".bn" in name or p.dim() == 1 else decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        momentum=MOMENTUM,
    )

    def step_loss(batch) -> StepLoss:
        out = model.batch_loss(model.inputs(batch[0]), batch[1], batch[2])
        return StepLoss(out["classification"] + out["bbox_regression"], positive=float(out["positive"]))

    done = fit(
        model,
        opt,
        _batches(train, config.batch_size, matches, torch.Generator().manual_seed(config.seed), device),
        step_loss,
        config.steps,
        Watcher(explode_per="step"),
        lr_at=lambda step: config.lr * lr_factor(step, config.steps),
        clip_grad=config.clip_grad or 0.0,
        watch_gradients=True,
        eval_every=evaluate_every if on_eval is not None else 0,
        on_eval=on_eval,
    )
    tail = done.losses[-max(1, len(done.losses) // 10) :]
    return model, done.status, sum(tail) / max(1, len(tail)), len(done.losses), done.watcher


def _batches(train, batch_size: int, matches: Assignment, g, device):
    """Endless batches: images taken in the order of shuffled passes (a new one drawn when fewer than a batch
    are left), each flipped at random, with their anchor matches."""
    from flx.engine.fit import Batch

    order = torch.empty(0, dtype=torch.int64)
    while True:
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(train), generator=g)])
        idx, order = order[:batch_size], order[batch_size:]
        flip = torch.rand(len(idx), generator=g) < 0.5
        yield Batch(batch_of(train, idx, flip, matches, device))


def predict_split(model, split, batch_size: int = 256):
    """Detections per image, per-anchor logits (N, A) and the anchors (A, 4), for every image of ``split``."""
    dets, logits, anchors = [], [], None
    device = next(model.parameters()).device
    for start in range(0, len(split), batch_size):
        d, lg, anchors = model.predict(split.images[start : start + batch_size].to(device))
        dets += [{k: v.cpu() for k, v in det.items()} for det in d]
        logits.append(lg.cpu())
    return dets, torch.cat(logits), anchors.cpu()


def anchor_labels(split, anchors):
    """Per image and anchor: 1 object, 0 background, -1 ignored (the matcher's IoU band)."""
    matched = assignment(split, anchors).matched[0].long()
    return torch.where(matched >= 0, 1, torch.where(matched == BETWEEN, -1, 0))


def evaluate(model, split, prefix: str = "", artefacts: dict | None = None) -> dict:
    """COCO AP/AP50/AP75, anchor-level AP (object anchors against background ones, ignored left out) and the
    number of detections, with keys prefixed by ``prefix``. ``artefacts`` (a dict) receives the stored form of
    the evaluation (:mod:`flx.results.artefacts`): ``detections`` and ``anchors``."""
    dets, logits, anchors = predict_split(model, split)
    out = coco_metrics(split.boxes, dets)
    labels = anchor_labels(split, anchors)
    keep = labels >= 0
    scores = logits[keep].double().sigmoid().numpy()
    out["anchor_ap"] = average_precision(labels[keep].numpy(), scores)
    out["detections"] = sum(len(d["scores"]) for d in dets)
    background = labels == 0
    out["hard_negatives"] = float((background & (logits.double().sigmoid() > HARD_P)).sum()) / len(split)
    finite = bool(torch.isfinite(logits).all())
    if artefacts is not None:
        artefacts.update(detection_artefacts(split, dets, logits[keep], labels[keep]))
    out = {f"{prefix}{k}": v for k, v in out.items()}
    out["_finite"] = finite
    return out


def anchor_imbalance(split, config, model=None) -> dict:
    """Anchors per image and positive/ignored anchors per image of ``split`` under ``config``'s anchors, and
    the share of the initial loss (bias at the prior, every anchor at p = pi) that the negatives carry.
    ``model``: a detector of ``config`` already built (its anchors and matcher are not learned)."""
    model = model if model is not None else build_detector(config)
    anchors = model.anchors_for(split.images.shape[-1])  # the anchors the model trains and predicts on
    labels = anchor_labels(split, anchors)
    n_pos = (labels == 1).sum(1).double()
    n_neg = (labels == 0).sum(1).double()
    p = config.prior or 0.5
    gamma = config.gamma or 0.0
    alpha = config.alpha if config.alpha is not None else 0.5
    neg = (1 - alpha) * p**gamma * -math.log(1 - p) * n_neg.sum()
    pos = alpha * (1 - p) ** gamma * -math.log(p) * n_pos.sum()
    return {
        "anchors_per_image": len(anchors),
        "pos_anchors_per_image": float(n_pos.mean()),
        "ignored_anchors_per_image": float((labels == -1).sum(1).double().mean()),
        "imbalance": float(n_neg.sum() / max(1.0, float(n_pos.sum()))),
        "neg_loss_share": float(neg / (neg + pos)),
    }


def run_detection(config: Config, train, test, meta, device: str = "cpu") -> tuple[dict, dict]:
    """Train the tiny RetinaNet (:mod:`flx.models.retinanet`) and evaluate it on the validation and test images.

    "collapsed" covers a detector knocked back to the prior during training (:class:`flx.engine.status.Watch`;
    ``collapse_step`` and ``error`` say when and how; it is still evaluated, so its record shows what it
    became), one whose anchor-level test AP is near chance, and one that ends with no detection above the
    score threshold (it predicts background everywhere: the paper's CE without the prior). ``max_grad_norm``:
    the largest gradient norm of the run; ``rebound``: how near it came to a knock-back (the Watch's). With
    ``eval_every`` the validation AP is recorded every that many steps (``curve``, JSON: [[step, val AP,
    val AP50], ...]). Returns (record fields, artefacts).
    """
    curve, train_curve = [], []

    def on_eval(step, model, train_loss):
        m = evaluate(model, meta["val"], "val_")
        curve.append([step, round(m["val_ap"], 5), round(m["val_ap50"], 5)])
        train_curve.append([step, round_metric(train_loss)])

    model, status, train_loss, steps_run, watch = train_detector(
        config, train, evaluate_every=config.eval_every or 0, on_eval=on_eval, device=device
    )
    record = {
        "train_loss": train_loss,
        "steps_run": steps_run,
        "max_grad_norm": watch.max_grad_norm,
        "rebound": watch.rebound,
        **anchor_imbalance(meta["val"], config, model),
    }
    if status != "ok":  # stopped in training: the loss not finite, or exploded
        record.update(collapse_step=steps_run, error=f"{status} at step {steps_run} (largest gradient norm "
                      f"{watch.max_grad_norm:.3g})")  # fmt: skip
    artefacts: dict = {}
    if status == "ok":
        val, tested = evaluate(model, meta["val"], "val_"), evaluate(model, test, artefacts=artefacts)
        if config.eval_every and (not curve or curve[-1][0] != steps_run):  # a curve ends at the last step
            curve.append([steps_run, round(val["val_ap"], 5), round(val["val_ap50"], 5)])
        finite = val.pop("_finite") and tested.pop("_finite")
        metrics = {**val, **tested}
        status = watch.detections(metrics, finite, 1 / (1 + record["imbalance"]))
        if watch.knocked_back is not None and status == "collapsed":
            record["collapse_step"] = watch.knocked_back
        if watch.error is not None:
            record["error"] = watch.error
        record.update(
            {k: v for k, v in metrics.items() if k in METRICS or k in ("detections", "hard_negatives")}
        )
    if curve:
        record["curve"] = json.dumps(curve)
    if train_curve:
        record["train_curve"] = json.dumps(train_curve)
    record["status"] = status
    return record, artefacts
