"""Data sets: a registry of name -> loader and its parameters (with defaults).

Each loader returns a :class:`Split` pair (train, test) of float/uint8 feature tensors and 0/1 labels, where 1
is the rare (positive) class. Loaders are deterministic: the same parameters give the same tensors.

- ``synthetic``: 1:``ratio`` positives:negatives; negatives are mostly easy (far from the positives) with a
  fraction ``hard_frac`` of hard ones on a wider shell around the positives (so the boundary is non-linear and
  the easy/hard imbalance focal loss targets is really there). Both splits have the same ratio.
- ``catsdogs``: Kaggle "Dogs vs. Cats" photos from a folder (``cat.N.jpg``/``dog.N.jpg`` or one subfolder per
  class); decoded once and cached as a uint8 tensor.
- ``cifar_catsdogs``: CIFAR-10's cats and dogs (torchvision's download, or its python pickles on disk).

For both image sets the positive (minority) class, dogs by default, is subsampled to 1:``ratio`` in the train
split only; the test split keeps its natural balance.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

CLASSES = ("cat", "dog")
DATA_HELP = (
    "give --data-dir or set FLX_DATA_DIR to a folder holding Kaggle's Dogs vs. Cats train/ images "
    "(https://www.kaggle.com/c/dogs-vs-cats/data), e.g. ../shared/data"
)


class DataError(ValueError):
    """Missing or malformed data: says where flx looked and how to get the data."""


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, D) float32 or (N, 3, H, W) uint8
    y: torch.Tensor  # (N,) float32 in {0, 1}

    @property
    def n_pos(self) -> int:
        return int(self.y.sum())

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load: Callable[..., tuple[Split, Split]]
    params: dict = field(default_factory=dict)
    model: str = "mlp"
    needs_data_dir: bool = False
    description: str = ""


# ------------------------------------------------------------------------------------------------------------
# synthetic
# ------------------------------------------------------------------------------------------------------------
HARD_SPREAD = 2.0  # hard negatives: std 2 around the positives (std 1); Bayes AP about 0.92 by default


def _synthetic_split(n: int, dim: int, ratio: float, hard_frac: float, g: torch.Generator) -> Split:
    n_pos = max(1, round(n / (ratio + 1)))
    n_neg = n - n_pos
    n_hard = round(hard_frac * n_neg)
    n_easy = n_neg - n_hard
    centre = torch.zeros(dim)
    centre[0] = 8.0  # easy negatives sit at the origin, 8 standard deviations away
    pos = centre + torch.randn(n_pos, dim, generator=g)
    hard = centre + HARD_SPREAD * torch.randn(n_hard, dim, generator=g)  # same centre, wider: a shell
    easy = torch.randn(n_easy, dim, generator=g)
    x = torch.cat([pos, hard, easy])
    y = torch.cat([torch.ones(n_pos), torch.zeros(n_neg)])
    order = torch.randperm(n, generator=g)
    return Split(x[order].contiguous(), y[order].contiguous())


def load_synthetic(n_samples: int, dim: int, ratio: float, hard_frac: float, data_seed: int = 0, **_):
    g = torch.Generator().manual_seed(data_seed)
    return (
        _synthetic_split(n_samples, dim, ratio, hard_frac, g),
        _synthetic_split(n_samples, dim, ratio, hard_frac, g),
    )


# ------------------------------------------------------------------------------------------------------------
# cats vs dogs from a folder (Kaggle layout or one folder per class)
# ------------------------------------------------------------------------------------------------------------
_FLAT = re.compile(r"^(cat|dog)\.(\d+)\.(jpe?g|png)$", re.IGNORECASE)
_CLASS_DIRS = {"cat": ("cat", "cats", "Cat", "Cats"), "dog": ("dog", "dogs", "Dog", "Dogs")}
_IMAGE = re.compile(r"\.(jpe?g|png)$", re.IGNORECASE)


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    value = data_dir if data_dir is not None else os.environ.get("FLX_DATA_DIR")
    return Path(value).expanduser() if value else None


def find_catsdogs_images(data_dir: Path) -> list[tuple[Path, int]]:
    """(path, label) pairs, label 1 = dog, sorted; looks in DIR, DIR/dogs-vs-cats/train, DIR/dogs-vs-cats, DIR/train."""
    candidates = [
        data_dir,
        data_dir / "dogs-vs-cats" / "train",
        data_dir / "dogs-vs-cats",
        data_dir / "train",
    ]
    for folder in candidates:
        if not folder.is_dir():
            continue
        flat = []
        for entry in os.scandir(folder):
            m = _FLAT.match(entry.name)
            if m:
                flat.append((m.group(1).lower(), int(m.group(2)), Path(entry.path)))
        if flat:
            flat.sort()
            return [(p, CLASSES.index(c)) for c, _, p in flat]
        per_class = []
        for label, cls in enumerate(CLASSES):
            for sub in _CLASS_DIRS[cls]:
                if (folder / sub).is_dir():
                    files = sorted(p for p in (folder / sub).iterdir() if _IMAGE.search(p.name))
                    per_class += [(p, label) for p in files]
                    break
        if per_class and len({label for _, label in per_class}) == 2:
            return per_class
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(f"no cat/dog images found (looked in {looked}); {DATA_HELP}")


def _cache_dir() -> Path:
    return Path(os.environ.get("FLX_CACHE_DIR", Path.home() / ".cache" / "flx")).expanduser()


def decode_images(files: list[tuple[Path, int]], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All images as one (N, 3, S, S) uint8 tensor plus labels, cached on disk by file list and size."""
    import numpy as np
    from PIL import Image

    h = hashlib.sha256(f"{image_size}".encode())
    for p, label in files:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    cache = _cache_dir() / f"catsdogs-{image_size}-{h.hexdigest()[:16]}.pt"
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            return blob["x"], blob["y"]
        except Exception:  # a corrupt cache is rebuilt
            pass
    x = torch.empty(len(files), 3, image_size, image_size, dtype=torch.uint8)
    for i, (p, _) in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                x[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        except OSError as exc:
            raise DataError(f"cannot decode image {p}: {exc}; remove or replace the file") from None
    y = torch.tensor([label for _, label in files], dtype=torch.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    torch.save({"x": x, "y": y}, tmp)
    os.replace(tmp, cache)  # atomic: concurrent workers never read half a file
    return x, y


def _imbalance(x, y, ratio: float, positive: str, g: torch.Generator) -> Split:
    """Relabel so that ``positive`` is 1 and keep 1 positive per ``ratio`` negatives (at least one)."""
    y = y if positive == "dog" else 1 - y
    pos = torch.nonzero(y == 1).squeeze(1)
    neg = torch.nonzero(y == 0).squeeze(1)
    n_keep = max(1, min(len(pos), round(len(neg) / ratio)))
    keep = torch.cat([neg, pos[torch.randperm(len(pos), generator=g)[:n_keep]]]).sort().values
    return Split(x[keep], y[keep])


def _stratified_split(
    y: torch.Tensor, test_frac: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    train, test = [], []
    for label in (0, 1):
        idx = torch.nonzero(y == label).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = round(test_frac * len(idx))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_catsdogs(ratio: float, image_size: int, positive: str, data_seed: int = 0, data_dir=None, **_):
    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataError(f"the catsdogs data set needs image files: {DATA_HELP}")
    if not root.exists():
        raise DataError(f"data directory {root} does not exist; {DATA_HELP}")
    x, y = decode_images(find_catsdogs_images(root), image_size)
    g = torch.Generator().manual_seed(data_seed)
    train_idx, test_idx = _stratified_split(y, 0.2, g)
    train = _imbalance(x[train_idx], y[train_idx], ratio, positive, g)
    test_y = y[test_idx] if positive == "dog" else 1 - y[test_idx]
    return train, Split(x[test_idx], test_y)


# ------------------------------------------------------------------------------------------------------------
# CIFAR-10 cats and dogs
# ------------------------------------------------------------------------------------------------------------
CIFAR_CAT, CIFAR_DOG = 3, 5


def download_cifar10(root: Path) -> None:
    """torchvision's CIFAR-10 download (needs internet), into ROOT/cifar-10-batches-py."""
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=True, download=True)


def _read_cifar_batches(folder: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    xs, ys = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch["labels"])
        except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as exc:
            raise DataError(
                f"CIFAR-10 file {path} is missing or malformed ({exc}); {_cifar_help(folder.parent)}"
            ) from None
        keep = (labels == CIFAR_CAT) | (labels == CIFAR_DOG)
        xs.append(torch.from_numpy(data[keep].copy()))
        ys.append(torch.from_numpy((labels[keep] == CIFAR_DOG).astype("float32")))
    return torch.cat(xs), torch.cat(ys)


def _cifar_help(root: Path) -> str:
    return f"download it with `flx download cifar10 --data-dir {root}` on a machine with internet"


def load_cifar_catsdogs(ratio: float, positive: str, data_seed: int = 0, data_dir=None, **_):
    root = resolve_data_dir(data_dir)
    folder = root / "cifar-10-batches-py" if root is not None else None
    if folder is None or not folder.is_dir():
        where = folder if folder is not None else "<no --data-dir / FLX_DATA_DIR given>"
        raise DataError(f"CIFAR-10 not found at {where}; {_cifar_help(root or Path('DIR'))}")
    x, y = _read_cifar_batches(folder, [f"data_batch_{i}" for i in range(1, 6)])
    tx, ty = _read_cifar_batches(folder, ["test_batch"])
    g = torch.Generator().manual_seed(data_seed)
    return _imbalance(x, y, ratio, positive, g), Split(tx, ty if positive == "dog" else 1 - ty)


# ------------------------------------------------------------------------------------------------------------
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "synthetic",
            load_synthetic,
            {"ratio": 1000.0, "n_samples": 520_000, "dim": 16, "hard_frac": 0.02},
            model="mlp",
            description="1:ratio Gaussian task with easy and hard negatives (>= 500 test positives by default)",
        ),
        DatasetSpec(
            "catsdogs",
            load_catsdogs,
            {"ratio": 10.0, "image_size": 64, "positive": "dog"},
            model="cnn",
            needs_data_dir=True,
            description="Kaggle Dogs vs. Cats photos; train split subsampled to 1:ratio",
        ),
        DatasetSpec(
            "cifar_catsdogs",
            load_cifar_catsdogs,
            {"ratio": 10.0, "positive": "dog"},
            model="cnn",
            needs_data_dir=True,
            description="CIFAR-10 cats and dogs; train split subsampled to 1:ratio",
        ),
    ]
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


@lru_cache(maxsize=4)
def load(name: str, params: tuple, data_seed: int, data_dir: str | None) -> tuple[Split, Split]:
    """Load (train, test) once per process for the given parameters (``params`` as sorted (key, value) pairs)."""
    return get_dataset(name).load(**dict(params), data_seed=data_seed, data_dir=data_dir)
