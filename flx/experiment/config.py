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
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from flx.errors import ConfigError
from flx.experiment.params import DATA_PARAMS, LOSS_PARAMS, PARAMS, PATH_PARAMS, RUN_PARAMS, check
from flx.experiment.registries import (
    DATASETS,
    IMPORT_PATH,
    LOSSES,
    MODELS,
    PRETRAINED_BACKBONES,
    get_dataset,
    get_loss,
    model_kind,
    resolve_path,
    torchvision_models,
)
from flx.losses.bounds import epsilon_bound


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
    backbone: str | None = None  # image sets: frozen features (flx.data.features) or scratch
    weights: str | None = None  # resnet backbones: imagenet, random or a state-dict path
    data: str | None = None  # your data: a table file or an image folder (datasets table, images)
    label: str | None = None  # tables: the label column
    test: str | None = None  # your data: a table or folder holding the test split
    split_column: str | None = None  # tables: a column naming each row's split
    drop: str | None = None  # tables: columns left out, comma-separated
    data_seed: int = 0
    # model
    model: str | None = None  # None = the data set's (mlp for vectors, cnn for images)
    n_images: int | None = None  # shapes: training images
    clutter: float | None = None  # shapes: object-like clutter per 64 x 64 px (None: none)
    hidden: int | None = None  # MLP width (CNN: hidden/4; RetinaNet: FPN and head width); None = the task's
    prior: float | None = 0.01  # pi of the classifier-bias initialisation; None = bias 0
    anchor_scales: int | None = None  # detection: scales per anchor location
    anchor_ratios: int | None = None  # detection: aspect ratios per anchor location
    head_norm: str | None = None  # detection: gn or none in the heads
    loss_norm: str | None = None  # detection: the loss divided by the batch's object anchors or each image's
    # loss (None = the loss's default; blanked where it does not apply)
    loss: str = "focal"
    alpha: float | None = None
    gamma: float | None = None
    epsilon: float | None = None
    ohem_k: int | None = None
    ohem_ratio: float | None = None
    ohem_nms: float | None = None  # detection OHEM: NMS threshold over the anchors (None: no NMS)
    ohem_norm: str | None = None  # detection OHEM: divide by the kept anchors (None, "kept") or the objects
    # optimisation (None = the data set's task default: DatasetSpec.defaults; blanked where it does not apply)
    optimizer: str | None = None
    lr: float | None = None
    clip_grad: float | None = None  # detection: the largest gradient norm a step takes (0: not clipped)
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
                model = resolve_path(self.model)
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
    return {
        k: v
        for k, v in sorted(values.items())
        if v != KEY_BASELINE[k] and k not in PATH_PARAMS and not (k in BEFORE_FIELD and v == BEFORE_FIELD[k])
    }


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


# What runs did before a field existed, for fields whose new default changed that: a record without the field
# (or with it blank) reads as this value, and the value stays out of the key, so those runs keep their keys and
# the new default gets new ones. Frozen, as KEY_BASELINE is.
BEFORE_FIELD = {"loss_norm": "image", "clip_grad": 0.0}


def config_from_record(record: dict) -> Config:
    """The Config of a stored record (a dict or a CSV row, where NaN stands for None)."""
    fields = {}
    for name in CONFIG_FIELDS:
        value = record.get(name, KEY_BASELINE[name])  # a field newer than the record: its baseline value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = BEFORE_FIELD.get(name)  # normalized() blanks it again where it does not apply
        fields[name] = value
    return Config(**fields)


def default_in_words(name: str) -> str | None:
    """What config field ``name`` defaults to, read from the registries (what :meth:`Config.normalized` fills
    in): one value, or the most common value then the others with the data sets or losses they belong to
    (``"64; 16 for shapes"``); None where nothing fills it in."""
    if name == "dataset":
        return "synthetic, or table / images with --data"
    if name == "model":
        models = {spec.name: spec.model for spec in DATASETS.values()}
        return _grouped(models) + "; cnn with --backbone scratch"
    if name == "weights":
        return f"imagenet for the pretrained backbones ({', '.join(PRETRAINED_BACKBONES)})"
    registry, attr = (
        (LOSSES, "params") if name in LOSS_PARAMS
        else (DATASETS, "params") if name in DATA_PARAMS
        else (DATASETS, "defaults") if name in RUN_PARAMS
        else (None, None)
    )  # fmt: skip
    if registry is None:
        default = next(f.default for f in dataclasses.fields(Config) if f.name == name)
        return None if default is None else _word(default)
    return _grouped({spec.name: getattr(spec, attr).get(name) for spec in registry.values()}) or None


def _word(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _grouped(values: dict) -> str:
    """{entry: value} -> "most common value; other for entries; ...". The most common value is written alone
    only where every entry has a value (entries without one are left out, and then every value is named)."""
    groups: dict[str, list[str]] = {}
    for entry, value in values.items():
        if value is not None:
            groups.setdefault(_word(value), []).append(entry)
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    complete = all(value is not None for value in values.values())
    return "; ".join(
        value if i == 0 and complete else f"{value} for {', '.join(entries)}"
        for i, (value, entries) in enumerate(ranked)
    )
