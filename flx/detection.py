"""A tiny RetinaNet assembled from torchvision's detection parts, trained the paper's way, and evaluated with
pycocotools: the dense-detection regime of Lin et al. (ICCV 2017) at a size that trains on a CPU.

Parts (torchvision's, extended where the paper's experiments need it):

- backbone: four conv-BN-ReLU layers (strides 2 and 4) and torchvision's ``FeaturePyramidNetwork``: two levels,
  strides 2 and 4 (24x24 and 12x12 at 48 px), anchor sizes 6 and 12 px at 48 px (8 and 16 at 64 px);
- ``AnchorGenerator``: ``anchor_scales`` octave scales (2^(i/n)) x ``anchor_ratios`` aspect ratios ({1} or
  {1/2, 1, 2}) per location; 3 x 3 = 9 gives 6,480 anchors per 48 px image;
- ``RetinaNet`` with its ``Matcher`` (IoU >= 0.5 object, < 0.4 background, between ignored), ``BoxCoder``,
  smooth-L1 box regression, and post-processing (score 0.05, top 1000 per level, NMS 0.5, 100 detections);
- :class:`ClassificationHead`: torchvision's head (one 3x3 conv here, ``HEAD_CONVS``; torchvision's has 4) whose loss is any registry loss of
  :mod:`flx.config`, summed over an image's anchors and divided by its positive anchors (the paper's
  normalisation); or OHEM (:func:`ohem_select`): anchors ranked by loss, NMS over the anchor boxes, the B
  highest kept, and the loss divided by the number kept. The classifier's last bias starts at the prior
  pi (b = -log((1 - pi) / pi)), or 0 with ``prior = none``.

Training: SGD (momentum 0.9, weight decay 1e-4), lr warm-up from lr/3 over the first 10% of steps, lr / 10 at
2/3 and 8/9 of the steps (the paper's 60k and 80k of 90k), 8 images per step, horizontal flips.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetRegressionHead
from torchvision.ops import FeaturePyramidNetwork, nms

from flx.config import LR_DECAYS, get_loss

STRIDES = (2, 4)
BASE_SIZES = (8, 16)  # at 64 px (scaled with the image): 4 x stride, as RetinaNet's 32 px anchors at stride 8
HEAD_CONVS = 1  # torchvision's heads have 4; one keeps a step at tens of ms on one core
SCORE_THRESH, NMS_THRESH, DETECTIONS, TOPK = 0.05, 0.5, 100, 1000
WEIGHT_DECAY, MOMENTUM, WARMUP_FACTOR = 1e-4, 0.9, 1 / 3


def anchor_sizes(n_scales: int, image_size: int = 64) -> tuple:
    """Per level, the anchor sizes 2^(i / n_scales) x base (the paper's octave scales)."""
    return tuple(
        tuple(base * image_size / 64 * 2 ** (i / n_scales) for i in range(n_scales)) for base in BASE_SIZES
    )


def aspect_ratios(n_ratios: int) -> tuple:
    return {1: (1.0,), 3: (0.5, 1.0, 2.0)}[n_ratios]


# ------------------------------------------------------------------------------------------------------------
# Parts
# ------------------------------------------------------------------------------------------------------------
class TinyBackbone(nn.Module):
    """Conv-BN-ReLU stages at strides 2 and 4, merged top-down by torchvision's FPN into ``out_channels``."""

    def __init__(self, out_channels: int = 32):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
            )

        self.c2 = nn.Sequential(block(3, 16, 2), block(16, 16, 1))
        self.c3 = nn.Sequential(block(16, 32, 2), block(32, 32, 1))
        self.fpn = FeaturePyramidNetwork([16, 32], out_channels)
        self.out_channels = out_channels

    def forward(self, x):
        c2 = self.c2(x)
        c3 = self.c3(c2)
        return self.fpn(OrderedDict([("p2", c2), ("p3", c3)]))


