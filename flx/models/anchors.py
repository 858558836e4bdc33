"""Anchors as fixed data: a detector's anchors depend only on the image size and the anchor layout, and a data
set's boxes never move, so which anchor matches which box, and which anchors overlap which, are computed once
and reused at every step.

- :func:`match`: torchvision's RetinaNet ``Matcher`` (IoU >= 0.5 object, < 0.4 background, in between ignored,
  ``allow_low_quality_matches``) for a whole batch of images at once, on boxes padded to a common count;
- :class:`Assignment`: the match of every image of a split, for both horizontal flips, computed once (int8);
- :class:`OverlapGraph`: for each anchor, its neighbours above an IoU threshold, so that greedy NMS over a
  ranking of the anchors (OHEM) needs no IoU at the step: :meth:`OverlapGraph.nms` is exactly
  ``torchvision.ops.nms`` on the anchors' boxes.
"""

from __future__ import annotations

import torch

FG_IOU, BG_IOU = 0.5, 0.4  # RetinaNet's matcher (torchvision's defaults, the paper's thresholds)
BELOW, BETWEEN = -1, -2  # background, ignored (torchvision's Matcher.BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of (..., N, 4) and (..., M, 4) x1y1x2y2 boxes, (..., N, M), computed as ``torchvision.ops.box_iou``
    and its NMS kernel do (the same float operations in the same order)."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[..., :, None] + area2[..., None, :] - inter)


