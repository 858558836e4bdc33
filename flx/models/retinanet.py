"""A tiny RetinaNet assembled from torchvision's detection parts, trained the paper's way, and evaluated with
pycocotools: the dense-detection regime of Lin et al. (ICCV 2017) at a size that trains on a CPU.

Parts (torchvision's, extended where the paper's experiments need it):

- backbone: four conv-BN-ReLU layers (strides 2 and 4) and torchvision's ``FeaturePyramidNetwork``: two levels,
  strides 2 and 4 (32x32 and 16x16 at 64 px), anchor sizes 6 and 12 px on every canvas (3 x stride, as
  RetinaNet's 32 px anchors at stride 8 are 4 x; the objects of :mod:`flx.data.shapes` are 5-17 px);
- ``AnchorGenerator``: ``anchor_scales`` octave scales (2^(i/n)) x ``anchor_ratios`` aspect ratios ({1} or
  {1/2, 1, 2}) per location; 3 x 3 = 9 gives 11,520 anchors per 64 px image;
- ``RetinaNet`` with its ``Matcher`` (IoU >= 0.5 object, < 0.4 background, between ignored), ``BoxCoder``,
  smooth-L1 box regression, and post-processing (score 0.05, top 1000 per level, NMS 0.5, 100 detections);
- :class:`ClassificationHead`: torchvision's head (``HEAD_CONVS`` = 2 3x3 convs here, the paper's 4; each
  conv + GroupNorm + ReLU with ``head_norm = gn``, as detectron2's and mmdetection's RetinaNet ``norm`` option
  and FCOS, or conv + ReLU with ``off``), weights drawn with the paper's sigma = 0.01, whose loss is any
  registry loss of :mod:`flx.experiment.registries`, summed over the anchors and divided by the positive
  anchors (the paper's normalisation: of the whole batch, as Detectron, detectron2 and mmdetection do, with
  ``loss_norm = batch``; of each image, as torchvision does, with ``image``); or OHEM (:func:`ohem_select`):
  anchors ranked by loss, NMS over the anchor boxes, the B highest kept, and the loss divided by the number
  kept. The classifier's last bias starts at the prior pi (b = -log((1 - pi) / pi)), or 0 with ``prior = none``.

Training: SGD (momentum 0.9, weight decay 1e-4), lr warm-up from lr/3 over the first 10% of steps, lr / 10 at
2/3 and 8/9 of the steps (the paper's 60k and 80k of 90k), 8 images per step, horizontal flips, gradients
clipped to a total norm of ``clip_grad`` (10; mmdetection's RetinaNet clips at 35 on its scale).
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetRegressionHead
from torchvision.ops import FeaturePyramidNetwork

from flx.experiment.registries import get_loss
from flx.models.anchors import BETWEEN, OverlapGraph, ohem_keep

STRIDES = (2, 4)


BASE_SIZES = (6, 12)  # px on every canvas: 3 x stride (RetinaNet's 32 px anchors at stride 8 are 4 x)


HEAD_CONVS = 2  # the paper's heads have 4; two keep a step at tens of ms on one core


GN_GROUPS = 4  # GroupNorm groups in the heads (16 channels: 4 per group)


SCORE_THRESH, NMS_THRESH, DETECTIONS, TOPK = 0.05, 0.5, 100, 1000


def anchor_sizes(n_scales: int) -> tuple:
    """Per level, the anchor sizes 2^(i / n_scales) x base (the paper's octave scales), the same on every
    canvas (a larger canvas adds background anchors, not larger ones)."""
    return tuple(tuple(base * 2 ** (i / n_scales) for i in range(n_scales)) for base in BASE_SIZES)


def aspect_ratios(n_ratios: int) -> tuple:
    """The paper's aspect ratios per location: {1:1} or {1:2, 1:1, 2:1}."""
    return {1: (1.0,), 3: (0.5, 1.0, 2.0)}[n_ratios]


def normalise(per_image: torch.Tensor, positives: torch.Tensor, loss_norm: str | None) -> torch.Tensor:
    """A batch's loss from each image's summed loss and its object anchors: ``batch`` divides the sum over the
    batch by the batch's object anchors (Detectron's, detectron2's and mmdetection's RetinaNet), ``image``
    divides each image's by its own and averages (torchvision's; an image with one object anchor then weighs
    its background anchors' loss many times more than the others: the spikes that knocked detectors back)."""
    if loss_norm == "image":
        return (per_image / positives.clamp(min=1)).mean()
    return per_image.sum() / positives.sum().clamp(min=1)


def norm_layer(head_norm: str | None):
    """The heads' normalisation layer: GroupNorm for ``gn``, none for ``off``."""
    return functools.partial(nn.GroupNorm, GN_GROUPS) if head_norm == "gn" else None


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

    @staticmethod
    def feature_sizes(size: int) -> list[int]:
        """The side of each pyramid level for a ``size`` px image (3x3 convs, padding 1: ceil at each stride)."""
        return [math.ceil(size / s) for s in STRIDES]

    def forward(self, x):
        c2 = self.c2(x)
        c3 = self.c3(c2)
        return self.fpn(OrderedDict([("p2", c2), ("p3", c3)]))


def ohem_select(losses, anchors, positive, k: int, graph: OverlapGraph | None, ratio: float | None = None):
    """Indices of the anchors OHEM trains on in one image: ranked by loss, NMS over their boxes (``graph``: the
    anchors' overlaps above the NMS threshold; None: no NMS), the ``k`` highest-loss survivors kept; with
    ``ratio`` (SSD's 1:3 is 3), the positive survivors (at most k / (1 + ratio)) and at most ``ratio`` hardest
    negatives per positive kept, the rest of k unfilled.
    ``anchors``: the anchor index of each entry of ``losses`` (the image's anchors that are not ignored).
    Returns positions in ``losses``. :func:`flx.models.anchors.ohem_keep` does a whole batch."""
    n = graph.n if graph is not None else int(anchors.max()) + 1 if len(anchors) else 0
    full = torch.zeros(1, n, dtype=losses.dtype)
    full[0, anchors] = losses.detach()
    valid = torch.zeros(1, n, dtype=torch.bool)
    valid[0, anchors] = True
    is_positive = torch.zeros(1, n, dtype=torch.bool)
    is_positive[0, anchors] = positive
    keep, count = ohem_keep(full, valid, is_positive, k, ratio, graph)
    position = torch.full((n,), -1, dtype=torch.int64)
    position[anchors] = torch.arange(len(anchors))
    return position[keep[0, : int(count[0])]]


@dataclass(frozen=True)
class OhemSampler:
    """Online hard example mining over a batch's anchors: anchors ranked by their loss, NMS over their boxes at
    ``nms`` (None: no NMS), the ``k`` (the paper's B) highest kept per image; with ``ratio`` (SSD's 1:3 is 3),
    the positive survivors and at most ``ratio`` hardest negatives per positive. The loss of an image is that of
    the anchors kept, divided by how many it keeps (:func:`flx.models.anchors.ohem_keep`; ``norm`` "kept" or
    None), or, with ``norm = "objects"``, by its object anchors as focal loss's is (:func:`normalise`, with the
    detector's ``loss_norm``): then OHEM's gradients have focal loss's scale at the same learning rate, where
    dividing by B makes them about B / (object anchors) times smaller."""

    k: int
    ratio: float | None = None
    nms: float | None = None
    norm: str | None = None

    def loss(self, per_anchor, positive, valid, graph: OverlapGraph | None, loss_norm=None) -> torch.Tensor:
        """The batch's OHEM loss from (B, A) per-anchor losses and masks; ``graph``: the anchors' overlaps above
        ``nms`` (None without NMS)."""
        keep, count = ohem_keep(per_anchor, valid, positive, self.k, self.ratio, graph)
        kept = per_anchor.gather(1, keep.clamp(min=0))
        kept = torch.where(keep >= 0, kept, torch.zeros_like(kept))
        if self.norm == "objects":
            return normalise(kept.sum(1), positive.sum(1), loss_norm)
        return (kept.sum(1) / count.clamp(min=1)).mean()


class ClassificationHead(RetinaNetClassificationHead):
    """torchvision's classification head with flx's losses: ``loss`` (a per-element loss: ``(logits, targets,
    reduction="none")``) summed over the anchors that are not ignored and divided by the positive anchors (the
    paper; of the batch or of each image, ``loss_norm``: :func:`normalise`), or, with a ``sampler``
    (:class:`OhemSampler`), the loss of the anchors it keeps. :meth:`batch_loss` takes a whole batch at once;
    :meth:`compute_loss` is torchvision's per-image interface (the stock path, kept for comparison)."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        loss,
        prior: float | None = 0.01,
        head_norm: str | None = None,
        loss_norm: str | None = "batch",
        sampler: OhemSampler | None = None,
        convs: int = HEAD_CONVS,
    ):
        super().__init__(in_channels, num_anchors, 1, prior or 0.5, norm_layer=norm_layer(head_norm))
        self.conv = self.conv[:convs]
        self.loss, self.loss_norm, self.sampler, self.head_norm = loss, loss_norm, sampler, head_norm
        self.anchors = None  # the anchor boxes (A, 4), set by the detector (OHEM's NMS)
        self.graph = None  # their overlaps above the OHEM NMS threshold, set by the detector

    def per_anchor_loss(self, logits, targets):
        """Element-wise loss of the configured loss (for OHEM: CE, what it ranks the anchors by)."""
        return self.loss(logits, targets, reduction="none")

    def batch_loss(self, logits: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
        """The loss of (B, A) logits against the anchors' matches (B, A): per image, the loss summed over its
        anchors that are not ignored, then divided by the positive anchors (:func:`normalise`; or OHEM's).
        Sets ``positive_loss``: the mean loss of the object anchors (every one, OHEM's too), detached."""
        positive, valid = matched >= 0, matched != BETWEEN
        per_anchor = self.per_anchor_loss(logits, positive.to(logits.dtype))
        on_objects = torch.where(positive, per_anchor.detach(), torch.zeros_like(per_anchor)).sum(1)
        self.positive_loss = (on_objects / positive.sum(1).clamp(min=1)).mean()  # the failure watch's
        if self.sampler is not None:
            return self.sampler.loss(per_anchor, positive, valid, self.graph, self.loss_norm)
        per_image = torch.where(valid, per_anchor, torch.zeros_like(per_anchor)).sum(1)
        return normalise(per_image, positive.sum(1), self.loss_norm)

    def compute_loss(self, targets, head_outputs, matched_idxs):
        logits = head_outputs["cls_logits"][..., 0]
        positive = [m >= 0 for m in matched_idxs]
        valid = [m != self.BETWEEN_THRESHOLDS for m in matched_idxs]
        per_anchor = [
            self.per_anchor_loss(lg, p.to(lg.dtype)) for lg, p in zip(logits, positive, strict=True)
        ]
        if self.sampler is not None:
            stacked = torch.stack(per_anchor), torch.stack(positive), torch.stack(valid)
            return self.sampler.loss(*stacked, self.graph, self.loss_norm)
        per_image = torch.stack([a[v].sum() for a, v in zip(per_anchor, valid, strict=True)])
        return normalise(per_image, torch.stack([p.sum() for p in positive]), self.loss_norm)

    def set_anchors(self, anchors: torch.Tensor, graph_of) -> None:
        """The anchor boxes of the batch and, for OHEM with NMS, their overlap graph (``graph_of(anchors,
        threshold)``, cached by the detector)."""
        self.anchors = anchors
        if self.sampler is not None and self.sampler.nms is not None:
            self.graph = graph_of(anchors, self.sampler.nms)


class RegressionHead(RetinaNetRegressionHead):
    """torchvision's regression head (smooth L1 on the encoded boxes of positive anchors, divided by the
    positive anchors as ``loss_norm`` says: :func:`normalise`) with the loss of a whole batch in one expression
    (:meth:`batch_loss`)."""

    def __init__(self, in_channels, num_anchors, head_norm=None, loss_norm="batch", convs: int = HEAD_CONVS):
        super().__init__(in_channels, num_anchors, norm_layer=norm_layer(head_norm))
        self.conv = self.conv[:convs]
        self._loss_type = "smooth_l1"
        self.loss_norm = loss_norm

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
        """torchvision's per-image loss, normalised per ``loss_norm`` (:func:`normalise`)."""
        regression, per_image, counts = head_outputs["bbox_regression"], [], []
        for i, m in enumerate(matched_idxs):
            counts.append(int((m >= 0).sum()))
            one = super().compute_loss(
                targets[i : i + 1], {"bbox_regression": regression[i : i + 1]}, anchors[i : i + 1], [m]
            )
            per_image.append(one * max(1, counts[-1]))  # torchvision divides by the image's own count
        return normalise(torch.stack(per_image), torch.tensor(counts), self.loss_norm)

    def batch_loss(self, regression, anchors, matched, boxes) -> torch.Tensor:
        """Box loss of (B, A, 4) regressions for anchors (A, 4), matches (B, A) into padded boxes (B, K, 4)."""
        positive = matched >= 0
        image, anchor = positive.nonzero(as_tuple=True)
        target = self.box_coder.encode_single(boxes[image, matched[image, anchor]], anchors[anchor])
        per_anchor = F.smooth_l1_loss(regression[image, anchor], target, reduction="none", beta=1.0).sum(1)
        per_image = torch.zeros(len(matched), dtype=per_anchor.dtype).index_add_(0, image, per_anchor)
        return normalise(per_image, positive.sum(1), self.loss_norm)


class Detector(RetinaNet):
    """torchvision's RetinaNet run on the images' own size (no padding to a multiple of 32): anchors for the
    real feature maps, computed once per image size; the losses of a whole batch from anchor matches computed
    once per data set (:class:`flx.models.anchors.Assignment`). torchvision's own forward (its transform,
    matcher and per-image losses) still works, for comparison."""

    def compute_loss(self, targets, head_outputs, anchors):
        cls_head = self.head.classification_head
        cls_head.set_anchors(anchors[0], self.overlap_graph)
        cls_head.anchors = anchors
        return super().compute_loss(targets, head_outputs, anchors)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch (B, 3, S, S) of uint8 (or [0, 1] float) images, normalised as torchvision's transform does,
        channels last (the convolutions' fast layout on CPUs and GPUs; :func:`build_detector` stores the
        weights so too)."""
        x = images.float().div(255) if images.dtype == torch.uint8 else images
        mean = torch.as_tensor(self.transform.image_mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.as_tensor(self.transform.image_std, dtype=x.dtype, device=x.device)[:, None, None]
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    def anchors_for(self, size: int) -> torch.Tensor:
        """The anchor boxes (A, 4) of a ``size`` px image, in the heads' output order (once per size)."""
        cache = self.__dict__.setdefault("_anchors", {})
        if size not in cache:
            batch = ImageList(torch.zeros(1, 3, size, size), [(size, size)])
            maps = [torch.zeros(1, 1, s, s) for s in self.backbone.feature_sizes(size)]
            cache[size] = self.anchor_generator(batch, maps)[0]
        return cache[size]

    def overlap_graph(self, anchors: torch.Tensor, threshold: float) -> OverlapGraph:
        """The overlaps of ``anchors`` above ``threshold`` (once per anchor layout and threshold)."""
        cache = self.__dict__.setdefault("_graphs", {})
        key = (len(anchors), float(anchors.sum()), threshold)
        if key not in cache:
            cache[key] = OverlapGraph(anchors.cpu(), threshold)
        return cache[key]

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        """(B, A) classification logits, (B, A, 4) box regressions and the feature maps of normalised ``x``."""
        features = list(self.backbone(x).values())
        out = self.head(features)
        return out["cls_logits"][..., 0], out["bbox_regression"], features

    def batch_loss(self, x: torch.Tensor, matched: torch.Tensor, boxes: torch.Tensor) -> dict:
        """torchvision's two losses for normalised images ``x`` (B, 3, S, S), their anchor matches (B, A) and
        padded boxes (B, K, 4), each over the whole batch at once."""
        size = x.shape[-1]
        anchors = self.anchors_for(size).to(x.device)
        cls_head = self.head.classification_head
        if self.training:
            cls_head.set_anchors(anchors, self.overlap_graph)
        cls_head.anchors = anchors
        logits, regression, _ = self.heads(x)
        return {
            "classification": cls_head.batch_loss(logits, matched),
            "bbox_regression": self.head.regression_head.batch_loss(regression, anchors, matched, boxes),
            "positive": cls_head.positive_loss,
        }

    @torch.no_grad()
    def predict(self, images: torch.Tensor):
        """One forward in eval mode on a (B, 3, S, S) batch: (detections per image, per-anchor logits (B, A),
        the anchors (A, 4))."""
        self.eval()
        x = self.inputs(images)
        size = x.shape[-1]
        anchors = self.anchors_for(size).to(x.device)
        logits, regression, features = self.heads(x)
        per_level = [
            f.size(2) * f.size(3) * self.anchor_generator.num_anchors_per_location()[0] for f in features
        ]
        split = {
            "cls_logits": list(logits[..., None].split(per_level, dim=1)),
            "bbox_regression": list(regression.split(per_level, dim=1)),
        }
        levels = list(anchors.split(per_level))
        dets = self.postprocess_detections(split, [levels] * len(x), [(size, size)] * len(x))
        return dets, logits, anchors


def from_config(config) -> dict:
    """The one mapping from an experiment's :class:`~flx.experiment.config.Config` to :func:`tiny_retinanet`'s
    plain arguments (detectron2's ``from_config``): the loss bound to its hyperparameters, and OHEM as a
    sampler."""
    loss = functools.partial(get_loss(config.loss), **config.hparams())
    sampler = None
    if config.loss == "ohem":
        sampler = OhemSampler(config.ohem_k, config.ohem_ratio, config.ohem_nms, config.ohem_norm)
    return {
        "hidden": config.hidden,
        "anchor_scales": config.anchor_scales,
        "anchor_ratios": config.anchor_ratios,
        "image_size": config.image_size,
        "loss": loss,
        "prior": config.prior,
        "head_norm": config.head_norm,
        "loss_norm": config.loss_norm,
        "sampler": sampler,
    }


def build_detector(config) -> Detector:
    """The tiny RetinaNet of an experiment's ``config`` (:func:`from_config`, then :func:`tiny_retinanet`)."""
    return tiny_retinanet(**from_config(config))


def tiny_retinanet(
    *,
    hidden: int,
    anchor_scales: int,
    anchor_ratios: int,
    image_size: int,
    loss,
    prior: float | None = 0.01,
    head_norm: str | None = "gn",
    loss_norm: str | None = "batch",
    sampler: OhemSampler | None = None,
) -> Detector:
    """The tiny RetinaNet from plain arguments: ``hidden`` (the FPN's and the heads' width), ``anchor_scales``
    x ``anchor_ratios`` anchors per location, images of ``image_size`` px, the classification ``loss`` (per
    element) with its ``prior`` initialisation (None: bias 0), ``head_norm`` (gn or off), ``loss_norm``
    (batch or image) and an OHEM ``sampler`` (None: every anchor)."""
    sizes = anchor_sizes(anchor_scales)
    generator = AnchorGenerator(sizes, (aspect_ratios(anchor_ratios),) * len(sizes))
    backbone = TinyBackbone(hidden)
    num_anchors = generator.num_anchors_per_location()[0]
    cls_head = ClassificationHead(hidden, num_anchors, loss, prior, head_norm, loss_norm, sampler)
    if prior is None:
        nn.init.zeros_(cls_head.cls_logits.bias)
    reg_head = RegressionHead(hidden, num_anchors, head_norm, loss_norm)
    model = Detector(
        backbone,
        num_classes=1,
        min_size=image_size,
        max_size=image_size,
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
    return model.to(memory_format=torch.channels_last)
