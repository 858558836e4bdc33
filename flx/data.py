"""Data sets: loaders named by the registry in :mod:`flx.config` (``DATASETS``), and what a run records about
its data: where it came from, a fingerprint of its content, and how many examples of each class it used.

Each loader returns ``(train, test, meta)``: two :class:`Split` s of float/uint8 feature tensors with 0/1
labels (1 is the rare, positive class) and a dict with ``location``, ``split`` (how the test split was made),
``classes`` (negative, positive) and ``fingerprint``. Loaders are deterministic: the same parameters and files
give the same tensors.

- ``synthetic``: 1:``ratio`` positives:negatives; negatives are mostly easy (far from the positives) with a
  fraction ``hard_frac`` of hard ones on a wider shell around the positives. Both splits have the same ratio.
  Its fingerprint is a digest of the generated tensors.
- ``catsdogs``: photos from a folder. An existing split is used as given (``train/`` with ``test/``, ``val/`` or
  ``validation/``); a folder without one is split 80/20 (stratified) by flx. Inside each, Kaggle's flat
  ``cat.N.jpg``/``dog.N.jpg`` names or one folder per class (cat/cats/dog/dogs, any case). Decoded once (all
  undecodable files reported together) and cached by the files' fingerprint: relative names, sizes and content,
  so the same files moved elsewhere keep it.
- ``cifar_catsdogs``: CIFAR-10's cats and dogs (torchvision's download, or its python pickles on disk).

For both image sets the train split is cut per class (:func:`carve`) into a balanced backbone pool, validation
images (``meta["val"]``) and the heads' training images, whose positive (minority) class, dogs by default, is
subsampled to 1:``ratio``; the test split keeps its natural balance. With a frozen ``backbone`` the splits hold
feature vectors (:mod:`flx.features`), with ``scratch`` (or none) the uint8 images.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from flx.config import get_dataset
from flx.errors import DataError
from flx.store import write_atomic

CLASSES = ("cat", "dog")
DATA_HELP = (
    "give --data-dir or set FLX_DATA_DIR to a folder holding Dogs vs. Cats images (Kaggle's train/ folder, "
    "https://www.kaggle.com/c/dogs-vs-cats/data, or train/ and test/ with a folder per class), e.g. ../shared/data"
)


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, D) float32 or (N, 3, H, W) uint8
    y: torch.Tensor  # (N,) float32 in {0, 1}

    @property
    def n_pos(self) -> int:
        return int(self.y.sum())

    @property
    def n_neg(self) -> int:
        return len(self) - self.n_pos

    def __len__(self) -> int:
        return len(self.y)


def _digest_tensors(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()[:32]


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
    train = _synthetic_split(n_samples, dim, ratio, hard_frac, g)
    test = _synthetic_split(n_samples, dim, ratio, hard_frac, g)
    # the validation split (choices are made on it) comes from its own stream: train and test stay as they were
    val = _synthetic_split(n_samples, dim, ratio, hard_frac, torch.Generator().manual_seed(data_seed + 7919))
    meta = {
        "location": "generated",
        "split": "generated",
        "classes": ("negative", "positive"),
        "fingerprint": _digest_tensors(train.x, train.y, test.x, test.y),
        "val": val,
    }
    return train, test, meta


# ------------------------------------------------------------------------------------------------------------
# Image folders: cats vs dogs
# ------------------------------------------------------------------------------------------------------------
_FLAT = re.compile(r"^(cat|dog)\.(\d+)\.(jpe?g|png)$", re.IGNORECASE)
_CLASS_DIRS = {"cat": ("cat", "cats"), "dog": ("dog", "dogs")}
_IMAGE = re.compile(r"\.(jpe?g|png)$", re.IGNORECASE)
_TEST_DIRS = ("test", "val", "validation")  # in this order of preference


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    value = data_dir if data_dir is not None else os.environ.get("FLX_DATA_DIR")
    return Path(value).expanduser() if value else None


def _subdirs(folder: Path) -> dict[str, Path]:
    """Lower-cased name -> path of each subfolder (the first, by name, where names differ only in case)."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            out.setdefault(p.name.lower(), p)
    return out


def class_images(folder: Path) -> list[tuple[Path, int]]:
    """(path, label) pairs in ``folder``, label 1 = dog: Kaggle's flat ``cat.N.jpg`` names, or one subfolder per
    class (cat/cats/dog/dogs, any case). Sorted: by class, then by number (flat) or name."""
    flat = []
    for entry in os.scandir(folder):
        m = _FLAT.match(entry.name)
        if m and entry.is_file():
            flat.append((m.group(1).lower(), int(m.group(2)), Path(entry.path)))
    if flat:
        flat.sort()
        return [(p, CLASSES.index(c)) for c, _, p in flat]
    subdirs = _subdirs(folder)
    out = []
    for label, cls in enumerate(CLASSES):
        for name in _CLASS_DIRS[cls]:
            if name in subdirs:
                files = sorted(p for p in subdirs[name].iterdir() if _IMAGE.search(p.name) and p.is_file())
                out += [(p, label) for p in files]
                break
    return out


