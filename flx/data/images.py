"""Image sets: Dogs vs. Cats and your image folders. Loaders are named by the registry in
:mod:`flx.experiment.registries` (``DATASETS``); this says what every loader gives and what a run records about
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

For both image sets the train split is cut per class (:func:`carve`) into a balanced backbone pool (held back
only for the ``indomain`` backbone, which trains on it; any other backbone's heads train on it too), validation
images (``meta["val"]``) and the heads' training images, whose positive (minority) class, dogs by default, is
subsampled to 1:``ratio``; the test split keeps its natural balance. With a frozen ``backbone`` the splits hold
feature vectors (:mod:`flx.data.features`), with ``scratch`` (or none) the uint8 images.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from flx.data.base import (
    Split,
    cache_dir,
    carve,
    check_memory,
    files_fingerprint,
    split_off,
    write_cache,
)
from flx.errors import DataError

CLASSES = ("cat", "dog")


DATA_HELP = (
    "give --data-dir or set FLX_DATA_DIR to a folder holding Dogs vs. Cats images (Kaggle's train/ folder, "
    "https://www.kaggle.com/c/dogs-vs-cats/data, or train/ and test/ with a folder per class), e.g. ../shared/data"
)


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


def decode_images(files, image_size: int, fingerprint: str, progress=None) -> torch.Tensor:
    """All images as one (N, 3, S, S) uint8 tensor, cached on disk by the files' fingerprint and the size.
    Every undecodable file is reported in one DataError; ``progress(done, total)`` is called while decoding."""
    import numpy as np
    from PIL import Image

    cache = cache_dir() / f"images-{image_size}-{fingerprint.split(':')[-1][:24]}.pt"
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
    write_cache(cache, lambda p: torch.save(x, p))
    return x


def _imbalance(y: torch.Tensor, ratio: float, g: torch.Generator) -> torch.Tensor:
    """Indices keeping every negative and 1 positive per ``ratio`` negatives (at least one)."""
    pos = torch.nonzero(y == 1).squeeze(1)
    neg = torch.nonzero(y == 0).squeeze(1)
    n_keep = max(1, min(len(pos), round(len(neg) / ratio)))
    return torch.cat([neg, pos[torch.randperm(len(pos), generator=g)[:n_keep]]]).sort().values


def relabel(y: torch.Tensor, positive: str) -> torch.Tensor:
    return y if positive == "dog" else 1 - y


def assemble(x, y, train_idx, test_idx, names, meta, ratio, backbone, weights, data_seed, progress=None):
    """(train, test, meta) of an image set: the train split carved (:func:`carve`), its training part cut to
    1:``ratio``, and for a frozen backbone every split turned into feature vectors (:mod:`flx.data.features`).
    ``meta`` gains ``val`` (the validation split), ``members`` (the names of each split's images: disjointness
    can be checked) and the backbone's ``extra`` columns. ``x`` None (a dry run's plan): the same splits, with
    no pixels and no backbone trained; ``meta["planned"]`` says so."""
    g = torch.Generator().manual_seed(data_seed)
    parts = carve(y[train_idx], g, meta["location"])
    parts = {k: train_idx[v] for k, v in parts.items()}
    if backbone != "indomain":  # only the in-domain backbone trains on the pool; otherwise the heads get it
        parts["train"] = torch.cat([parts.pop("pool"), parts["train"]]).sort().values
    if ratio is not None:  # None: the data's own balance
        parts["train"] = parts["train"][_imbalance(y[parts["train"]], ratio, g)]
    parts["test"] = test_idx
    meta = dict(meta, members={k: [names[i] for i in v.tolist()] for k, v in parts.items()})
    meta["extra"] = {}
    if x is None:
        x, meta["planned"] = torch.empty(len(y), 0, dtype=torch.uint8), True
    elif backbone not in (None, "scratch"):
        from flx.data.features import featurize

        pool = hashlib.sha256("\n".join(meta["members"].get("pool", [])).encode()).hexdigest()[:24]
        ident = {
            "fingerprint": meta["fingerprint"],
            "image_size": int(x.shape[-1]),
            "pool": pool,
            "positive": meta["classes"][1],  # the in-domain backbone's labels
        }
        held = parts.get("pool", parts["test"][:0])
        pool_split, test_split = Split(x[held], y[held]), Split(x[parts["test"]], y[parts["test"]])
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
    plan=False,
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
    x = None if plan else decode_images(files, image_size, fingerprint, progress)
    y = relabel(torch.tensor([label for _, label in files], dtype=torch.float32), positive)
    n_train = len(found.train)
    if found.test is None:
        train_idx, test_idx = split_off(y, 0.2, torch.Generator().manual_seed(data_seed), at_least_one=False)
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
    return assemble(x, y, train_idx, test_idx, names, meta, ratio, backbone, weights, data_seed, progress)


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
    copies=1, progress=None, plan=False, **_,
):  # fmt: skip
    """The ``images`` data set: a user's folder of class subfolders (any names). An existing split is used as
    given (``train/`` with ``test/``, ``val/`` or ``validation/`` inside it, or ``test`` naming a second folder);
    otherwise flx splits it 80/20 per class. ``positive`` names the minority class (default: the class with
    the fewest training images); every other class is negative. ``ratio`` (optional) cuts the positives of the
    heads' training images to 1:ratio; without it the folder's own balance is kept. ``plan``: nothing decoded
    (:func:`assemble`)."""
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
    x = None if plan else decode_images(files, image_size, fingerprint, progress)
    y = torch.tensor([label for _, label in files], dtype=torch.float32)
    if test_dir is None:
        train_idx, test_idx = split_off(y, 0.2, torch.Generator().manual_seed(data_seed), at_least_one=False)
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
    return assemble(x, y, train_idx, test_idx, names, meta, ratio, backbone, weights, data_seed, progress)