def ohem_select(losses, boxes, positive, k: int, nms_thresh: float | None, ratio: float | None = None):
    """Indices of the anchors OHEM trains on in one image: ranked by loss, NMS over their boxes at
    ``nms_thresh`` (None: no NMS), the ``k`` highest-loss survivors kept; with ``ratio`` (SSD's 1:3 is 3), at
    most k / (1 + ratio) positives and the rest filled with the hardest negatives.

    NMS is greedy in loss order, so the first survivors depend only on higher-loss boxes; it runs on the 4k
    highest-loss anchors (more if fewer than k survive) and every positive anchor. Without a ratio this is
    exactly NMS over all anchors; with one, a low-loss positive could differ only where a negative below the
    4k highest would have suppressed it.
    """
    losses = losses.detach()
    n = len(losses)
    m = min(n, 4 * k)
    while True:
        top = torch.topk(losses, m).indices
        if ratio is not None:
            top = torch.unique(torch.cat([top, positive.nonzero().squeeze(1)]))
            top = top[torch.argsort(losses[top], descending=True, stable=True)]
        keep = top if nms_thresh is None else top[nms(boxes[top], losses[top], nms_thresh)]
        if len(keep) >= k or m == n:
            break
        m = min(n, 2 * m)
    if ratio is None:
        return keep[:k]
    pos = keep[positive[keep]][: int(k // (1 + ratio))]
    neg = keep[~positive[keep]][: k - len(pos)]
    return torch.cat([pos, neg])


class ClassificationHead(RetinaNetClassificationHead):
    """torchvision's classification head with flx's losses: a registry loss normalised by the image's positive
    anchors (the paper), or OHEM over the anchors (``loss = ohem``)."""

    def __init__(self, in_channels, num_anchors, config, convs: int = HEAD_CONVS):
        super().__init__(in_channels, num_anchors, 1, prior_probability=config.prior or 0.5)
        self.conv = self.conv[:convs]
        self.config = config
        self.loss = get_loss(config.loss)
        self.anchors = None  # set by the detector before each loss (OHEM's NMS needs the anchor boxes)

    def per_anchor_loss(self, logits, targets):
        """Element-wise loss of the configured loss (for OHEM: CE, what it ranks the anchors by)."""
        return self.loss(logits, targets, reduction="none", **self.config.hparams())

    def compute_loss(self, targets, head_outputs, matched_idxs):
        losses = []
        for i, (logits, matched) in enumerate(zip(head_outputs["cls_logits"], matched_idxs, strict=True)):
            positive = matched >= 0
            valid = matched != self.BETWEEN_THRESHOLDS
            target = positive.to(logits.dtype)
            per_anchor = self.per_anchor_loss(logits[:, 0], target)
            if self.config.loss == "ohem":
                idx = valid.nonzero().squeeze(1)
                keep = ohem_select(
                    per_anchor[idx],
                    self.anchors[i][idx],
                    positive[idx],
                    self.config.ohem_k,
                    self.config.ohem_nms,
                    self.config.ohem_ratio,
                )
                losses.append(per_anchor[idx[keep]].sum() / max(1, len(keep)))
            else:
                losses.append(per_anchor[valid].sum() / max(1, int(positive.sum())))
        return sum(losses) / len(losses)


class Detector(RetinaNet):
    """torchvision's RetinaNet, handing the anchors to the classification head (for OHEM's NMS)."""

    def compute_loss(self, targets, head_outputs, anchors):
        self.head.classification_head.anchors = anchors
        return super().compute_loss(targets, head_outputs, anchors)

    @torch.no_grad()
    def predict(self, images):
        """One forward in eval mode: (detections per image, per-anchor logits (N, A), anchors per image)."""
        self.eval()
        sizes = [tuple(img.shape[-2:]) for img in images]
        batch, _ = self.transform(images)
        features = list(self.backbone(batch.tensors).values())
        outputs = self.head(features)
        anchors = self.anchor_generator(batch, features)
        per_level = [
            f.size(2) * f.size(3) * self.anchor_generator.num_anchors_per_location()[0] for f in features
        ]
        split = {k: list(v.split(per_level, dim=1)) for k, v in outputs.items()}
        dets = self.postprocess_detections(
            split, [list(a.split(per_level)) for a in anchors], batch.image_sizes
        )
        dets = self.transform.postprocess(dets, batch.image_sizes, sizes)
        return dets, outputs["cls_logits"][..., 0], anchors


def build_detector(config) -> Detector:
    """The tiny RetinaNet of ``config`` (hidden = FPN and head width; anchor_scales x anchor_ratios)."""
    sizes = anchor_sizes(config.anchor_scales, config.image_size)
    generator = AnchorGenerator(sizes, (aspect_ratios(config.anchor_ratios),) * len(sizes))
    backbone = TinyBackbone(config.hidden)
    num_anchors = generator.num_anchors_per_location()[0]
    cls_head = ClassificationHead(config.hidden, num_anchors, config)
    if config.prior is None:
        nn.init.zeros_(cls_head.cls_logits.bias)
    reg_head = RetinaNetRegressionHead(config.hidden, num_anchors)
    reg_head.conv = reg_head.conv[:HEAD_CONVS]
    reg_head._loss_type = "smooth_l1"
    model = Detector(
        backbone,
        num_classes=1,
        min_size=config.image_size,
        max_size=config.image_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
        anchor_generator=generator,
        score_thresh=SCORE_THRESH,
        nms_thresh=NMS_THRESH,
        detections_per_img=DETECTIONS,
        topk_candidates=TOPK,
        _skip_resize=True,
    )
    model.head.classification_head = cls_head
    model.head.regression_head = reg_head
    return model


# ------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------
def lr_factor(step: int, steps: int) -> float:
    """Warm-up from 1/3 over the first 10% of steps, then 1, 0.1 after 2/3 and 0.01 after 8/9 of the steps."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return WARMUP_FACTOR + (1 - WARMUP_FACTOR) * step / warmup
    return (1.0, 0.1, 0.01)[sum(step >= steps * frac for frac in LR_DECAYS)]


def _batch(split, idx, flip):
    images, targets = [], []
    size = split.images.shape[-1]
    for i, f in zip(idx.tolist(), flip.tolist(), strict=True):
        img = split.images[i].float().div_(255)
        boxes = split.boxes[i]
        if f:
            img = img.flip(-1)
            boxes = torch.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], dim=1)
        images.append(img)
        targets.append({"boxes": boxes, "labels": torch.zeros(len(boxes), dtype=torch.int64)})
    return images, targets


def train_detector(config, train, evaluate_every: int = 0, on_eval=None, device: str = "cpu"):
    """Train per ``config`` for ``config.steps`` steps; returns (model, status, mean loss of the last 10% of
    steps, steps run). ``evaluate_every`` > 0 calls ``on_eval(step, model, mean training loss of the steps
    since the last call)`` on a schedule (the learning-curve check)."""
    from flx.train import EXPLODE_FACTOR, EXPLODE_FLOOR

    torch.manual_seed(config.seed)
    model = build_detector(config).to(device)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or ".bn" in name or p.dim() == 1 else decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        momentum=MOMENTUM,
    )
    g = torch.Generator().manual_seed(config.seed)
    order = torch.empty(0, dtype=torch.int64)
    status, losses, first = "ok", [], None
    step = 0
    for step in range(config.steps):
        if len(order) < config.batch_size:
            order = torch.cat([order, torch.randperm(len(train), generator=g)])
        idx, order = order[: config.batch_size], order[config.batch_size :]
        flip = torch.rand(len(idx), generator=g) < 0.5
        for group in opt.param_groups:
            group["lr"] = config.lr * lr_factor(step, config.steps)
        model.train()
        images, targets = _batch(train, idx, flip)
        images = [img.to(device) for img in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        out = model(images, targets)
        loss = out["classification"] + out["bbox_regression"]
        if not torch.isfinite(loss):
            status = "diverged"
            break
        value = float(loss.detach())
        first = value if first is None else first
        losses.append(value)
        if value > EXPLODE_FACTOR * max(first, EXPLODE_FLOOR):
            status = "collapsed"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if evaluate_every and (step + 1) % evaluate_every == 0 and on_eval is not None:
            since = losses[-evaluate_every:]
            on_eval(step + 1, model, sum(since) / len(since))
    if status == "ok" and not all(torch.isfinite(p).all() for p in model.parameters()):
        status = "diverged"
    tail = losses[-max(1, len(losses) // 10) :]
    return model, status, sum(tail) / max(1, len(tail)), len(losses)


# ------------------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------------------
def predict_split(model, split, batch_size: int = 64):
    """Detections per image, and per-anchor logits (N, A), for every image of ``split``."""
    dets, logits, anchors = [], [], None
    device = next(model.parameters()).device
    for start in range(0, len(split), batch_size):
        images = [img.to(device).float().div(255) for img in split.images[start : start + batch_size]]
        d, lg, anchors = model.predict(images)
        dets += [{k: v.cpu() for k, v in det.items()} for det in d]
        logits.append(lg.cpu())
    return dets, torch.cat(logits), anchors[0].cpu()


def coco_metrics(boxes_true, detections) -> dict:
    """COCO AP (IoU 0.50:0.95), AP50 and AP75 from pycocotools for one object class. ``boxes_true``: per image
    (K, 4) x1y1x2y2 tensors; ``detections``: per image dicts with boxes and scores."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (gt, det) in enumerate(zip(boxes_true, detections, strict=True)):
        images.append({"id": i + 1, "width": 1, "height": 1})
        for b in gt.tolist():
            w, h = b[2] - b[0], b[3] - b[1]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "bbox": [b[0], b[1], w, h],
                 "area": w * h, "iscrowd": 0}
            )  # fmt: skip
        for b, s in zip(det["boxes"].tolist(), det["scores"].tolist(), strict=True):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": s,
                }
            )
    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "ring"}]}
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, ap50, ap75 = (max(0.0, float(v)) for v in ev.stats[:3])  # -1 = no ground truth
    return {"ap": ap, "ap50": ap50, "ap75": ap75}


