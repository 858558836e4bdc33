"""What a run is and which values are accepted: the constraint table, the loss and data-set registries, the
:class:`Config` dataclass with its run key, and spec files. Imports nothing heavy (no torch), so every value a
user types is checked before torch loads.

- :data:`PARAMS` is the one constraint table (name, type, range, help). The CLI's options, spec files and
  :meth:`Config.validate` all check values through :func:`check`, so a bad value reads the same everywhere:
  ``--gamma got -1; accepted: a number in [0, 10]``.
- :data:`LOSSES` and :data:`DATASETS` are the registries: a new loss or data set is one entry here (its
  function is named by a ``module:function`` path and imported when a run needs it).
- A run's identity is :meth:`Config.key`: a hash of the config's fields that differ from :data:`KEY_BASELINE`
  plus a fingerprint of the data, so adding a field with a default keeps every existing key, and other files
  never share a key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from flx.errors import ConfigError  # noqa: F401 (part of this module's interface)


# ------------------------------------------------------------------------------------------------------------
# Registries: losses and data sets (plain data; functions are imported only when a run needs them)
# ------------------------------------------------------------------------------------------------------------
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
    """The function a registry entry names: itself (registered with flx.registry) or ``module:name``."""
    return path if callable(path) else _resolve_path(path)


@functools.cache
def _resolve_path(path: str) -> Callable:
    module, name = path.split(":")
    target = import_path(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


@dataclass(frozen=True)
class LossSpec:
    """A training loss and the hyperparameters it takes (name -> default); others do not apply to it.

    ``objective`` names a function ``(logits, targets, **hyperparameters) -> scalar loss`` as ``module:name``.
    """

    name: str
    objective: str
    params: dict = field(default_factory=dict)
    description: str = ""

    epoch_weight: str | None = None  # ``module:name`` of (logits, targets, **hparams) -> per-example weights

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
        return ("ohem_nms",) if self.name == "ohem" else ()


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in [
        LossSpec("ce", "flx.losses:_ce", {}, "binary cross-entropy"),
        LossSpec(
            "balanced_ce",
            "flx.losses:_balanced_ce",
            {"alpha": 0.75},
            "alpha-balanced cross-entropy (FL with gamma 0)",
        ),
        LossSpec(
            "focal",
            "flx.losses:_focal",
            {"alpha": 0.25, "gamma": 2.0},
            "sigmoid focal loss (Lin et al. 2017)",
        ),
        LossSpec(
            "focal_detached",
            "flx.losses:_focal_detached",
            {"alpha": 0.25, "gamma": 2.0},
            "the cats-vs-dogs experiment's 'focal loss': CE weighted per example by alpha (1-p_t)^gamma, the "
            "weight computed once per epoch and detached, the same alpha for both classes",
            epoch_weight="flx.losses:focal_weight",
        ),
        LossSpec("poly1", "flx.losses:_poly1", {"epsilon": 1.0}, "Poly-1 cross-entropy (Leng et al. 2022)"),
        LossSpec(
            "poly1_focal",
            "flx.losses:_poly1_focal",
            {"alpha": 0.25, "gamma": 2.0, "epsilon": 1.0},
            "Poly-1 focal loss",
        ),
        LossSpec(
            "ohem",
            "flx.losses:_ohem",
            {"ohem_k": 256, "ohem_ratio": None, "ohem_nms": None},
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
BACKBONES = ("indomain", "resnet18", "resnet50", "scratch")  # flx.features
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
    "eval_every": None,
}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "synthetic",
            "flx.data:load_synthetic",
            {"ratio": 1000.0, "n_samples": 520_000, "dim": 16, "hard_frac": 0.02},
            model="mlp",
            description="1:ratio Gaussian task with easy and hard negatives (>= 500 test positives by default)",
        ),
        DatasetSpec(
            "catsdogs",
            "flx.data:load_catsdogs",
            {"ratio": 10.0, "image_size": 32, "positive": "dog", "backbone": "indomain", "weights": None},
            model="mlp",
            needs_data_dir=True,
            description="Dogs vs. Cats photos from a folder; heads on frozen features; train split cut to 1:ratio",
            defaults=IMAGE_DEFAULTS,
            choices={"positive": ("dog", "cat")},
        ),
        DatasetSpec(
            "cifar_catsdogs",
            "flx.data:load_cifar_catsdogs",
            {"ratio": 10.0, "positive": "dog", "backbone": "indomain", "weights": None},
            model="mlp",
            needs_data_dir=True,
            description="CIFAR-10 cats and dogs; heads on frozen features; train split cut to 1:ratio",
            defaults=IMAGE_DEFAULTS,
            choices={"positive": ("dog", "cat")},
        ),
        DatasetSpec(
            "table",
            "flx.tables:load_table",
            {"data": None, "label": None, "positive": None, "test": None, "split_column": None},
            model="mlp",
            description="your CSV or parquet table (--data): numeric features, a --label column (flx.tables)",
            defaults=TABLE_DEFAULTS,
            required=("data", "label"),
        ),
        DatasetSpec(
            "images",
            "flx.data:load_folder",
            {
                **{"data": None, "test": None, "positive": None, "ratio": None, "image_size": 32},
                **{"backbone": "indomain", "weights": None},
            },
            model="mlp",
            description="your image folder (--data): one subfolder per class, any names; heads on frozen features",
            defaults=IMAGE_DEFAULTS,
            required=("data",),
        ),
        DatasetSpec(
            "shapes",
            "flx.shapes:load_shapes",
            {"n_images": 2048, "image_size": 48},
            model="retinanet",
            description="dense detection: rings among look-alike distractors, ~1:1000 anchors (flx.shapes)",
            defaults=DETECTION_DEFAULTS,
            task="detection",
        ),
    ]
}
MODELS = ("linear", "mlp", "cnn", "retinanet")  # built in; also: registered, torchvision's, module:function
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
# Figures a spec's [report] table may ask for (drawn by flx.plots.FIGURES, which must match these names).
FIGURES = {
    "ap_vs_param": "mean AP against the most-swept hyperparameter",
    "loss_vs_pt": "the paper's Figure 1: focal loss against p_t",
    "pr_curves": "precision-recall curves of the three best settings (from their stored test scores)",
    "loss_cdf": "the paper's Figure 4: loss CDF of trained models (from their stored test scores)",
    "learning_curves": "validation AP against training steps (runs with eval_every)",
    "detection_loss_cdf": "the paper's Figure 4 on the detector's anchors (the FL run's stored anchor logits)",
    "examples": "test images with ground truth and the detections of CE and FL (stored with the runs)",
}
PAPER_TABLES = ("table1a", "table1b", "table1c", "table1d")


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


# ------------------------------------------------------------------------------------------------------------
# The constraint table
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One accepted value: a number in a range (``open_*`` excludes the bound), an integer, or a choice;
    ``none`` allows the word none (a setting that is off, e.g. no prior initialisation)."""

    name: str
    kind: type  # float, int or str
    help: str
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    choices: Callable[[], tuple] | None = None
    none: bool = False
    text: str = ""  # a str parameter without choices: any non-empty text, described by this
    pattern: str = ""  # a str parameter's regular expression (full match), if any
    path: bool = False  # a file or folder: made absolute (relative to the working folder) when checked

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def accepted(self) -> str:
        if self.text:
            text = self.text
        elif self.choices is not None:
            text = f"one of {', '.join(map(str, self.choices()))}"
        else:
            what = "an integer" if self.kind is int else "a number"
            lo = "(" if self.open_low else "["
            hi = ")" if self.open_high else "]"
            text = f"{what} in {lo}{self.low:g}, {self.high:g}{hi}"
        return text + (", or none" if self.none else "")

    def check(self, value, label: str | None = None):
        """The value in its canonical type (None for 'none'), or ConfigError: '{label} got {value}; accepted: ...'."""
        label = label or self.name
        bad = ConfigError(f"{label} got {_show(value, self.kind)}; accepted: {self.accepted()}")
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            if self.none:
                return None
            raise bad
        if self.kind is str:
            if not isinstance(value, str) or not value.strip():
                raise bad
            if self.choices is not None and value not in self.choices():
                raise bad
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise bad
            return os.path.abspath(os.path.expanduser(value)) if self.path else value
        if isinstance(value, str):  # command-line text
            try:
                value = float(value.strip())
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        if self.kind is int:
            if value != int(value):
                raise bad
            value = int(value)
        else:
            value = float(value)
        below = value <= self.low if self.open_low else value < self.low
        above = value >= self.high if self.open_high else value > self.high
        if below or above or (self.choices is not None and value not in self.choices()):
            raise bad
        return value


