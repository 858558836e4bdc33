"""Loading a config's data once per process (cached), and what a run and the sweep say about it."""

from __future__ import annotations

from collections import OrderedDict

from flx.data.base import Split
from flx.errors import DataError
from flx.experiment.registries import get_dataset

_LOADED: OrderedDict = OrderedDict()  # the last CACHED data sets this process loaded
CACHED = 4
# generated data this process described and dropped: load key -> (description, copies its memory was checked for).
# Drawing it again gives the same images (the same process, code and seed), and drawing can take minutes (128 px
# shapes with clutter: about 80 s), so a sweep or comparison that plans many batches of runs draws it once.
_DESCRIBED: OrderedDict = OrderedDict()
DESCRIBED = 64


def load(
    name: str, params: tuple, data_seed: int, data_dir: str | None, copies: int = 1, progress=None, plan=False
):
    """(train, test, meta) once per process for the given data (``params`` as sorted (key, value) pairs): the
    data set, its parameters, seed and folder, and ``plan`` name it; ``copies`` (how many processes will hold
    it, for the memory check) and ``progress`` only say how to load it. ``plan``: for a data set that ``plans``
    (the image sets), only the labels and the fingerprint: no image is decoded and no backbone trained, and the
    splits' ``x`` hold no pixels (a dry run)."""
    key = (name, params, data_seed, data_dir, plan)
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    spec = get_dataset(name)
    extra = {"plan": True} if plan and spec.plans else {}
    _LOADED[key] = spec.load(
        **dict(params), data_seed=data_seed, data_dir=data_dir, copies=copies, progress=progress, **extra
    )
    while len(_LOADED) > CACHED:
        _LOADED.popitem(last=False)
    return _LOADED[key]


load.cache_clear = _LOADED.clear


def forget() -> None:
    """Drop every data set this process loaded or described (the next run draws and loads its data anew)."""
    _LOADED.clear()
    _DESCRIBED.clear()


def describe(train: Split, test: Split, meta: dict) -> dict:
    """What a record says about its data: location, how it was split, fingerprint, examples per class."""
    negative, positive = meta["classes"]
    return {
        "data_location": meta["location"],
        "data_split": meta["split"],
        "data_fingerprint": meta["fingerprint"],
        "data_classes": f"{negative}/{positive}",
        "n_train_neg": train.n_neg,
        "n_train_pos": train.n_pos,
        "n_test_neg": test.n_neg,
        "n_test_pos": test.n_pos,
        **meta.get(
            "extra", {}
        ),  # the image sets' backbone: its test AP, training time, pool size, cache file
    }


def data_info(
    config, data_dir=None, copies: int = 1, progress=None, check=None, plan=False, keep: bool = False
) -> dict:
    """:func:`describe` of a config's data, loaded (and for images decoded and cached) once here; DataError
    when the data is missing, holds one class, cannot be decoded or would not fit in memory. ``check`` (if given)
    is called with the training split while it is loaded (the sweep builds each model on it once). ``plan``
    (a dry run): image sets are only listed and fingerprinted, and ``check`` is skipped for them. ``keep``: the
    runs train in this process, which keeps the data loaded for them (else it is dropped here). Generated data
    that this process described before, for as many copies, with no model to check, is not drawn again."""
    key = (config.dataset, config.data_params(), config.data_seed, data_dir, plan)
    known = _DESCRIBED.get(key)
    if known is not None and check is None and not keep and copies <= known[1]:
        return dict(known[0])
    train, test, meta = load(*key[:4], copies, progress, plan)
    if meta.get("planned"):
        check = None  # no pixels to build a model on
    for name, split in (("train", train), ("test", test)):
        if split.n_pos == 0 or split.n_neg == 0:
            raise DataError(
                f"the {name} split of {config.dataset} ({meta['location']}) holds only one class; both are needed"
            )
    info = describe(train, test, meta)
    if check is not None:
        check(train)
    if meta["location"] == "generated":
        _DESCRIBED[key] = (dict(info), max(copies, known[1] if known else 0))
        while len(_DESCRIBED) > DESCRIBED:
            _DESCRIBED.popitem(last=False)
    if not keep:  # the parent keeps no decoded images; workers load the cache
        load.cache_clear()
    return info


def info_line(config, info: dict) -> str:
    """'catsdogs from /d/train + /d/test (given (train/ + test/)): train 8,000 cat + 800 dog; test ...'."""
    neg, pos = info["data_classes"].split("/")
    counts = (
        f"train {info['n_train_neg']:,} {neg} + {info['n_train_pos']:,} {pos}; "
        f"test {info['n_test_neg']:,} {neg} + {info['n_test_pos']:,} {pos}"
    )
    where = "" if info["data_location"] == "generated" else f" from {info['data_location']}"
    params = ", ".join(f"{k}={v}" for k, v in config.data_params() if v is not None)
    prepared = f"; prepared: {info['data_prep']}" if info.get("data_prep") else ""
    return f"data: {config.dataset} ({params}){where}, split {info['data_split']}: {counts}{prepared}"