def anchor_labels(model, split, anchors):
    """Per image and anchor: 1 object, 0 background, -1 ignored (the matcher's IoU band)."""
    from torchvision.ops import box_iou

    labels = []
    for boxes in split.boxes:
        if len(boxes) == 0:
            labels.append(torch.zeros(len(anchors), dtype=torch.int64))
            continue
        matched = model.proposal_matcher(box_iou(boxes, anchors))
        labels.append(torch.where(matched >= 0, 1, torch.where(matched == -2, -1, 0)))
    return torch.stack(labels)


def evaluate(model, split, prefix: str = "", artefacts: dict | None = None) -> dict:
    """COCO AP/AP50/AP75, anchor-level AP (object anchors against background ones, ignored left out) and the
    number of detections, with keys prefixed by ``prefix``. ``artefacts`` (a dict) receives the stored form of
    the evaluation (:mod:`flx.artefacts`): ``detections`` and ``anchors``."""
    from sklearn.metrics import average_precision_score

    dets, logits, anchors = predict_split(model, split)
    out = coco_metrics(split.boxes, dets)
    labels = anchor_labels(model, split, anchors)
    keep = labels >= 0
    scores = logits[keep].double().sigmoid().numpy()
    out["anchor_ap"] = float(average_precision_score(labels[keep].numpy(), scores))
    out["detections"] = sum(len(d["scores"]) for d in dets)
    finite = bool(torch.isfinite(logits).all())
    if artefacts is not None:
        artefacts.update(detection_artefacts(split, dets, logits[keep], labels[keep]))
    out = {f"{prefix}{k}": v for k, v in out.items()}
    out["_finite"] = finite
    return out