def _show(value, kind: type = str) -> str:
    """A value as the user typed it: numbers bare (also when typed as text), names quoted."""
    if isinstance(value, str) and kind is not str:
        try:
            float(value)
            return value.strip()
        except ValueError:
            pass
    if isinstance(value, str) or value is None:
        return repr(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


MAX_RUNS = 100_000  # a sweep larger than this is refused (it would not finish, and planning it takes minutes)
PARAMS: dict[str, Param] = {
    p.name: p
    for p in [
        # data
        Param("dataset", str, "Data set.", choices=lambda: tuple(DATASETS)),
        Param("ratio", float, "Negatives per positive (the train split's, for image sets).", 1, 1e6),
        Param("n_samples", int, "synthetic: examples per split.", 10, 10_000_000),
        Param("dim", int, "synthetic: feature dimension.", 1, 4096),
        Param("hard_frac", float, "synthetic: fraction of negatives that are hard.", 0, 1),
        Param("image_size", int, "Image sets: images are resized to SIZE x SIZE pixels.", 8, 1024),
        Param("n_images", int, "shapes: training images.", 1, 1_000_000),
        Param(
            "data",
            str,
            "Your data: a CSV/parquet table (dataset table) or a folder with one subfolder of images per class "
            "(dataset images); sets --dataset.",
            text="the path of a .csv, .tsv or .parquet file or of an image folder",
            path=True,
        ),
        Param("label", str, "Tables: the column holding each row's class.", text="a column name"),
        Param(
            "positive",
            str,
            "The minority (positive) class: dog or cat (catsdogs, cifar_catsdogs), a label value (table) or a "
            "class folder's name (images); every other class is negative.",
            text="a class name or label value",
        ),
        Param(
            "test",
            str,
            "Your data: a second table or image folder holding the test split.",
            text="the path of a file or folder",
            path=True,
        ),
        Param(
            "split_column",
            str,
            "Tables: a column whose values (train, val, test) say each row's split.",
            text="a column name",
        ),
        Param("data_seed", int, "Seed of data generation and splitting.", 0, 2**31 - 1),
        Param(
            "backbone",
            str,
            "Image sets: frozen features from indomain (flx trains it on a disjoint balanced pool), resnet18 or "
            "resnet50 (torchvision, ImageNet weights), or scratch (end-to-end CNN on the images).",
            choices=lambda: BACKBONES,
        ),
        Param(
            "weights",
            str,
            "resnet backbones: the weights (imagenet: torchvision's checkpoint in the torch hub cache).",
            text="imagenet, random, or the path of a state-dict file",
        ),
        # model
        Param(
            "model",
            str,
            "Model: linear, mlp (feature vectors), cnn (images), retinanet (shapes), a model registered with "
            "flx.register_model, a torchvision classification model (e.g. resnet18: trains on the images; "
            "--weights) or module:function returning an nn.Module.",
            text="a model name or module:function",
        ),
        Param("hidden", int, "Model width: MLP (CNN: hidden/4; RetinaNet: FPN and head channels).", 1, 4096),
        Param("prior", float, "Bias-init prior pi of the classifier.", 0, 1, True, True, none=True),
        Param("anchor_scales", int, "Detection: anchor scales per location (octaves 2^(i/N)).", 1, 4),
        Param(
            "anchor_ratios",
            int,
            "Detection: anchor aspect ratios per location (1: {1}; 3: {1/2, 1, 2}).",
            choices=lambda: (1, 3),
        ),
        # loss
        Param("loss", str, "Loss.", choices=lambda: tuple(LOSSES)),
        Param("alpha", float, "Positive-class weight (balanced_ce, focal losses).", 0, 1),
        Param("gamma", float, "Focusing parameter (focal losses).", 0, 10),
        Param("epsilon", float, "Poly-1 epsilon (poly1, poly1_focal).", -100, 100),
        Param("ohem_k", int, "OHEM: examples kept per batch.", 1, 10_000_000),
        Param("ohem_ratio", float, "OHEM: most negatives per positive.", 0, 1e9, True, none=True),
        Param(
            "ohem_nms", float, "Detection OHEM: NMS IoU threshold over the anchors.", 0, 1, True, none=True
        ),
        # optimisation
        Param("optimizer", str, "Optimiser.", choices=lambda: OPTIMIZERS),
        Param("lr", float, "Learning rate.", 0, 1e6, True),
        Param("epochs", int, "Training epochs (synthetic).", 1, 100_000),
        Param("steps", int, "Training steps (image sets, detection).", 1, 10_000_000),
        Param(
            "eval_every",
            int,
            "Record the validation AP every N steps (image sets also keep the best checkpoint).",
            1,
            10_000_000,
        ),
        Param("batch_size", int, "Minibatch size.", 1, 10_000_000),
        Param("seed", int, "Seed of initialisation and batch order.", 0, 2**31 - 1),
        # a sweep
        Param("seeds", int, "Seeds 0..N-1 per setting.", 1, MAX_RUNS),
        Param(
            "workers",
            int,
            "Parallel worker processes (on CPU capped at the available cores; on GPUs: --per-gpu per GPU).",
            1,
            4096,
        ),
        Param(
            "device",
            str,
            "Where runs train: auto (a CUDA or MPS GPU if torch finds one, else cpu), cpu, cuda (every GPU, "
            "workers spread over them), cuda:N or mps.",
            text="auto, cpu, cuda, cuda:N or mps",
            pattern=r"auto|cpu|mps|cuda(:\d+)?",
        ),
        Param("per_gpu", int, "Workers per GPU when runs train on GPUs.", 1, 64),
    ]
}


def check(name: str, value, label: str | None = None):
    """``value`` checked against the constraint table and returned in its canonical type."""
    return PARAMS[name].check(value, label)


def parse_list(name: str, text: str, label: str | None = None) -> list:
    """'0,0.5,2' -> [0.0, 0.5, 2.0] for ``name``, each item checked; duplicates dropped, order kept."""
    label = label or PARAMS[name].option
    items = [t.strip() for t in str(text).split(",")]
    if not str(text).strip() or any(not t for t in items):
        raise ConfigError(
            f"{label} got {text!r}; accepted: a comma-separated list of {PARAMS[name].accepted()}"
        )
    values = [check(name, item, label) for item in items]
    return list(dict.fromkeys(values))


# ------------------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------------------
# What a record says about its data (flx.data.describe): where, how split, its fingerprint, examples per class.
DATA_COLUMNS = (
    "data_location",
    "data_split",
    "data_fingerprint",
    "data_classes",
    "n_train_neg",
    "n_train_pos",
    "n_test_neg",
    "n_test_pos",
)
DATA_PARAMS = (
    *("ratio", "n_samples", "dim", "hard_frac", "image_size", "positive", "n_images"),
    *("backbone", "weights", "data", "label", "test", "split_column"),
)  # per data set
PATH_PARAMS = ("data", "test")  # stored as absolute paths, left out of the run key (the fingerprint has them)
LOSS_PARAMS = ("alpha", "gamma", "epsilon", "ohem_k", "ohem_ratio", "ohem_nms")  # set per loss
RUN_PARAMS = (
    *("hidden", "optimizer", "lr", "epochs", "steps", "batch_size"),
    *("anchor_scales", "anchor_ratios", "eval_every"),
)  # per task


@dataclass(frozen=True)
class Config:
    # data (None = the data set's default; blanked where it does not apply)
    dataset: str = "synthetic"
    ratio: float | None = None  # negatives per positive (train split for the image sets)
    n_samples: int | None = None  # synthetic: examples per split
    dim: int | None = None  # synthetic: feature dimension
    hard_frac: float | None = None  # synthetic: fraction of negatives that are hard
    image_size: int | None = None  # image sets: images are resized to image_size x image_size
    positive: str | None = None  # image sets: the minority (positive) class, "dog" or "cat"
    backbone: str | None = None  # image sets: frozen features (flx.features) or scratch
    weights: str | None = None  # resnet backbones: imagenet, random or a state-dict path
    data: str | None = None  # your data: a table file or an image folder (datasets table, images)
    label: str | None = None  # tables: the label column
    test: str | None = None  # your data: a table or folder holding the test split
    split_column: str | None = None  # tables: a column naming each row's split
    data_seed: int = 0
    # model
    model: str | None = None  # None = the data set's (mlp for vectors, cnn for images)
    n_images: int | None = None  # shapes: training images
    hidden: int | None = None  # MLP width (CNN: hidden/4; RetinaNet: FPN and head width); None = the task's
    prior: float | None = 0.01  # pi of the classifier-bias initialisation; None = bias 0
    anchor_scales: int | None = None  # detection: scales per anchor location
    anchor_ratios: int | None = None  # detection: aspect ratios per anchor location
    # loss (None = the loss's default; blanked where it does not apply)
    loss: str = "focal"
    alpha: float | None = None
    gamma: float | None = None
    epsilon: float | None = None
    ohem_k: int | None = None
    ohem_ratio: float | None = None
    ohem_nms: float | None = None  # detection OHEM: NMS threshold over the anchors (None: no NMS)
    # optimisation (None = the data set's task default: DatasetSpec.defaults; blanked where it does not apply)
    optimizer: str | None = None
    lr: float | None = None
    epochs: int | None = None  # classification
    steps: int | None = None  # detection
    eval_every: int | None = None  # detection: validation AP every N steps (a learning curve)
    batch_size: int | None = None
    seed: int = 0

    def normalized(self) -> Config:
        """Defaults filled in, non-applicable parameters set to None, values checked and in canonical types."""
        values = dataclasses.asdict(self)
        if values["data"] is not None and values["dataset"] == "synthetic":  # --data picks table or images
            values["dataset"] = "images" if Path(values["data"]).expanduser().is_dir() else "table"
        data = get_dataset(values["dataset"])
        loss = get_loss(self.loss)
        if values["data"] is not None and "data" not in data.params:
            raise ConfigError(
                f"data got {values['data']!r} for dataset {data.name}; --data is your own data (datasets table, "
                "images: leave --dataset out)"
                + (", catsdogs reads --data-dir" if data.needs_data_dir else "")
            )
        for names, defaults in (
            (DATA_PARAMS, data.params),
            (LOSS_PARAMS, loss.params),
            (RUN_PARAMS, data.defaults),
        ):
            for name in names:  # the default where the parameter applies, None where it does not
                given = values[name] if values[name] is not None else defaults.get(name)
                values[name] = given if name in defaults else None
        kind = model_kind(values["model"]) if values["model"] else "builtin"
        if kind == "torchvision" and self.backbone is None and "backbone" in data.params:
            values["backbone"] = "scratch"  # a torchvision classifier trains on the images themselves
        if kind == "torchvision" and "weights" in data.params:
            pass  # its weights as given (none: random initialisation)
        elif values["backbone"] not in PRETRAINED_BACKBONES:
            values["weights"] = None
        elif values["weights"] is None:
            values["weights"] = "imagenet"
        for name, accepted in data.choices.items():
            if values[name] not in accepted:
                raise ConfigError(
                    f"{name} got {values[name]!r} for {data.name}; accepted: one of {', '.join(accepted)}"
                )
        for name in data.required:
            if values[name] is None:
                raise ConfigError(
                    f"dataset {data.name} needs {PARAMS[name].option}: {PARAMS[name].accepted()}"
                )
        images = values["backbone"] == "scratch" or (data.model == "cnn" and values["backbone"] is None)
        values["model"] = values["model"] or ("cnn" if images else data.model)
        _check_model(data.name, values["model"], values["backbone"], images, data.task)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, value in values.items():  # None only where the default is None (or "none" is accepted)
            if value is not None or PARAMS[name].none or defaults[name] is not None:
                values[name] = check(name, value)
        normalized = type(self)(**values)
        check_epsilon(normalized)
        return normalized

    def validate(self) -> None:
        """ConfigError naming the first bad value and what is accepted (None: a default / not applicable)."""
        for name, value in dataclasses.asdict(self).items():
            if value is not None:
                check(name, value)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The normalized fields that differ from :data:`KEY_BASELINE`: what makes this run this run. Paths
        (:data:`PATH_PARAMS`) are left out: the data's fingerprint says what was in them."""
        return _identity(self.normalized().to_dict())

    def config_key(self) -> str:
        """Hash of :meth:`identity` and the data's paths (not its content): tells the planned runs apart and
        matches them to stored ones in a report."""
        values = self.normalized().to_dict()  # normalized once (planning calls this per grid point)
        paths = {k: values[k] for k in PATH_PARAMS if values[k] is not None}
        return _digest(_identity(values) | paths)

    def key(self, data_fingerprint: str) -> str:
        """The run's identity in the store: its config (:meth:`identity`) and its data's fingerprint."""
        return _digest({"config": self.identity(), "data": data_fingerprint})

    def hparams(self) -> dict:
        """The loss's hyperparameters of this (normalized) config."""
        return {name: getattr(self, name) for name in get_loss(self.loss).params}

    def data_params(self) -> tuple:
        return tuple(sorted((n, getattr(self, n)) for n in get_dataset(self.dataset).params))

    def check_runnable(self) -> None:
        """ConfigError when a path the run reads (``data``, ``test``) does not exist or its model cannot be
        found (a module:function that does not import, a name torchvision does not know). Checked when a run
        is planned, not in :meth:`normalized`: a stored run's report needs neither its data nor its model."""
        kind = model_kind(self.model) if self.model else "builtin"
        if kind == "import":
            try:
                model = _resolve_path(self.model)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(
                    f"model got {self.model!r}, which cannot be imported ({type(exc).__name__}: {exc}); accepted: "
                    "module:function of an importable module (on PYTHONPATH or in the working folder)"
                ) from None
            if not callable(model):
                raise ConfigError(
                    f"model got {self.model!r}, which is not a function; accepted: module:function"
                )
        elif kind == "torchvision" and self.model not in torchvision_models():
            import difflib

            close = difflib.get_close_matches(self.model, torchvision_models() + list(MODELS), 3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"model got {self.model!r}{hint}; accepted: {', '.join(MODELS)}, a registered model, a torchvision "
                "classification model or module:function"
            )
        for name in PATH_PARAMS:
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise ConfigError(
                    f"{PARAMS[name].option} got {value!r}: no such file or folder; accepted: {PARAMS[name].accepted()}"
                )


def _check_model(dataset: str, model: str, backbone: str | None, images: bool, task: str) -> None:
    """ConfigError when the model cannot take the data: cnn and torchvision's need images, linear and mlp
    feature vectors; a module:function path must look like one. Registered models take any classification."""
    kind = model_kind(model)
    if kind == "import" and not IMPORT_PATH.match(model):
        raise ConfigError(f"model got {model!r}; accepted: module:function, e.g. mymodels:build")
    if kind in ("registered", "import") and task != "detection":
        return
    if kind == "torchvision":
        ok, accepted = (
            images and task != "detection",
            "linear or mlp on feature vectors (--backbone scratch: images)",
        )
        if not ok:
            raise ConfigError(
                f"model got {model!r} for {dataset}: torchvision's models take images; accepted: {accepted}"
            )
        return
    if task == "detection":
        ok, accepted = model == "retinanet", "retinanet"
    elif images:
        ok, accepted = model == "cnn", "cnn (backbone scratch trains on the images)"
    else:
        ok, accepted = model in ("linear", "mlp"), "linear or mlp (on feature vectors)"
    if not ok:
        where = f"{dataset} with backbone {backbone}" if backbone else dataset
        hint = "; or --backbone scratch for the cnn" if backbone and backbone != "scratch" else ""
        raise ConfigError(f"model got {model!r} for {where}; accepted: {accepted}{hint}")


def epsilon_bound(alpha: float | None = None) -> float:
    """The smallest epsilon for which a Poly-1 loss is a loss (never falls as a prediction gets more wrong).

    Poly-1 CE, -log p_t + eps (1 - p_t): its slope in p_t is -1/p_t - eps, negative for every p_t iff eps >= -1.
    Poly-1 FL with alpha_t, alpha_t (1 - p_t)^gamma (-log p_t) + eps (1 - p_t)^(gamma + 1): near p_t = 1 it is
    (alpha_t + eps)(1 - p_t)^(gamma + 1), so eps >= -alpha_t is needed, and it is enough (the loss is then
    alpha_t (1 - p_t)^gamma (-log p_t - (1 - p_t)) + (alpha_t + eps)(1 - p_t)^(gamma + 1), both terms rising
    in 1 - p_t). alpha_t is alpha for positives and 1 - alpha for negatives, so eps >= -min(alpha, 1 - alpha);
    without alpha (None or negative: off), eps >= -1."""
    if alpha is None or alpha < 0:
        return -1.0
    return -min(alpha, 1 - alpha)


def check_epsilon(config: Config) -> None:
    """ConfigError when a Poly-1 config's epsilon is below :func:`epsilon_bound`."""
    if config.loss not in ("poly1", "poly1_focal") or config.epsilon is None:
        return
    alpha = config.alpha if config.loss == "poly1_focal" else None
    bound = epsilon_bound(alpha)
    if config.epsilon < bound:
        where = f"{config.loss} with alpha {alpha:g}" if alpha is not None else config.loss
        raise ConfigError(
            f"epsilon got {config.epsilon:g}; accepted: a number >= {bound:g} for {where} (below it the loss "
            "falls as a prediction gets more wrong: epsilon >= -min(alpha, 1 - alpha), or -1 without alpha)"
        )


def _identity(values: dict) -> dict:
    """:meth:`Config.identity` of normalized ``values``."""
    return {k: v for k, v in sorted(values.items()) if v != KEY_BASELINE[k] and k not in PATH_PARAMS}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(Config))
