"""CIFAR-10's cats and dogs as an image set (after ``flx download cifar10``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from flx.data.base import files_fingerprint
from flx.data.images import CLASSES, assemble, relabel, resolve_data_dir
from flx.errors import DataError

CIFAR_CAT, CIFAR_DOG = 3, 5


CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def download_cifar10(root: Path) -> None:
    """torchvision's CIFAR-10 download (needs internet), into ROOT/cifar-10-batches-py."""
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=True, download=True)


# What a CIFAR-10 batch file may build: numpy arrays (every pickle protocol, numpy 1 and 2 module names), and the
# helper that turns a Python 2 str back into bytes. Anything else (a class, os.system, eval) is refused before it
# runs: the batch files are data, never code.
PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    *(
        (m, name)
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    ),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and numpy arrays only (:data:`PICKLE_ALLOWED`)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in PICKLE_ALLOWED:
            raise pickle.UnpicklingError(
                f"it asks to build {module}.{name}, which a CIFAR-10 batch never holds"
            )
        return super().find_class(module, name)


def load_batch(path: Path) -> dict:
    """One CIFAR-10 batch file through :class:`_BatchUnpickler` (never ``pickle.load``)."""
    with open(path, "rb") as f:
        return _BatchUnpickler(f, encoding="latin1").load()


def _read_cifar_batches(folder: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    xs, ys = [], []
    for name in names:
        path = folder / name
        try:
            batch = load_batch(path)
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
    ratio, positive, backbone=None, weights=None, data_seed=0, data_dir=None, progress=None, plan=False, **_
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
    xs, ys = None if plan else torch.cat([x, tx]), relabel(torch.cat([y, ty]), positive)
    train_idx, test_idx = torch.arange(len(y)), torch.arange(len(y), len(ys))
    return assemble(xs, ys, train_idx, test_idx, names, meta, ratio, backbone, weights, data_seed, progress)
