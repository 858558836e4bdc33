"""The run record: what one run stored, every field named once with its type, unit and meaning.

:data:`FIELDS` is the one list of what a record may hold, in the order of ``runs.csv``'s columns:

- the run (``key``, ``status``), then every :class:`~flx.experiment.config.Config` field (its meaning is the
  constraint table's help, :data:`flx.experiment.params.PARAMS`);
- the metrics (:data:`flx.experiment.metrics.METRICS`);
- how training went, provenance, the data, and what only some runs have (the detector's anchors and
  gradients, learning curves, the device's name).

:class:`RunRecord` is built by the engine (:func:`flx.engine.run.run`) and read by attribute (``record.ap``,
``record.status``) by the store, ``runs.csv``, the store's SQL view, ``flx runs``, the exports, the report and
``flx compare``; as a read-only mapping (``record["ap"]``) it also reads as the dict older code and user
scripts expect. A run's artefacts (test scores, detections: bytes) travel beside its fields
(``record.artefacts``), never inside them. Records written by older versions of flx load through :func:`migrate`, keeping their keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from flx.experiment.config import CONFIG_FIELDS, Config
from flx.experiment.metrics import METRICS
from flx.experiment.params import PARAMS


@dataclass(frozen=True)
class Field:
    """One field of a record: its name (the JSON key and the ``runs.csv`` column), type, unit and meaning."""

    name: str
    type: str
    unit: str
    meaning: str


def _config_fields() -> list[Field]:
    types = {f.name: str(f.type) for f in dataclasses.fields(Config)}
    return [Field(n, types[n], "", PARAMS[n].help) for n in CONFIG_FIELDS]


def _metric_fields() -> list[Field]:
    return [
        Field(m.name, "float", "" if m.name == "train_loss" else "[0, 1]", m.label) for m in METRICS.values()
    ]


_RUN = [
    Field("key", "str", "", "the run's identity: a hash of its config and its data's fingerprint"),
    Field("status", "str", "", "ok, diverged, collapsed or failed (flx.engine.status)"),
]


_TRAINING = [
    Field("epochs_run", "int", "epochs", "epochs trained (classification with epochs; 0 for a failed run)"),
    Field("steps_run", "int", "steps", "optimizer steps taken (runs with steps)"),
    Field("best_step", "int", "steps", "the checkpoint tested: the best validation AP (early stopping)"),
    Field("wall_time_s", "float", "s", "training and evaluation time"),
    Field("error", "str", "", "why the run failed, diverged or collapsed (None when ok)"),
]


_PROVENANCE = [
    Field("flx_version", "str", "", "flx's version"),
    Field("torch_version", "str", "", "torch's version"),
    Field("git_commit", "str", "", "the commit of the checkout that ran it"),
    Field("git_dirty", "bool", "", "whether flx's code differed from that commit"),
    Field("code_diff", "str", "", "a hash of that difference (None when clean)"),
    Field("host", "str", "", "the machine's name"),
    Field(
        "cpu_capability",
        "str",
        "",
        "the instruction set torch's CPU kernels used (DEFAULT, AVX2, AVX512...): results are bit-identical only within one",
    ),
]


_DATA = [
    Field("data_location", "str", "", "where the data came from (generated, or its folder / file)"),
    Field("data_split", "str", "", "how the test split was made"),
    Field("data_fingerprint", "str", "", "a hash of the data's content (part of the key)"),
    Field("data_classes", "str", "", "negative/positive class names"),
    Field("n_train_neg", "int", "examples", "negatives in the training split"),
    Field("n_train_pos", "int", "examples", "positives in the training split"),
    Field("n_test_neg", "int", "examples", "negatives in the test split"),
    Field("n_test_pos", "int", "examples", "positives in the test split"),
    Field("backbone_test_ap", "float", "[0, 1]", "the in-domain backbone's AP on the test split"),
    Field("backbone_train_s", "float", "s", "time the in-domain backbone took to train"),
    Field("backbone_pool", "int", "images", "images in the backbone's balanced pool"),
    Field("backbone_cache", "str", "", "the file the backbone's features are cached in"),
    Field(
        "data_prep",
        "str",
        "",
        "what was done to a table: columns dropped, encoded, imputed (flx.data.prepare)",
    ),
    Field("data_time_s", "float", "s", "time this run spent loading data (0 when the process had it)"),
    Field("startup_s", "float", "s", "the worker's start-up (torch import), on its first run only"),
]


_DETECTION = [
    Field("max_grad_norm", "float", "", "the largest total gradient norm of the run, before clipping"),
    Field("rebound", "float", "share", "how near the run came to a knock-back (0.9 or more is one)"),
    Field("anchors_per_image", "int", "anchors", "anchors per image"),
    Field("pos_anchors_per_image", "float", "anchors", "object anchors per validation image"),
    Field("ignored_anchors_per_image", "float", "anchors", "anchors in the matcher's ignored IoU band"),
    Field("imbalance", "float", "ratio", "background anchors per object anchor"),
    Field("neg_loss_share", "float", "share", "the background's share of the initial loss"),
    Field("detections", "int", "boxes", "detections above the score threshold on the test images"),
    Field(
        "hard_negatives",
        "float",
        "anchors",
        "hard negatives: background anchors above p 0.05 per test image (what a trained detector still confuses)",
    ),
    Field("curve", "str", "JSON", "[[epoch or step, val AP(, val AP50)], ...]: the learning curve"),
    Field("train_curve", "str", "JSON", "[[epoch or step, mean training loss], ...]"),
    Field("device", "str", "", "where it trained: cpu, cuda, cuda:N or mps"),
    Field("collapse_step", "int", "steps", "the step a detector was knocked back or stopped at"),
    Field("device_name", "str", "", "the GPU's name (CUDA runs)"),
    Field("extra", "dict", "", "keys of an older record that no field names (kept by migrate)"),
    Field(
        "created_at", "str", "UTC", "when the store wrote the record (ISO 8601; the store's, not the JSON's)"
    ),
]


FIELDS: dict[str, Field] = {
    f.name: f
    for f in [*_RUN, *_config_fields(), *_metric_fields(), *_TRAINING, *_PROVENANCE, *_DATA, *_DETECTION]
}


class RunRecord(Mapping):
    """One run's fields (:data:`FIELDS`; a field not set reads as None) and, beside them, its artefacts
    (``artefacts``: name -> bytes, stored next to the record, never in it). Read-only: :meth:`replace` makes a
    changed copy. Building one with a name that is not a field raises ValueError (a typo is a bug)."""

    __slots__ = ("_values", "artefacts")

    def __init__(self, values: Mapping | None = None, artefacts: Mapping | None = None, **more):
        values = {**(values or {}), **more}
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise ValueError(f"not RunRecord fields: {sorted(unknown)}")
        object.__setattr__(self, "_values", {n: values[n] for n in FIELDS if n in values})
        object.__setattr__(self, "artefacts", dict(artefacts or {}))

    def __getattr__(self, name: str):
        if name in FIELDS:
            return self._values.get(name)
        raise AttributeError(f"RunRecord has no field {name!r}")

    def __setattr__(self, name, value):
        raise AttributeError("a RunRecord is read-only: use record.replace(field=value)")

    def __getitem__(self, name: str):
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"RunRecord(key={self.key!r}, status={self.status!r}, {len(self)} fields)"

    def __reduce__(self):  # pickles across worker processes and Ray
        return (RunRecord, (self._values, self.artefacts))

    def replace(self, **changes) -> RunRecord:
        return RunRecord({**self._values, **changes}, self.artefacts)

    def to_dict(self) -> dict:
        """The fields as a plain dict in :data:`FIELDS` order (what the store writes as JSON)."""
        return dict(self._values)

    def config(self) -> Config:
        """The run's :class:`Config` (fields newer than the record read as their old value)."""
        from flx.experiment.config import config_from_record

        return config_from_record(self._values)


def migrate(stored: Mapping) -> RunRecord:
    """A record as stored by any version of flx, as a RunRecord: keys that no field names (none in records of
    flx 0.3; a hand-edited store may have some) are kept under ``extra`` rather than dropped, and every value
    is kept as stored (NaN is stored as null). The key is never changed."""
    values, extra = {}, dict(stored.get("extra") or {})
    for name, value in stored.items():
        if name != "extra":
            (values if name in FIELDS else extra)[name] = value
    if extra:
        values["extra"] = extra
    return RunRecord(values)


def columns(present) -> list[str]:
    """``runs.csv``'s columns for records holding ``present`` (names): the fields in :data:`FIELDS` order."""
    present = set(present)
    return [n for n in FIELDS if n in present]