# Values left out of the run key. Frozen: a field added later gets its default here once, and an entry never
# changes, even when a default does (a run with the old default then keeps its key and a new default gets a
# new one). Everything not listed is None.
KEY_BASELINE = {name: None for name in CONFIG_FIELDS} | {
    "dataset": "synthetic",
    "data_seed": 0,
    "hidden": 64,
    "prior": 0.01,
    "loss": "focal",
    "optimizer": "adam",
    "lr": 1e-3,
    "epochs": 3,
    "batch_size": 1024,
    "seed": 0,
}
assert set(PARAMS) >= set(CONFIG_FIELDS)
assert set(RUN_PARAMS) >= {p for spec in DATASETS.values() for p in spec.defaults}
assert set(LOSS_PARAMS) >= {p for spec in LOSSES.values() for p in spec.params}
assert set(DATA_PARAMS) >= {p for spec in DATASETS.values() for p in spec.params}


def config_from_record(record: dict) -> Config:
    """The Config of a stored record (a dict or a CSV row, where NaN stands for None)."""
    fields = {}
    for name in CONFIG_FIELDS:
        value = record.get(name, KEY_BASELINE[name])  # a field newer than the record: its baseline value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = None
        fields[name] = value
    return Config(**fields)


# ------------------------------------------------------------------------------------------------------------
# Spec files: [config] fixed fields, [[grid]] lists, seeds, [report] layout
# ------------------------------------------------------------------------------------------------------------
SPEC_KEYS = ("name", "description", "config", "grid", "seeds", "out", "report")
REPORT_KEYS = {
    "best_over": "a config field to pick the best value of per row (as Table 1b picks alpha)",
    "paper": f"the paper's table to cite beside each row: one of {', '.join(PAPER_TABLES)}",
    "figures": f"a list of figures: {', '.join(FIGURES)}",
    "claims": "[[report.claims]] tables, each a claim of the paper declared before the runs (see CLAIM_KEYS)",
}
CLAIM_KEYS = {
    "name": "what the claim says, e.g. 'FL beats the best OHEM'",
    "a": "the setting the paper says is better: a table of config fields; several matching settings: the one "
    "with the best mean validation AP",
    "b": "the setting it is compared with (same rules)",
    "metric": "the test metric compared (default ap)",
    "direction": "greater (a's metric above b's, the default), less, or equivalent (a within margin of b)",
    "margin": "equivalent: the largest difference that counts as none, e.g. 0.01 AP (required there)",
    "min_seeds": "paired seeds needed for a verdict (default 3; 5 for the headline claims)",
    "failures": "the metric a diverged or collapsed run scores (default: such seeds are left out)",
    "paper": "the paper's numbers, quoted beside the verdict",
}


