"""Frozen features for the image sets: a backbone turns every image into a feature vector once, and heads
(``--model linear`` or ``mlp``) train on the vectors, so a run costs about a second and seeds are cheap.

Backbones (the ``backbone`` config field):

- ``indomain``: flx's :class:`~flx.models.SmallCNN` trained by flx (recipe :data:`INDOMAIN`, cross-entropy) on a
  **disjoint, balanced pool** of the training split: images the heads never train, validate or test on (see
  :func:`flx.data.carve`). What the committed results use, since these machines have no pretrained weights.
- ``resnet18`` / ``resnet50``: torchvision's ImageNet models with their classifier removed, the original
  cats-vs-dogs experiment's setting (it used ResNet-50). ``weights``: ``imagenet`` (the default) loads the
  checkpoint from the torch hub cache (``torch.hub.get_dir()/checkpoints``), where torchvision puts it on a
  machine with internet; a file path loads that state dict; ``random`` keeps the random initialisation (a
  control, and how the tests exercise this path on machines that cannot download weights).
- ``scratch``: no backbone; ``--model cnn`` trains end to end on the images (the control).

Features are cached on disk (``FLX_CACHE_DIR``) under a digest of the backbone, its weights, the recipe, the
image size and the data (the files' fingerprint and, for ``indomain``, the pool), so every run, worker and
later sweep reuses them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from flx.data.base import cache_dir
from flx.errors import DataError
from flx.experiment.registries import PRETRAINED_BACKBONES
from flx.models.classifiers import imagenet_checkpoint, load_torchvision_weights, missing_imagenet

BACKBONES = ("indomain", "resnet18", "resnet50", "scratch")
PRETRAINED = PRETRAINED_BACKBONES  # torchvision's ImageNet classifiers, without their classifier
# The in-domain backbone's training: SmallCNN of this width, Adam, flips, cross-entropy on the balanced pool.
INDOMAIN = {"width": 32, "epochs": 12, "batch_size": 128, "lr": 1e-3, "version": 1}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _features_dir() -> Path:
    return cache_dir() / "features"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------------------------------------
# Backbones
# ------------------------------------------------------------------------------------------------------------
def weights_identity(backbone: str, weights: str) -> str:
    """What the features depend on besides the images: 'random', the checkpoint's file name, or a file's
    digest. DataError when ImageNet weights are not on this machine or the file does not exist."""
    if weights == "random":
        return "random"
    if weights == "imagenet":
        path = imagenet_checkpoint(backbone)
        if not path.is_file():
            raise missing_imagenet(backbone, path)
        return path.name
    path = Path(weights).expanduser()
    if not path.is_file():
        raise DataError(
            f"--weights got {weights!r}: no such file; accepted: imagenet, random or a state-dict file"
        )
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:24]


def pretrained_body(backbone: str, weights: str) -> nn.Module:
    """torchvision's ``backbone`` with its classifier replaced by the identity: images -> feature vectors."""
    import torchvision.models as tvm

    model = getattr(tvm, backbone)(weights=None)
    if weights != "random":
        load_torchvision_weights(model, backbone, weights)
    model.fc = nn.Identity()
    return model


def _normalize_imagenet(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def train_indomain(pool, test, seed: int, progress=None):
    """SmallCNN trained on the balanced ``pool`` (:data:`INDOMAIN`); returns (model, its test AP, seconds).
    ``progress(epoch, epochs, stage)`` after each epoch. Uses every available core (it runs before a sweep's
    workers start)."""
    started = time.perf_counter()
    threads = torch.get_num_threads()  # sweeps run workers with one thread each; this runs before them, alone
    torch.set_num_threads(
        max(threads, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    )
    try:
        model, ap = _train_indomain(pool, test, seed, progress)
    finally:
        torch.set_num_threads(threads)
    return model, ap, time.perf_counter() - started


def _train_indomain(pool, test, seed, progress):
    from sklearn.metrics import average_precision_score

    from flx.engine.fit import StepLoss, fit, shuffled_epochs
    from flx.engine.status import Watcher
    from flx.models.classifiers import SmallCNN
    from flx.models.inference import predict

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SmallCNN(3, width=INDOMAIN["width"])
    opt = torch.optim.Adam(model.parameters(), lr=INDOMAIN["lr"])
    size = INDOMAIN["batch_size"]

    def step_loss(batch) -> StepLoss:
        xb, yb, _ = batch
        return StepLoss(nn.functional.binary_cross_entropy_with_logits(model(xb), yb))

    def on_epoch(epoch, *_):
        if progress is not None:
            progress(epoch, INDOMAIN["epochs"], "training the in-domain backbone")

    total = INDOMAIN["epochs"] * math.ceil(len(pool) / size)
    batches = shuffled_epochs(pool.x, pool.y, size, g)  # images: flipped at random
    fit(model, opt, batches, step_loss, total, Watcher(explode_per="epoch"), on_epoch=on_epoch)
    scores = torch.sigmoid(predict(model, test.x)).double().numpy()
    ap = float(average_precision_score(test.y.numpy(), scores)) if 0 < test.n_pos < len(test) else math.nan
    return model, ap


@torch.no_grad()
def extract(body: nn.Module, images: torch.Tensor, prepare, batch_size: int = 256) -> torch.Tensor:
    """(N, D) float32 features of uint8 ``images`` through ``body`` in eval mode."""
    body.eval()
    out = [body(prepare(images[i : i + batch_size])).flatten(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out).float() if out else torch.empty(0, 0)


# ------------------------------------------------------------------------------------------------------------
# Cached features of a data set's splits
# ------------------------------------------------------------------------------------------------------------
def featurize(images: torch.Tensor, pool, test, backbone: str, weights: str, ident: dict, progress=None):
    """(N, D) feature vectors of every image in ``images`` (uint8, all splits; the pool's rows are not used
    later) and what the records say of the backbone. ``pool`` is the balanced Split the in-domain backbone
    trains on, ``test`` the Split its quality is measured on.

    ``ident`` identifies the images (files' fingerprint, image size, the pool's members); with the backbone,
    its weights and recipe it names the cache file, so features are computed once per machine and data set,
    whatever the ratio, loss or seed of the runs that read them."""
    from flx.data.base import write_cache

    weights_id = weights_identity(backbone, weights) if backbone in PRETRAINED else None
    key = {"backbone": backbone, "weights": weights_id, "data": ident}
    if backbone == "indomain":
        key["recipe"] = INDOMAIN
    path = _features_dir() / f"{backbone}-{_digest(key)}.pt"
    cached = _load(path, len(images))
    if cached is None:
        if backbone == "indomain":
            model, ap, seconds = train_indomain(pool, test, seed=0, progress=progress)
            from flx.models.inference import prepare_inputs

            body, prepare = model.body, prepare_inputs
            info = {"backbone_test_ap": ap, "backbone_train_s": seconds, "backbone_pool": len(pool)}
        else:
            body, prepare = pretrained_body(backbone, weights), _normalize_imagenet
            info = {"backbone_test_ap": math.nan, "backbone_train_s": 0.0, "backbone_pool": 0}
        cached = {"features": extract(body, images, prepare), "info": info}
        write_cache(path, lambda p: torch.save(cached, p))
    return cached["features"], dict(cached["info"], backbone_cache=path.name)


def _load(path: Path, n: int) -> dict | None:
    if not path.exists():
        return None
    try:
        cached = torch.load(path, weights_only=True)
        if len(cached["features"]) == n:
            return cached
    except Exception:  # a corrupt or stale cache is rebuilt
        pass
    return None
