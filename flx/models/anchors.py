"""Anchors as fixed data: a detector's anchors depend only on the image size and the anchor layout, and a data
set's boxes never move, so which anchor matches which box, and which anchors overlap which, are computed once
and reused at every step.

- :func:`match`: torchvision's RetinaNet ``Matcher`` (IoU >= 0.5 object, < 0.4 background, in between ignored,
  ``allow_low_quality_matches``) for a whole batch of images at once, on boxes padded to a common count;
- :class:`Assignment`: the match of every image of a split, for both horizontal flips, computed once (int8);
- :class:`OverlapGraph`: for each anchor, its neighbours above an IoU threshold, so that greedy NMS over a
  ranking of the anchors (OHEM) needs no IoU at the step: :meth:`OverlapGraph.nms` is exactly
  ``torchvision.ops.nms`` on the anchors' boxes, one compiled pass (numba) that stops at the survivors needed.
"""

from __future__ import annotations

import numba
import numpy as np
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

    def nms(self, ranked: torch.Tensor, limit: int | None = None) -> torch.Tensor:
        """Greedy NMS over the anchors ``ranked`` (best first): the survivors, best first, at most ``limit``.
        Exactly what ``torchvision.ops.nms(anchors[ranked], scores, threshold)`` keeps for strictly
        decreasing scores (the first ``limit`` of it), in one pass over the candidates and their edges."""
        kept = np.empty(len(ranked), dtype=np.int64)
        suppressed = np.zeros(self.n, np.bool_)
        ranked = ranked.cpu().numpy()
        count = _greedy(
            ranked, self.indptr.numpy(), self.indices.numpy(), suppressed, kept, 0, limit or len(ranked)
        )
        return torch.from_numpy(kept[:count])


@numba.njit(cache=True, nogil=True)
def _greedy(ranked, indptr, indices, suppressed, kept, count, limit):  # pragma: no cover (compiled)
    """Greedy NMS over the anchors ``ranked`` (best first), going on from ``count`` survivors already in
    ``kept`` and their ``suppressed`` neighbours: appends each survivor, stops at ``limit``; returns the count.
    An ``indptr`` of zeros (no edges) keeps every anchor: no NMS."""
    for a in ranked:
        if count == limit:
            break
        if suppressed[a]:
            continue
        kept[count] = a
        count += 1
        for j in range(indptr[a], indptr[a + 1]):
            suppressed[indices[j]] = True
    return count


def ohem_keep(losses, valid, positive, k: int, ratio: float | None, graph: OverlapGraph | None):
    """OHEM's choice for a batch: per image, its anchors that are not ignored ranked by loss (ties: lower index
    first), greedy NMS over the ranking on ``graph`` (None: no NMS), and of the survivors the ``k`` best; with
    ``ratio`` (SSD's rule, which the paper's OHEM 1:3 follows), the positive survivors (at most
    ``k // (1 + ratio)``) and the best negative survivors, at most ``ratio`` per positive kept: the rest of the
    ``k`` stays unfilled (an image without a positive survivor trains on nothing). Takes (B, A)
    tensors; returns (B, k) anchor indices (-1 where fewer were kept) and the count kept per image."""
    b, a = losses.shape
    keep = np.full((b, k), -1, dtype=np.int64)
    counts = np.zeros(b, dtype=np.int64)
    indptr = (
        graph.indptr.numpy() if graph is not None else np.zeros(a + 1, dtype=np.int64)
    )  # no edges: no NMS
    indices = graph.indices.numpy() if graph is not None else np.zeros(0, dtype=np.int64)
    _ohem_keep(
        losses.detach().float().cpu().numpy(), valid.cpu().numpy(), positive.cpu().numpy(), k,
        -1.0 if ratio is None else float(ratio), indptr, indices, keep, counts,
    )  # fmt: skip
    return torch.from_numpy(keep).to(losses.device), torch.from_numpy(counts).to(losses.device)


@numba.njit(cache=True, nogil=True)
def _block(losses, idx, values, lower, upper):  # pragma: no cover (compiled)
    """The entries of ``idx`` whose negated loss lies in (lower, upper], best first (ties: lower index first)."""
    block = idx[(values > lower) & (values <= upper)]
    return block[np.argsort(-losses[block], kind="mergesort")]


@numba.njit(cache=True, nogil=True)
def _survivors(losses, idx, k, limit, indptr, indices, n):  # pragma: no cover (compiled)
    """Greedy NMS over ``idx`` ranked by loss until ``limit`` survive, ranking only as deep as it must: the
    best 4k first, then blocks twice as deep, the greedy pass going on from where it stopped."""
    values = -losses[idx]
    kept = np.empty(len(idx), dtype=np.int64)
    suppressed = np.zeros(n, np.bool_)
    count = 0
    lower = -np.inf
    m = min(len(idx), 4 * k) if limit < len(idx) else len(idx)
    while True:
        upper = np.inf if m >= len(idx) else np.partition(values.copy(), m - 1)[m - 1]
        count = _greedy(
            _block(losses, idx, values, lower, upper), indptr, indices, suppressed, kept, count, limit
        )
        if count == limit or m >= len(idx):
            return kept[:count]
        lower, m = upper, min(len(idx), 2 * m)


@numba.njit(cache=True, nogil=True)
def _ohem_keep(losses, valid, positive, k, ratio, indptr, indices, keep, counts):  # pragma: no cover
    n = losses.shape[1]
    for b in range(losses.shape[0]):
        idx = np.nonzero(valid[b])[0]
        limit = k if ratio < 0 else len(idx)
        survivors = _survivors(losses[b], idx, k, limit, indptr, indices, n)
        if ratio < 0:
            keep[b, : len(survivors)] = survivors
            counts[b] = len(survivors)
            continue
        cap = int(k // (1 + ratio))
        count = 0
        for a in survivors:  # positives first, at most cap of them
            if count < cap and positive[b, a]:
                keep[b, count] = a
                count += 1
        most = count + int(ratio * count)  # then the best negatives, at most ratio per positive
        for a in survivors:
            if count < min(k, most) and not positive[b, a]:
                keep[b, count] = a
                count += 1
        counts[b] = count
