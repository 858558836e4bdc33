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
  :mod:`flx.experiment.registries`, summed over an image's anchors and divided by its positive anchors (the paper's
  normalisation); or OHEM (:func:`ohem_select`): anchors ranked by loss, NMS over the anchor boxes, the B
  highest kept, and the loss divided by the number kept. The classifier's last bias starts at the prior
  pi (b = -log((1 - pi) / pi)), or 0 with ``prior = none``.

Training: SGD (momentum 0.9, weight decay 1e-4), lr warm-up from lr/3 over the first 10% of steps, lr / 10 at
2/3 and 8/9 of the steps (the paper's 60k and 80k of 90k), 8 images per step, horizontal flips.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetRegressionHead
from torchvision.ops import FeaturePyramidNetwork, nms

from flx.experiment.registries import get_loss

STRIDES = (2, 4)


BASE_SIZES = (8, 16)  # at 64 px (scaled with the image): 4 x stride, as RetinaNet's 32 px anchors at stride 8


HEAD_CONVS = 1  # torchvision's heads have 4; one keeps a step at tens of ms on one core


SCORE_THRESH, NMS_THRESH, DETECTIONS, TOPK = 0.05, 0.5, 100, 1000


def anchor_sizes(n_scales: int, image_size: int = 64) -> tuple:
    """Per level, the anchor sizes 2^(i / n_scales) x base (the paper's octave scales)."""
    return tuple(
        tuple(base * image_size / 64 * 2 ** (i / n_scales) for i in range(n_scales)) for base in BASE_SIZES
    )


def aspect_ratios(n_ratios: int) -> tuple:
    return {1: (1.0,), 3: (0.5, 1.0, 2.0)}[n_ratios]


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