def empty_spec() -> dict:
    return {"name": "sweep", "description": "", "config": {}, "grid": [{}], "seeds": 1, "report": {}}


def load_spec(path: str | os.PathLike) -> dict:
    """A TOML spec, every value checked: {"name", "description", "config", "grid": [{field: [values]}],
    "seeds", "out", "report"}. ConfigError (one line, naming the file) for anything flx would not run."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"spec file {path} does not exist; give a TOML file such as experiments/table1a.toml"
        )
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"spec file {path} is not valid TOML: {exc}") from None
    return validate_spec(spec, str(path))


def validate_spec(spec: dict, where: str = "spec") -> dict:
    """A spec dict checked and normalized (grid values as lists, seeds an integer, [report] known keys)."""
    if not spec:
        raise ConfigError(f"spec file {where} is empty; give at least a [[grid]] or [config] table")
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise ConfigError(
            f"spec file {where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(SPEC_KEYS)}"
        )
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise ConfigError(f"spec file {where}: [config] must be a table of field = value")
    grids = spec.get("grid", [{}])
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise ConfigError(f"spec file {where}: [[grid]] must be tables of field = [values]")
    out = {
        "name": str(spec.get("name") or Path(where).stem),
        "description": str(spec.get("description", "")),
        "config": {k: _check_field(k, v, f"spec file {where}: [config] {k}") for k, v in config.items()},
        "grid": [],
        "seeds": check("seeds", spec.get("seeds", 1), f"spec file {where}: seeds"),
        "report": _check_report(spec.get("report", {}), where),
    }
    if "out" in spec:
        out["out"] = str(spec["out"])
    for grid in grids:
        checked = {}
        for k, values in grid.items():
            if k == "seeds":  # this grid's own number of seeds (0..N-1)
                checked[k] = check("seeds", values, f"spec file {where}: [[grid]] seeds")
                continue
            values = values if isinstance(values, list) else [values]
            if not values:
                raise ConfigError(
                    f"spec file {where}: [[grid]] {k} is an empty list; give at least one value"
                )
            checked[k] = [_check_field(k, v, f"spec file {where}: [[grid]] {k}") for v in values]
        out["grid"].append(checked)
    return out


def _check_field(name: str, value, label: str):
    if name not in CONFIG_FIELDS:
        raise ConfigError(
            f"{label.rsplit(' ', 1)[0]}: unknown config field {name!r}; known: {', '.join(CONFIG_FIELDS)}"
        )
    return check(name, value, label)


def _check_report(report, where: str) -> dict:
    if not isinstance(report, dict):
        raise ConfigError(f"spec file {where}: [report] must be a table")
    unknown = set(report) - set(REPORT_KEYS)
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in REPORT_KEYS.items())
        raise ConfigError(f"spec file {where}: [report] has unknown key(s) {sorted(unknown)}; known: {known}")
    best_over = report.get("best_over")
    if best_over is not None and best_over not in CONFIG_FIELDS:
        raise ConfigError(
            f"spec file {where}: [report] best_over got {best_over!r}; accepted: {REPORT_KEYS['best_over']}"
        )
    paper = report.get("paper")
    if paper is not None and paper not in PAPER_TABLES:
        raise ConfigError(
            f"spec file {where}: [report] paper got {paper!r}; accepted: {REPORT_KEYS['paper']}"
        )
    claims = report.get("claims", [])
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise ConfigError(f"spec file {where}: [report] claims must be [[report.claims]] tables")
    for i, claim in enumerate(claims, 1):
        _check_claim(claim, f"spec file {where}: [[report.claims]] {i}")
    figures = report.get("figures", [])
    if not isinstance(figures, list) or any(f not in FIGURES for f in figures):
        bad = figures if not isinstance(figures, list) else [f for f in figures if f not in FIGURES]
        raise ConfigError(
            f"spec file {where}: [report] figures got {bad!r}; accepted: {REPORT_KEYS['figures']}"
        )
    return dict(report)


def _check_claim(claim: dict, where: str) -> None:
    from flx.metrics import METRICS

    unknown = set(claim) - set(CLAIM_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {', '.join(CLAIM_KEYS)}")
    for key in ("name", "a", "b"):
        if key not in claim:
            raise ConfigError(f"{where}: {key} is missing; {key}: {CLAIM_KEYS[key]}")
    for side in ("a", "b"):
        if not isinstance(claim[side], dict) or not claim[side]:
            raise ConfigError(f"{where}: {side} got {claim[side]!r}; accepted: {CLAIM_KEYS[side]}")
        for k, v in claim[side].items():
            claim[side][k] = _check_field(k, v, f"{where}: {side}.{k}")
    if claim.get("metric", "ap") not in METRICS:
        raise ConfigError(f"{where}: metric got {claim['metric']!r}; accepted: one of {', '.join(METRICS)}")
    direction = claim.get("direction", "greater")
    if direction not in ("greater", "less", "equivalent"):
        raise ConfigError(
            f"{where}: direction got {claim['direction']!r}; accepted: greater, less or equivalent"
        )
    margin = claim.get("margin")
    if direction == "equivalent" and (
        isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < math.inf
    ):
        raise ConfigError(f"{where}: margin got {margin!r}; accepted: a number > 0 ({CLAIM_KEYS['margin']})")
    if direction != "equivalent" and margin is not None:
        raise ConfigError(f'{where}: margin is only for direction = "equivalent"; remove it')
    claim["min_seeds"] = check("seeds", claim.get("min_seeds", 3), f"{where}: min_seeds")
    failures = claim.get("failures")
    if failures is not None and (isinstance(failures, bool) or not isinstance(failures, (int, float))):
        raise ConfigError(f"{where}: failures got {failures!r}; accepted: a number")


def _toml_value(value) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def dump_spec(spec: dict) -> str:
    """A spec as TOML (what load_spec reads), so a results directory records the grid that really ran."""
    lines = [
        f"{k} = {_toml_value(spec[k])}"
        for k in ("name", "description", "seeds")
        if spec.get(k) not in (None, "")
    ]
    report = {k: v for k, v in (spec.get("report") or {}).items() if k != "claims"}
    for name, table in (("config", spec.get("config")), ("report", report)):
        if table:
            lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for grid in spec["grid"]:
        lines += ["", "[[grid]]"] + [f"{k} = {_toml_value(v)}" for k, v in grid.items()]
    for claim in (spec.get("report") or {}).get("claims", []):
        lines += ["", "[[report.claims]]"]
        for k, v in claim.items():
            if isinstance(v, dict):
                v = "{ " + ", ".join(f"{f} = {_toml_value(x)}" for f, x in v.items()) + " }"
            else:
                v = _toml_value(v)
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"