@dataclass(frozen=True)
class ImageFiles:
    """The files of an image data set: where they are, the train files, and the test files when the folder
    gives its own split (None: flx splits the train files)."""

    root: Path  # file names in the fingerprint are relative to this
    train_dir: Path
    train: list
    test_dir: Path | None = None
    test: list | None = None

    @property
    def location(self) -> str:
        if self.test_dir is None:
            return str(self.train_dir.resolve())
        return f"{self.train_dir.resolve()} + {self.test_dir.resolve()}"

    @property
    def split(self) -> str:
        return f"given ({self.train_dir.name}/ + {self.test_dir.name}/)" if self.test_dir else "80/20 by flx"


def find_images(data_dir: Path) -> ImageFiles:
    """The cat/dog images under ``data_dir`` (or its dogs-vs-cats/ folder): train/ with test/ (or val/,
    validation/) as given, else train/, else the folder itself, split by flx."""
    looked = []
    for root in (data_dir, data_dir / "dogs-vs-cats"):
        if not root.is_dir():
            continue
        subdirs = _subdirs(root)
        train_dir = subdirs.get("train")
        test_dir = next((subdirs[n] for n in _TEST_DIRS if n in subdirs), None)
        if train_dir is not None and test_dir is not None:
            train, test = class_images(train_dir), class_images(test_dir)
            for folder, files in ((train_dir, train), (test_dir, test)):
                _check_classes(folder, files)
            return ImageFiles(root, train_dir, train, test_dir, test)
        for folder in ([train_dir] if train_dir is not None else []) + [root]:
            looked.append(str(folder))
            files = class_images(folder)
            if files:
                _check_classes(folder, files)
                return ImageFiles(root, folder, files)
    looked = looked or [str(data_dir)]
    raise DataError(f"no cat/dog images found (looked in {', '.join(looked)}); {DATA_HELP}")


def _check_classes(folder: Path, files: list) -> None:
    counts = [sum(1 for _, label in files if label == i) for i in range(len(CLASSES))]
    if min(counts) == 0:
        found = " and ".join(f"{n} {c}" for c, n in zip(CLASSES, counts, strict=True))
        raise DataError(
            f"{folder} holds {found} images; both classes are needed (a cat and a dog folder, or cat.N/dog.N files)"
        )


def _cache_dir() -> Path:
    return Path(os.environ.get("FLX_CACHE_DIR", Path.home() / ".cache" / "flx")).expanduser()