def detection_artefacts(split, dets, logits, labels) -> dict:
    """The stored form of a detector's test evaluation: every detection with the ground truth (COCO AP, the
    examples figure, with the first test images) and the anchors' logit histogram per class (Figure 4)."""
    from flx.artefacts import N_EXAMPLE_IMAGES, encode, logit_histogram

    image = np.concatenate([np.full(len(d["scores"]), i, dtype=np.int32) for i, d in enumerate(dets)])
    boxes = torch.cat([d["boxes"] for d in dets]).reshape(-1, 4).float().numpy()
    scores = torch.cat([d["scores"] for d in dets]).float().numpy()
    truth = torch.cat(split.boxes).reshape(-1, 4).float().numpy()
    truth_image = np.concatenate([np.full(len(b), i, dtype=np.int32) for i, b in enumerate(split.boxes)])
    detections = encode(
        {
            "image": image,
            "boxes": boxes,
            "scores": scores,
            "truth_image": truth_image,
            "truth_boxes": truth,
            "n_images": np.array([len(split)]),
            "images": split.images[:N_EXAMPLE_IMAGES].numpy(),
        }
    )
    anchors = encode(logit_histogram(logits.float().numpy(), labels.numpy()))
    return {"detections": detections, "anchors": anchors}


def stored_detections(arrays: dict) -> tuple[list, list]:
    """(ground-truth boxes per image, detections per image) of a ``detections`` artefact, as
    :func:`coco_metrics` takes them."""
    n = int(arrays["n_images"][0])
    truth = [torch.from_numpy(arrays["truth_boxes"][arrays["truth_image"] == i].copy()) for i in range(n)]
    dets = []
    for i in range(n):
        at = arrays["image"] == i
        dets.append(
            {
                "boxes": torch.from_numpy(arrays["boxes"][at].copy()),
                "scores": torch.from_numpy(arrays["scores"][at].copy()),
                "labels": torch.zeros(int(at.sum()), dtype=torch.int64),
            }
        )
    return truth, dets


def example_losses(model, split, config) -> tuple:
    """Per-anchor loss of positive and of negative anchors over ``split`` under ``config``'s loss (Figure 4)."""
    _, logits, anchors = predict_split(model, split)
    labels = anchor_labels(model, split, anchors)
    head = model.head.classification_head
    keep = labels >= 0
    loss = head.per_anchor_loss(logits[keep], labels[keep].float())
    y = labels[keep] == 1
    return loss[y].numpy(), loss[~y].numpy()


def anchor_imbalance(split, config, model=None) -> dict:
    """Anchors per image and positive/ignored anchors per image of ``split`` under ``config``'s anchors, and
    the share of the initial loss (bias at the prior, every anchor at p = pi) that the negatives carry.
    ``model``: a detector of ``config`` already built (its anchors and matcher are not learned)."""
    from torchvision.models.detection.image_list import ImageList

    model = model if model is not None else build_detector(config)
    size = split.images.shape[-1]
    batch = ImageList(torch.zeros(1, 3, size, size), [(size, size)])
    anchors = model.anchor_generator(batch, [torch.zeros(1, 1, size // s, size // s) for s in STRIDES])[0]
    labels = anchor_labels(model, split, anchors)
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
