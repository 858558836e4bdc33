"""``shapes``: a synthetic dense-detection data set in the paper's regime, for the tiny RetinaNet of
:mod:`flx.models.retinanet`.

Each image (``image_size`` px square, 64 by default) holds 1-2 **rings** (the one object class: elliptical
outlines with a ground-truth box each) among 2-5 **distractors** that resemble them (filled ellipses and
rectangle outlines of the same sizes, aspect ratios and colours) on a cluttered background (a colour gradient,
pixel noise and small specks). Objects have the same size in pixels on every canvas, so a larger canvas adds
background only: with the detector's 11,520 anchors per 64 px image (anchors of a fixed size too) about 1 in 500
anchors is positive, at 96 px 1 in ~1,100, at 128 px 1 in ~2,000 (each run records the ratio it measured).

``clutter`` (default none: the task above, image for image) adds **object-like clutter**, the hard negatives
of a real detector: arcs (a ring's outline over 90-270 degrees), broken rings (a ring with 2-4 gaps) and
ring-textured blobs (filled ellipses striped with concentric rings), of the rings' sizes and colours, about
``clutter`` of them per 64 x 64 px of canvas (so their number scales with the canvas area), painted under the
rings.

Deterministic per ``data_seed``: ``data_seed`` draws the training images; the validation (256) and test (512)
images are the same for every ``data_seed`` (streams of their own), so every run, whatever images it trained on,
is chosen on the same validation images and scored on the same test images. Generation is vectorised (about
0.1 ms per image, far below a training step).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch

N_VAL, N_TEST = 256, 512
OBJECTS = (1, 2)  # rings per image (inclusive)
DISTRACTORS = (2, 5)
SIZE = (2.625, 6.0)  # semi-axis geometric mean in px, on every canvas
WIDTH = (0.9, 1.65)  # outline thickness in px
ASPECT = (0.5, 2.0)  # width / height, log-uniform
KINDS = ("ring", "disk", "box")  # 0 is the object class; the others are distractors
CLUTTER_KINDS = ("arc", "broken", "blob")  # object-like clutter (``clutter``): hard negatives


@dataclass(frozen=True)
class DetSplit:
    """Images (N, 3, S, S) uint8 and, per image, its ground-truth boxes (K, 4) as float x1, y1, x2, y2."""

    images: torch.Tensor
    boxes: tuple
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # what is computed once per split

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_pos(self) -> int:  # objects
        return sum(len(b) for b in self.boxes)

    @property
    def n_neg(self) -> int:  # images (every image also holds distractors and background)
        return len(self.images)


def _uniform(g, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=g)


def render(n: int, size: int = 64, seed: int = 0, clutter: float | None = None) -> DetSplit:
    """``n`` images and their ring boxes, generated from ``seed`` alone; ``clutter``: object-like clutter per
    64 x 64 px (none or 0: none, and the images of the task without it)."""
    g = torch.Generator().manual_seed(seed)
    n_obj = torch.randint(OBJECTS[0], OBJECTS[1] + 1, (n,), generator=g)
    n_dis = torch.randint(DISTRACTORS[0], DISTRACTORS[1] + 1, (n,), generator=g)
    k = int((n_obj + n_dis).max())
    # shapes per image: distractors first, rings painted last (on top); unused slots are blank
    slot = torch.arange(k).expand(n, k)
    used = slot < (n_obj + n_dis)[:, None]
    kind = torch.randint(1, len(KINDS), (n, k), generator=g)
    kind[(slot >= n_dis[:, None]) & used] = 0
    s = torch.exp(_uniform(g, (n, k), math.log(SIZE[0]), math.log(SIZE[1])))
    ar = torch.exp(_uniform(g, (n, k), math.log(ASPECT[0]), math.log(ASPECT[1])))
    a, b = s * ar.sqrt(), s / ar.sqrt()  # semi-axes (x, y)
    cx = a + 1 + torch.rand(n, k, generator=g) * (size - 2 * a - 2)
    cy = b + 1 + torch.rand(n, k, generator=g) * (size - 2 * b - 2)
    colour = _uniform(g, (n, k, 3), 0.35, 1.0)
    width = _uniform(g, (n, k), *WIDTH)

    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    base = _uniform(g, (n, 3), 0.0, 0.35)
    tilt = _uniform(g, (n, 2), -0.25, 0.25)
    img = base[:, :, None, None] + (tilt[:, 0, None, None] * xx + tilt[:, 1, None, None] * yy)[:, None] / size
    img = img + 0.06 * torch.randn(n, 3, size, size, generator=g)
    specks = torch.rand(n, 1, size, size, generator=g) < 0.01
    img = torch.where(specks, _uniform(g, (n, 3, 1, 1), 0.2, 1.0), img)
    if clutter:  # drawn after everything else: without it the stream, and every image, is as before
        img = _paint_clutter(img, g, clutter * (size / 64) ** 2, size, xx, yy)
    for j in range(k):  # painter's order; each step is vectorised over the images
        dx = (xx - cx[:, j, None, None]) / a[:, j, None, None]
        dy = (yy - cy[:, j, None, None]) / b[:, j, None, None]
        r = (dx**2 + dy**2).sqrt()
        # outline thickness in the normalised radius: px width over the semi-axis at that angle
        t = width[:, j, None, None] / torch.minimum(a[:, j], b[:, j])[:, None, None]
        ring = (r <= 1) & (r >= 1 - t)
        disk = r <= 1
        inside_box = (dx.abs() <= 1) & (dy.abs() <= 1)
        box = inside_box & ((dx.abs() >= 1 - t) | (dy.abs() >= 1 - t))
        kj = kind[:, j, None, None]
        mask = torch.where(kj == 0, ring, torch.where(kj == 1, disk, box)) & used[:, j, None, None]
        img = torch.where(mask[:, None], colour[:, j, :, None, None], img)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    rings = (kind == 0) & used
    all_boxes = torch.stack([cx - a, cy - b, cx + a, cy + b], dim=-1).clamp(0, size)
    boxes = tuple(all_boxes[i][rings[i]].contiguous() for i in range(n))
    return DetSplit(images, boxes)


def _paint_clutter(img, g, per_image: float, size: int, xx, yy):
    """Object-like clutter painted onto ``img``: per image a count uniform in [0.5, 1.5] x ``per_image``
    (rounded), each shape one of :data:`CLUTTER_KINDS`, of the rings' sizes, aspect ratios, colours and widths."""
    n = len(img)
    count = torch.round(per_image * _uniform(g, n, 0.5, 1.5)).long()
    k = int(count.max())
    if k == 0:
        return img
    used = torch.arange(k).expand(n, k) < count[:, None]
    kind = torch.randint(0, len(CLUTTER_KINDS), (n, k), generator=g)
    s = torch.exp(_uniform(g, (n, k), math.log(SIZE[0]), math.log(SIZE[1])))
    ar = torch.exp(_uniform(g, (n, k), math.log(ASPECT[0]), math.log(ASPECT[1])))
    a, b = s * ar.sqrt(), s / ar.sqrt()
    cx = a + 1 + torch.rand(n, k, generator=g) * (size - 2 * a - 2)
    cy = b + 1 + torch.rand(n, k, generator=g) * (size - 2 * b - 2)
    colour = _uniform(g, (n, k, 3), 0.35, 1.0)
    width = _uniform(g, (n, k), *WIDTH)
    start = _uniform(g, (n, k), -math.pi, math.pi)  # an arc's first angle, a broken ring's phase
    span = _uniform(g, (n, k), math.pi / 2, 1.5 * math.pi)  # an arc's extent
    gaps = torch.randint(2, 5, (n, k), generator=g).float()  # a broken ring's gaps
    stripes = _uniform(g, (n, k), 2.0, 3.5)  # a blob's concentric rings
    for j in range(k):
        dx = (xx - cx[:, j, None, None]) / a[:, j, None, None]
        dy = (yy - cy[:, j, None, None]) / b[:, j, None, None]
        r = (dx**2 + dy**2).sqrt()
        t = width[:, j, None, None] / torch.minimum(a[:, j], b[:, j])[:, None, None]
        ring = (r <= 1) & (r >= 1 - t)
        angle = torch.remainder(torch.atan2(dy, dx) - start[:, j, None, None], 2 * math.pi)
        arc = ring & (angle <= span[:, j, None, None])
        broken = ring & (torch.cos(gaps[:, j, None, None] * angle) > -0.5)
        blob = (r <= 1) & (torch.remainder(r * stripes[:, j, None, None], 1.0) < 0.5)
        kj = kind[:, j, None, None]
        mask = torch.where(kj == 0, arc, torch.where(kj == 1, broken, blob)) & used[:, j, None, None]
        img = torch.where(mask[:, None], colour[:, j, :, None, None], img)
    return img


def _stream(data_seed: int, part: str) -> int:
    """A seed per (data_seed, split) so splits never share images."""
    digest = hashlib.sha256(f"shapes:{data_seed}:{part}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def load_shapes(n_images: int, image_size: int, data_seed: int = 0, clutter: float | None = None, **_):
    """(train, test, meta) with ``meta["val"]``: the validation images that every choice is made on, the same
    for every ``data_seed`` (as the test images are)."""
    from flx.data.base import digest_tensors

    train = render(n_images, image_size, _stream(data_seed, "train"), clutter)
    val = render(N_VAL, image_size, _stream(0, "val"), clutter)
    test = render(N_TEST, image_size, _stream(0, "test"), clutter)
    parts = [t for split in (train, val, test) for t in (split.images, torch.cat(split.boxes))]
    meta = {
        "location": "generated",
        "split": f"generated: {n_images} train, {N_VAL} validation, {N_TEST} test images",
        "classes": ("background", "ring"),
        "fingerprint": digest_tensors(*parts),
        "val": val,
    }
    return train, test, meta