def pad_boxes(boxes: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (K_i, 4) boxes -> (N, K, 4) padded with zeros, and (N,) counts."""
    counts = torch.tensor([len(b) for b in boxes], dtype=torch.int64)
    k = max(1, int(counts.max())) if len(boxes) else 1
    out = torch.zeros(len(boxes), k, 4)
    for i, b in enumerate(boxes):
        out[i, : len(b)] = b
    return out, counts


def flip_boxes(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Boxes (..., 4) of an image of width ``size`` mirrored left to right."""
    return torch.stack([size - boxes[..., 2], boxes[..., 1], size - boxes[..., 0], boxes[..., 3]], dim=-1)


def match(anchors: torch.Tensor, boxes: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(N, A) matched box index per image and anchor (``BELOW`` background, ``BETWEEN`` ignored), for padded
    ``boxes`` (N, K, 4) with ``counts`` real boxes each: torchvision's ``Matcher(0.5, 0.4,
    allow_low_quality_matches=True)`` applied to each image, in one expression. An image without boxes is all
    background."""
    iou = box_iou(boxes, anchors)  # (N, K, A)
    real = torch.arange(boxes.shape[1]) < counts[:, None]  # (N, K)
    iou = torch.where(real[:, :, None], iou, torch.tensor(-1.0))
    best, matches = iou.max(dim=1)  # (N, A): the box of highest IoU (the first on ties, as torchvision)
    out = matches.clone()
    out[best < BG_IOU] = BELOW
    out[(best >= BG_IOU) & (best < FG_IOU)] = BETWEEN
    # low-quality matches: every anchor whose IoU with a box is that box's highest keeps its best box
    highest = iou.max(dim=2, keepdim=True).values  # (N, K, 1)
    low_quality = ((iou == highest) & real[:, :, None]).any(dim=1)  # (N, A)
    out = torch.where(low_quality, matches, out)
    return torch.where(counts[:, None] > 0, out, torch.full_like(out, BELOW))


class Assignment:
    """The anchor match of every image of a detection split, unflipped and flipped, computed once (int8,
    ``2 x N x A`` bytes), with the padded boxes the matched indices point into."""

    def __init__(self, split, anchors: torch.Tensor, chunk: int = 256):
        size = split.images.shape[-1]
        boxes, self.counts = pad_boxes(list(split.boxes))
        if boxes.shape[1] > 127:
            raise ValueError(f"{boxes.shape[1]} boxes in one image; the assignment stores indices as int8")
        self.boxes = torch.stack([boxes, flip_boxes(boxes, size)])  # (2, N, K, 4)
        self.matched = torch.empty(2, len(boxes), len(anchors), dtype=torch.int8)
        for f in (0, 1):
            for lo in range(0, len(boxes), chunk):
                hi = lo + chunk
                self.matched[f, lo:hi] = match(anchors, self.boxes[f, lo:hi], self.counts[lo:hi]).to(
                    torch.int8
                )

    def batch(self, idx: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(matched (B, A) int64, boxes (B, K, 4)) of images ``idx`` with flips ``flip`` (bool)."""
        f = flip.long()
        return self.matched[f, idx].long(), self.boxes[f, idx]


class OverlapGraph:
    """For each anchor, the anchors whose IoU with it is above ``threshold`` (CSR: ``indptr``, ``indices``),
    from the anchors alone, once per layout."""

    def __init__(self, anchors: torch.Tensor, threshold: float, chunk: int = 2048):
        self.threshold = float(threshold)
        self.n = len(anchors)
        rows, cols = [], []
        for lo in range(0, self.n, chunk):
            iou = box_iou(anchors[lo : lo + chunk], anchors)
            r, c = torch.nonzero(iou.double() > self.threshold, as_tuple=True)
            keep = r + lo != c
            rows.append(r[keep] + lo)
            cols.append(c[keep])
        rows, cols = torch.cat(rows), torch.cat(cols)
        self.indptr = torch.zeros(self.n + 1, dtype=torch.int64)
        self.indptr[1:] = torch.bincount(rows, minlength=self.n).cumsum(0)
        self.indices = cols  # already grouped by row, in row order

    def edges(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(position in ``nodes``, neighbouring anchor) for every neighbour of every anchor of ``nodes``."""
        start, stop = self.indptr[nodes], self.indptr[nodes + 1]
        degree = stop - start
        src = torch.repeat_interleave(torch.arange(len(nodes)), degree)
        offset = torch.arange(int(degree.sum())) - torch.repeat_interleave(degree.cumsum(0) - degree, degree)
        return src, self.indices[start[src] + offset]

    def nms(self, ranked: torch.Tensor | list) -> torch.Tensor | list:
        """Greedy NMS over the anchors ``ranked`` (best first): the survivors, best first. Exactly what
        ``torchvision.ops.nms(anchors[ranked], scores, threshold)`` keeps for strictly decreasing scores.
        A list of rankings (one per image) is decided together and gives a list.

        Decided in rounds over the graph: an anchor is kept once every better-ranked neighbour is suppressed,
        and suppressed once a better-ranked neighbour is kept (the result of the sequential greedy pass)."""
        if isinstance(ranked, torch.Tensor):
            return self.nms([ranked])[0]
        sizes = [len(r) for r in ranked]
        offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0)
        src, dst = [], []
        for r, offset in zip(ranked, offsets.tolist(), strict=True):
            rank = torch.full((self.n,), len(r), dtype=torch.int64)
            rank[r] = torch.arange(len(r))
            s, d = self.edges(r)
            d = rank[d]
            better = d < s  # a neighbour ranked above (and among the candidates)
            src.append(s[better] + offset)
            dst.append(d[better] + offset)
        src, dst = torch.cat(src), torch.cat(dst)
        m = sum(sizes)
        state = torch.zeros(m, dtype=torch.int8)  # 0 undecided, 1 kept, 2 suppressed
        while True:
            undecided = state == 0
            if not bool(undecided.any()):
                break
            neighbour = state[dst]
            by_kept = torch.zeros(m, dtype=torch.int32).index_add_(0, src, (neighbour == 1).int()) > 0
            waiting = torch.zeros(m, dtype=torch.int32).index_add_(0, src, (neighbour == 0).int()) > 0
            state[undecided & by_kept] = 2
            state[undecided & ~by_kept & ~waiting] = 1
        return [r[k == 1] for r, k in zip(ranked, state.split(sizes), strict=True)]
