"""The registries: losses, data sets and models by name (plain data; a function is named by a ``module:function``
path and imported only when a run needs it), and each data set's training defaults. Imports nothing heavy.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from flx.errors import ConfigError


def import_path(module: str):
    """``importlib.import_module`` that also looks in the working folder, as ``python -m`` does (flx's console
    script does not put it on ``sys.path``), so ``--model mymodels:build`` finds ./mymodels.py."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        here = os.getcwd()
        if here in sys.path or exc.name != module.split(".")[0]:
            raise
        sys.path.append(here)
        return importlib.import_module(module)


def _resolve(path: str | Callable) -> Callable:
    """The function a registry entry names: itself (registered with flx.experiment.plugins) or ``module:name``."""
    return path if callable(path) else resolve_path(path)


@functools.cache
def resolve_path(path: str) -> Callable:
    module, name = path.split(":")
    target = import_path(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


@dataclass(frozen=True)
class LossSpec:
    """A training loss and the hyperparameters it takes (name -> default); others do not apply to it.

    ``objective`` names a function ``(logits, targets, **hyperparameters) -> scalar loss`` as ``module:name``.
    A hyperparameter no other loss has is declared with it (``declares``: its constraint) and is a field of
    :class:`flx.experiment.config.Config`: three files in all (docs: extending flx).
    """

    name: str
    objective: str
    params: dict = field(default_factory=dict)
    description: str = ""

    epoch_weight: str | None = None  # ``module:name`` of (logits, targets, **hparams) -> per-example weights
    # hyperparameters this loss brings (flx.experiment.constraint.Param); each is also a Config field
    declares: tuple = ()

    def __call__(self, logits, targets, reduction: str = "mean", weight=None, **hparams):
        """The loss of ``logits`` against 0/1 ``targets``: "mean" over the elements, or per element ("none").
        ``weight``: per-example weights computed once per epoch, for a loss with ``epoch_weight``."""
        unknown = set(hparams) - set(self.params)
        if unknown:
            raise ValueError(
                f"loss {self.name!r} takes {sorted(self.params) or 'no hyperparameters'}, not {sorted(unknown)}"
            )
        params = {k: v for k, v in {**self.params, **hparams}.items() if k not in self.detection_only}
        if weight is not None:
            params["weight"] = weight
        return _resolve(self.objective)(logits, targets, reduction=reduction, **params)

    def epoch_weights(self, logits, targets, **hparams):
        """Per-example weights from the predictions at an epoch's start (detached), or None."""
        if self.epoch_weight is None:
            return None
        params = {**self.params, **hparams}
        return _resolve(self.epoch_weight)(logits, targets, **params)

    @property
    def detection_only(self) -> tuple:
        return ("ohem_nms", "ohem_norm") if self.name == "ohem" else ()


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in [
        LossSpec("ce", "flx.losses.objectives:ce", {}, "binary cross-entropy"),
        LossSpec(
            "balanced_ce",
            "flx.losses.objectives:balanced_ce",
            {"alpha": 0.75},
            "alpha-balanced cross-entropy (FL with gamma 0)",
        ),
        LossSpec(
            "focal",
            "flx.losses.objectives:focal",
            {"alpha": 0.25, "gamma": 2.0},
            "sigmoid focal loss (Lin et al. 2017)",
        ),
        LossSpec(
            "focal_detached",
            "flx.losses.objectives:focal_detached",
            {"alpha": 0.25, "gamma": 2.0},
            "the cats-vs-dogs experiment's 'focal loss': CE weighted per example by alpha (1-p_t)^gamma, the "
            "weight computed once per epoch and detached, the same alpha for both classes",
            epoch_weight="flx.losses.objectives:focal_weight",
        ),
        LossSpec(
            "poly1",
            "flx.losses.objectives:poly1",
            {"epsilon": 1.0},
            "Poly-1 cross-entropy (Leng et al. 2022)",
        ),
        LossSpec(
            "poly1_focal",
            "flx.losses.objectives:poly1_focal",
            {"alpha": 0.25, "gamma": 2.0, "epsilon": 1.0},
            "Poly-1 focal loss",
        ),
        LossSpec(
            "ohem",
            "flx.losses.objectives:ohem",
            {"ohem_k": 256, "ohem_ratio": None, "ohem_nms": None, "ohem_norm": None},
            "CE on the k hardest examples (of a batch; of an image's anchors after NMS for detection)",
        ),
    ]
}


@dataclass(frozen=True)
class DatasetSpec:
    """A data set: its loader (``module:name``, called with its params, ``data_seed`` and ``data_dir``), its
    parameters (name -> default), the training defaults of its task (:data:`RUN_PARAMS` -> default; a run
    parameter not listed does not apply to it), the model that suits it, and whether it reads files from
    ``--data-dir``."""

    name: str
    loader: str
    params: dict = field(default_factory=dict)
    model: str = "mlp"
    needs_data_dir: bool = False
    description: str = ""
    defaults: dict = field(default_factory=lambda: dict(CLASSIFICATION_DEFAULTS))
    task: str = "classification"
    choices: dict = field(default_factory=dict)  # parameter -> the values this data set accepts for it
    required: tuple = ()  # parameters without a default that a user must give
    plans: bool = False  # its loader takes plan=True: labels and fingerprint only (a dry run decodes nothing)

    def load(self, **kwargs):
        return _resolve(self.loader)(**kwargs)