def files_fingerprint(root: Path, files: list[Path]) -> str:
    """Digest of the files' names relative to ``root``, sizes and content (cached by their stat signature, so
    the content is read once per machine while the files are unchanged)."""
    stats = [(p, p.stat()) for p in files]
    signature = hashlib.sha256()
    for p, st in stats:
        rel = Path(os.path.relpath(p, root)).as_posix()  # the names are in the digest: so in its memo key
        signature.update(f"{p.resolve()}|{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    memo = _cache_dir() / "fingerprints" / signature.hexdigest()[:32]
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    h = hashlib.sha256()
    for p, st in stats:
        h.update(f"{Path(os.path.relpath(p, root)).as_posix()}|{st.st_size}|".encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    digest = "sha256:" + h.hexdigest()[:32]
    _write_cache(memo, lambda p: p.write_text(digest))
    return digest


def _write_cache(path: Path, write) -> None:
    """Write a cache file atomically; a cache that cannot be written is only slower."""
    with contextlib.suppress(OSError):
        write_atomic(path, write)


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable), or a large number where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def check_memory(n_images: int, image_size: int, copies: int = 1) -> None:
    """DataError when ``copies`` decoded copies of the images (parent and workers each hold one) would not fit."""
    need = n_images * 3 * image_size * image_size * max(copies, 1)
    free = available_memory()
    if need > 0.8 * free:
        raise DataError(
            f"image_size {image_size}: {n_images:,} decoded images x {copies} process(es) need {need / 2**30:.1f} GiB, "
            f"but {free / 2**30:.1f} GiB is available; lower --image-size (or --workers)"
        )


def decode_images(files, image_size: int, fingerprint: str, progress=None) -> torch.Tensor:
    """All images as one (N, 3, S, S) uint8 tensor, cached on disk by the files' fingerprint and the size.
    Every undecodable file is reported in one DataError; ``progress(done, total)`` is called while decoding."""
    import numpy as np
    from PIL import Image

    cache = _cache_dir() / f"images-{image_size}-{fingerprint.split(':')[-1][:24]}.pt"
    if cache.exists():
        try:
            x = torch.load(cache, weights_only=True)
            if isinstance(x, torch.Tensor) and len(x) == len(files):
                return x
        except Exception:  # a corrupt cache is rebuilt
            pass
    x = torch.empty(len(files), 3, image_size, image_size, dtype=torch.uint8)
    bad = []
    for i, (p, _) in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                x[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        except (OSError, ValueError, SyntaxError) as exc:
            bad.append((p, exc))
        if progress is not None and ((i + 1) % 256 == 0 or i + 1 == len(files)):
            progress(i + 1, len(files))
    if bad:
        first = "; ".join(f"{p} ({type(e).__name__})" for p, e in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DataError(
            f"{len(bad)} of {len(files)} images cannot be decoded: {first}{more}; remove or replace them"
        )
    _write_cache(cache, lambda p: torch.save(x, p))
    return x


POOL_FRAC = 0.5  # of the smaller class of the train split, per class: the in-domain backbone's balanced pool
VAL_FRAC = 0.1  # of each class of the train split: the validation images every choice is made on


def _imbalance(y: torch.Tensor, ratio: float, g: torch.Generator) -> torch.Tensor:
    """Indices keeping every negative and 1 positive per ``ratio`` negatives (at least one)."""
    pos = torch.nonzero(y == 1).squeeze(1)
    neg = torch.nonzero(y == 0).squeeze(1)
    n_keep = max(1, min(len(pos), round(len(neg) / ratio)))
    return torch.cat([neg, pos[torch.randperm(len(pos), generator=g)[:n_keep]]]).sort().values


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


def carve(y: torch.Tensor, g: torch.Generator, where: str) -> dict[str, torch.Tensor]:
    """The train split's indices cut three ways, per class: ``pool`` (:data:`POOL_FRAC` of the smaller class
    from each class: balanced, what the in-domain backbone trains on), ``val`` (:data:`VAL_FRAC` of each class)
    and ``train`` (the rest: what the heads train on, before the imbalance is made). The same cut serves every
    backbone, so heads on different backbones see the same images. DataError below 3 images of a class."""
    counts = [int((y == c).sum()) for c in (0, 1)]
    if min(counts) < 3:
        raise DataError(
            f"{where}: the train split holds {counts[0]} and {counts[1]} images of the two classes; flx needs "
            "at least 3 of each (a backbone pool, validation and training images)"
        )
    n_pool = int(POOL_FRAC * min(counts))
    parts: dict[str, list] = {"pool": [], "val": [], "train": []}
    for label, count in zip((0, 1), counts, strict=True):
        idx = torch.nonzero(y == label).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = min(max(1, round(VAL_FRAC * count)), count - n_pool - 1)
        parts["pool"].append(idx[:n_pool])
        parts["val"].append(idx[n_pool : n_pool + n_val])
        parts["train"].append(idx[n_pool + n_val :])
    return {k: torch.cat(v).sort().values for k, v in parts.items()}


def _relabel(y: torch.Tensor, positive: str) -> torch.Tensor:
    return y if positive == "dog" else 1 - y


def _assemble(x, y, train_idx, test_idx, names, meta, ratio, backbone, weights, data_seed, progress=None):
    """(train, test, meta) of an image set: the train split carved (:func:`carve`), its training part cut to
    1:``ratio``, and for a frozen backbone every split turned into feature vectors (:mod:`flx.features`).
    ``meta`` gains ``val`` (the validation split), ``members`` (the names of each split's images: disjointness
    can be checked) and the backbone's ``extra`` columns."""
    g = torch.Generator().manual_seed(data_seed)
    parts = carve(y[train_idx], g, meta["location"])
    parts = {k: train_idx[v] for k, v in parts.items()}
    if ratio is not None:  # None: the data's own balance
        parts["train"] = parts["train"][_imbalance(y[parts["train"]], ratio, g)]
    parts["test"] = test_idx
    meta = dict(meta, members={k: [names[i] for i in v.tolist()] for k, v in parts.items()})
    meta["extra"] = {}
    if backbone not in (None, "scratch"):
        from flx.features import featurize

        pool = hashlib.sha256("\n".join(meta["members"]["pool"]).encode()).hexdigest()[:24]
        ident = {
            "fingerprint": meta["fingerprint"],
            "image_size": int(x.shape[-1]),
            "pool": pool,
            "positive": meta["classes"][1],  # the in-domain backbone's labels
        }
        pool_split, test_split = (Split(x[parts[k]], y[parts[k]]) for k in ("pool", "test"))
        x, meta["extra"] = featurize(x, pool_split, test_split, backbone, weights, ident, progress)
    splits = {k: Split(x[v], y[v]) for k, v in parts.items() if k != "pool"}
    meta["val"] = splits["val"]
    return splits["train"], splits["test"], meta


def load_catsdogs(
    ratio,
    image_size,
    positive,
    backbone=None,
    weights=None,
    data_seed=0,
    data_dir=None,
    copies=1,
    progress=None,
    **_,
):
    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataError(f"the catsdogs data set needs image files: {DATA_HELP}")
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist or is not a folder; {DATA_HELP}")
    found = find_images(root)
    files = found.train + (found.test or [])
    check_memory(len(files), image_size, copies)
    fingerprint = files_fingerprint(found.root, [p for p, _ in files])
    x = decode_images(files, image_size, fingerprint, progress)
    y = _relabel(torch.tensor([label for _, label in files], dtype=torch.float32), positive)
    n_train = len(found.train)
    if found.test is None:
        train_idx, test_idx = _stratified_split(y, 0.2, torch.Generator().manual_seed(data_seed))
    else:
        train_idx, test_idx = torch.arange(n_train), torch.arange(n_train, len(files))
    negative = CLASSES[1] if positive == "cat" else CLASSES[0]
    meta = {
        "location": found.location,
        "split": found.split,
        "classes": (negative, positive),
        "fingerprint": fingerprint,
    }
    names = [p.relative_to(found.root).as_posix() for p, _ in files]
    return _assemble(x, y, train_idx, test_idx, names, meta, ratio, backbone, weights, data_seed, progress)


# ------------------------------------------------------------------------------------------------------------
# Your own image folder: one subfolder per class, any names (torchvision's ImageFolder layout)
# ------------------------------------------------------------------------------------------------------------
def folder_images(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, (path, class index) pairs) of an ImageFolder-style ``folder``, read with torchvision's
    ``find_classes`` and ``make_dataset`` (image extensions only); DataError when it holds no class folder."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(folder))
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{folder}: {exc}; give a folder with one subfolder of images per class") from None
    return classes, [(Path(p), i) for p, i in samples]


def load_folder(
    data, image_size, positive=None, ratio=None, backbone=None, weights=None, test=None, data_seed=0,
    copies=1, progress=None, **_,
):  # fmt: skip
    """The ``images`` data set: a user's folder of class subfolders (any names). An existing split is used as
    given (``train/`` with ``test/``, ``val/`` or ``validation/`` inside it, or ``test`` naming a second folder);
    otherwise flx splits it 80/20 per class. ``positive`` names the minority class (default: the class with
    the fewest training images); every other class is negative. ``ratio`` (optional) cuts the positives of the
    heads' training images to 1:ratio; without it the folder's own balance is kept."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    subdirs = _subdirs(root)
    test_dir = (
        Path(test) if test is not None else next((subdirs[n] for n in _TEST_DIRS if n in subdirs), None)
    )
    train_dir = subdirs["train"] if test is None and test_dir is not None and "train" in subdirs else root
    if test is None and train_dir is root:
        test_dir = None
    classes, train = folder_images(train_dir)
    where = str(train_dir)
    counts = {c: 0 for c in classes}
    for _, i in train:
        counts[classes[i]] += 1
    present = [c for c in classes if counts[c]]
    if len(present) < 2:
        found = ", ".join(f"{c} ({counts[c]})" for c in classes) or "none"
        raise DataError(
            f"{where}: images of {len(present)} class(es) found (folders: {found}); two are needed"
        )
    if positive is None:
        positive = min(sorted(present, reverse=True), key=lambda c: counts[c])
    elif positive not in present:
        raise DataError(
            f"{where}: --positive {positive!r} is not a class folder with images; classes: {', '.join(present)}"
        )
    files = [(p, int(classes[i] == positive)) for p, i in train]
    n_train = len(files)
    if test_dir is not None:
        test_classes, tested = folder_images(test_dir)
        files += [(p, int(test_classes[i] == positive)) for p, i in tested]
    others = [c for c in present if c != positive]
    negative = others[0] if len(others) == 1 else f"not {positive}"
    check_memory(len(files), image_size, copies)
    fingerprint = files_fingerprint(root, [p for p, _ in files])
    x = decode_images(files, image_size, fingerprint, progress)
    y = torch.tensor([label for _, label in files], dtype=torch.float32)
    if test_dir is None:
        train_idx, test_idx = _stratified_split(y, 0.2, torch.Generator().manual_seed(data_seed))
        split, location = "80/20 by flx", str(root.resolve())
    else:
        train_idx, test_idx = torch.arange(n_train), torch.arange(n_train, len(files))
        split = f"given ({train_dir.name}/ + {test_dir.name}/)"
        location = f"{train_dir.resolve()} + {test_dir.resolve()}"
    for name, idx in (("train", train_idx), ("test", test_idx)):
        n_pos = int(y[idx].sum())
        if n_pos == 0 or n_pos == len(idx):
            raise DataError(
                f"{location}: the {name} split holds {len(idx)} images of one class; both are needed"
            )
    meta = {"location": location, "split": split, "classes": (negative, positive), "fingerprint": fingerprint}
    names = [os.path.relpath(p, root) for p, _ in files]
    return _assemble(x, y, train_idx, test_idx, names, meta, ratio, backbone, weights, data_seed, progress)


# ------------------------------------------------------------------------------------------------------------
# CIFAR-10 cats and dogs
# ------------------------------------------------------------------------------------------------------------
CIFAR_CAT, CIFAR_DOG = 3, 5
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


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
        except (OSError, KeyError, ValueError, TypeError, pickle.UnpicklingError, EOFError) as exc:
            raise DataError(
                f"CIFAR-10 file {path} is missing or malformed ({exc}); {_cifar_help(folder.parent)}"
            ) from None
        keep = (labels == CIFAR_CAT) | (labels == CIFAR_DOG)
        xs.append(torch.from_numpy(data[keep].copy()))
        ys.append(torch.from_numpy((labels[keep] == CIFAR_DOG).astype("float32")))
    return torch.cat(xs), torch.cat(ys)


def _cifar_help(root: Path) -> str:
    return f"download it with `flx download cifar10 --data-dir {root}` on a machine with internet"


def load_cifar_catsdogs(
    ratio, positive, backbone=None, weights=None, data_seed=0, data_dir=None, progress=None, **_
):
    root = resolve_data_dir(data_dir)
    folder = root / "cifar-10-batches-py" if root is not None else None
    if folder is None or not folder.is_dir():
        where = folder if folder is not None else "<no --data-dir / FLX_DATA_DIR given>"
        raise DataError(f"CIFAR-10 not found at {where}; {_cifar_help(root or Path('DIR'))}")
    x, y = _read_cifar_batches(folder, CIFAR_FILES[:5])
    tx, ty = _read_cifar_batches(folder, CIFAR_FILES[5:])
    fingerprint = files_fingerprint(folder, [folder / n for n in CIFAR_FILES])
    negative = CLASSES[1] if positive == "cat" else CLASSES[0]
    meta = {
        "location": str(folder.resolve()),
        "split": "given (data_batch_1-5 + test_batch)",
        "classes": (negative, positive),
        "fingerprint": fingerprint,
    }
    names = [f"train:{i}" for i in range(len(y))] + [f"test:{i}" for i in range(len(ty))]
    xs, ys = torch.cat([x, tx]), _relabel(torch.cat([y, ty]), positive)
    train_idx, test_idx = torch.arange(len(y)), torch.arange(len(y), len(ys))
    return _assemble(xs, ys, train_idx, test_idx, names, meta, ratio, backbone, weights, data_seed, progress)


# ------------------------------------------------------------------------------------------------------------
# Loading and describing
# ------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def load(name: str, params: tuple, data_seed: int, data_dir: str | None, copies: int = 1, progress=None):
    """(train, test, meta) once per process for the given parameters (``params`` as sorted (key, value) pairs)."""
    return get_dataset(name).load(
        **dict(params), data_seed=data_seed, data_dir=data_dir, copies=copies, progress=progress
    )


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


def data_info(config, data_dir=None, copies: int = 1, progress=None) -> dict:
    """:func:`describe` of a config's data, loaded (and for images decoded and cached) once here; DataError
    when the data is missing, holds one class, cannot be decoded or would not fit in memory."""
    train, test, meta = load(
        config.dataset, config.data_params(), config.data_seed, data_dir, copies, progress
    )
    for name, split in (("train", train), ("test", test)):
        if split.n_pos == 0 or split.n_neg == 0:
            raise DataError(
                f"the {name} split of {config.dataset} ({meta['location']}) holds only one class; both are needed"
            )
    info = describe(train, test, meta)
    load.cache_clear()  # the parent keeps no decoded images; workers load the cache
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
    return f"data: {config.dataset} ({params}){where}, split {info['data_split']}: {counts}"
