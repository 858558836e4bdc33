"""The one constraint table, :data:`PARAMS` (name, type, range, help): the CLI's options, spec files and
:meth:`flx.experiment.config.Config.validate` all check values through :func:`check`, so a bad value reads the
same everywhere: ``--gamma got -1; accepted: a number in [0, 10]``.
"""

from __future__ import annotations

import re

from flx.errors import ConfigError
from flx.experiment.constraint import Param, show_value
from flx.experiment.registries import BACKBONES, DATASETS, LOSSES, OPTIMIZERS

DECLARED = tuple(p for spec in LOSSES.values() for p in spec.declares)  # set per loss, declared with it


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
            "clutter",
            float,
            "shapes: object-like clutter (arcs, broken rings, ring-textured blobs: hard negatives) per 64 x 64 px "
            "of canvas.",
            0,
            1000,
            none=True,
        ),
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
        Param(
            "drop",
            str,
            "Tables: columns to leave out of the features (ID-like columns are dropped anyway), comma-separated.",
            text="column names, comma-separated",
            whole=True,
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
        Param(
            "head_norm",
            str,
            "Detection: the heads' normalisation, gn (conv + GroupNorm + ReLU) or off (conv + ReLU).",
            choices=lambda: ("gn", "off"),
        ),
        Param(
            "loss_norm",
            str,
            "Detection: the loss divided by the batch's object anchors (batch: Detectron, detectron2, mmdetection) "
            "or each image's by its own (image: torchvision).",
            choices=lambda: ("batch", "image"),
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
        Param(
            "ohem_norm",
            str,
            "Detection OHEM: what the kept anchors' loss is divided by: kept (how many were kept, B at most) or "
            "objects (the object anchors, as focal loss is; --loss-norm applies).",
            choices=lambda: ("kept", "objects"),
            none=True,
        ),
        *DECLARED,  # hyperparameters a loss of the registry brings with it (LossSpec.declares)
        # optimisation
        Param("optimizer", str, "Optimiser.", choices=lambda: OPTIMIZERS),
        Param("lr", float, "Learning rate.", 0, 1e6, True),
        Param(
            "clip_grad",
            float,
            "Detection: each step's gradients scaled down to this total norm when above it (0: not clipped).",
            0,
            1e9,
        ),
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
        Param(
            "seeds",
            int,
            "Seeds per setting: N for seeds 0..N-1, or A-B for seeds A to B (e.g. 5-9: fresh seeds for a re-check).",
            1,
            MAX_RUNS,
        ),
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


SEED_RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")


def check_seeds(value, label: str = "seeds"):
    """A sweep's seeds: a count N (seeds 0..N-1, returned as an int) or a range "A-B" (seeds A to B inclusive,
    returned as "A-B"); ConfigError naming the value otherwise."""
    accepted = f"an integer in [1, {MAX_RUNS:g}] (seeds 0..N-1) or a range A-B of seeds (e.g. 5-9)"
    match = SEED_RANGE.fullmatch(value) if isinstance(value, str) else None
    if match:
        a, b = int(match[1]), int(match[2])
        if a <= b < 2**31 and b - a < MAX_RUNS:
            return f"{a}-{b}"
    else:
        try:
            return check("seeds", value, label)
        except ConfigError:
            pass
    raise ConfigError(f"{label} got {show_value(value, int)}; accepted: {accepted}")


def seed_list(seeds) -> list[int]:
    """The seeds that :func:`check_seeds`'s value names."""
    if isinstance(seeds, str):
        a, b = map(int, seeds.split("-"))
        return list(range(a, b + 1))
    return list(range(seeds))


def parse_list(name: str, text: str, label: str | None = None) -> list:
    """'0,0.5,2' -> [0.0, 0.5, 2.0] for ``name``, each item checked; duplicates dropped, order kept."""
    label = label or PARAMS[name].option
    if PARAMS[name].whole:  # its commas separate the parts of one value
        return [check(name, text, label)]
    items = [t.strip() for t in str(text).split(",")]
    if not str(text).strip() or any(not t for t in items):
        raise ConfigError(
            f"{label} got {text!r}; accepted: a comma-separated list of {PARAMS[name].accepted()}"
        )
    values = [check(name, item, label) for item in items]
    return list(dict.fromkeys(values))


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
    *("ratio", "n_samples", "dim", "hard_frac", "image_size", "positive", "n_images", "clutter"),
    *("backbone", "weights", "data", "label", "test", "split_column", "drop"),
)  # per data set


PATH_PARAMS = ("data", "test")  # stored as absolute paths, left out of the run key (the fingerprint has them)


LOSS_PARAMS = (
    *("alpha", "gamma", "epsilon", "ohem_k", "ohem_ratio", "ohem_nms", "ohem_norm"),
    *(p.name for p in DECLARED),
)


RUN_PARAMS = (
    *("hidden", "optimizer", "lr", "clip_grad", "epochs", "steps", "batch_size"),
    *("anchor_scales", "anchor_ratios", "head_norm", "loss_norm", "eval_every"),
)  # per task