CLASSIFICATION_DEFAULTS = {"hidden": 64, "optimizer": "adam", "lr": 1e-3, "epochs": 3, "batch_size": 1024}


# Image sets: training length in steps (an epoch is a few steps on a small folder), a validation curve.
IMAGE_DEFAULTS = {
    "hidden": 64,
    "optimizer": "adam",
    "lr": 1e-3,
    "steps": 1500,
    "batch_size": 128,
    "eval_every": 100,
}


# Your tables: training length in steps, the best checkpoint on validation AP (tables of any size).
TABLE_DEFAULTS = {
    "hidden": 64,
    "optimizer": "adam",
    "lr": 1e-3,
    "steps": 2000,
    "batch_size": 256,
    "eval_every": 100,
}


BACKBONES = ("indomain", "resnet18", "resnet50", "scratch")  # flx.data.features


PRETRAINED_BACKBONES = ("resnet18", "resnet50")


# The paper's training (Section 4.1) at flx's scale: SGD, lr 0.01, 8 images per step; 9 anchors per location.
# Detection: the lr is divided by 10 at these fractions of the steps (the paper's 60k and 80k of 90k).
LR_DECAYS = (2 / 3, 8 / 9)


DETECTION_DEFAULTS = {
    "hidden": 16,
    "optimizer": "sgd",
    "lr": 0.01,
    "batch_size": 8,
    "steps": 1500,
    "anchor_scales": 3,
    "anchor_ratios": 3,
    "head_norm": "gn",
    "loss_norm": "batch",
    "clip_grad": 10.0,
    "eval_every": None,
}


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "synthetic",
            "flx.data.synthetic:load_synthetic",
            {"ratio": 1000.0, "n_samples": 520_000, "dim": 16, "hard_frac": 0.02},
            model="mlp",
            description="1:ratio Gaussian task with easy and hard negatives (>= 500 test positives by default)",
        ),
        DatasetSpec(
            "catsdogs",
            "flx.data.images:load_catsdogs",
            {"ratio": 10.0, "image_size": 32, "positive": "dog", "backbone": "indomain", "weights": None},
            model="mlp",
            needs_data_dir=True,
            description="Dogs vs. Cats photos from a folder; heads on frozen features; train split cut to 1:ratio",
            defaults=IMAGE_DEFAULTS,
            choices={"positive": ("dog", "cat")},
            plans=True,
        ),
        DatasetSpec(
            "cifar_catsdogs",
            "flx.data.cifar:load_cifar_catsdogs",
            {"ratio": 10.0, "positive": "dog", "backbone": "indomain", "weights": None},
            model="mlp",
            needs_data_dir=True,
            description="CIFAR-10 cats and dogs; heads on frozen features; train split cut to 1:ratio",
            defaults=IMAGE_DEFAULTS,
            choices={"positive": ("dog", "cat")},
            plans=True,
        ),
        DatasetSpec(
            "table",
            "flx.data.tables:load_table",
            {"data": None, "label": None, "positive": None, "test": None, "split_column": None, "drop": None},
            model="mlp",
            description="your CSV or parquet table (--data): numeric features, a --label column (flx.data.tables)",
            defaults=TABLE_DEFAULTS,
            required=("data", "label"),
        ),
        DatasetSpec(
            "images",
            "flx.data.images:load_folder",
            {
                **{"data": None, "test": None, "positive": None, "ratio": None, "image_size": 32},
                **{"backbone": "indomain", "weights": None},
            },
            model="mlp",
            description="your image folder (--data): one subfolder per class, any names; heads on frozen features",
            defaults=IMAGE_DEFAULTS,
            required=("data",),
            plans=True,
        ),
        DatasetSpec(
            "shapes",
            "flx.data.shapes:load_shapes",
            {"n_images": 2048, "image_size": 64, "clutter": None},
            model="retinanet",
            description="dense detection: rings among look-alike distractors, ~1:1000 anchors (flx.data.shapes)",
            defaults=DETECTION_DEFAULTS,
            task="detection",
        ),
    ]
}


# The built-in models, name -> its builder (module:function, imported when a run needs it); also accepted:
# registered ones, torchvision's classifiers and module:function.
MODELS = {
    "linear": "flx.models.classifiers:linear",  # (input_shape, hidden) -> a logistic regression
    "mlp": "flx.models.classifiers:mlp",  # feature vectors
    "cnn": "flx.models.classifiers:cnn",  # images
    "retinanet": "flx.models.retinanet:build_detector",  # (config) -> the tiny RetinaNet (detection)
}


MODEL_REGISTRY: dict[str, Callable] = {}  # flx.register_model: name -> fn(input_shape, hidden) -> nn.Module


IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def model_kind(name: str) -> str:
    """builtin, registered, import (module:function) or torchvision (any other name: checked when planned)."""
    if name in MODELS:
        return "builtin"
    if name in MODEL_REGISTRY:
        return "registered"
    return "import" if ":" in name else "torchvision"


def torchvision_models() -> list[str]:
    """torchvision's classification models (imports torchvision)."""
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)


OPTIMIZERS = ("adam", "sgd")


def get_loss(name: str) -> LossSpec:
    """The registered loss called ``name``; a ValueError lists the known ones otherwise."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"loss got {name!r}; accepted: one of {', '.join(LOSSES)} (or one registered in a module: --plugin)"
        ) from None


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"dataset got {name!r}; accepted: one of {', '.join(DATASETS)} (or one registered in a module: --plugin)"
        ) from None
