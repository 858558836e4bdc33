"""What every data set shares: the :class:`Split`, fingerprints, the on-disk cache, memory checks and the
stratified splits of the image sets.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from flx.errors import DataError
from flx.results.store import write_atomic


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


def digest_tensors(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()[:32]


def cache_dir() -> Path:
    return Path(os.environ.get("FLX_CACHE_DIR", Path.home() / ".cache" / "flx")).expanduser()


def files_fingerprint(root: Path, files: list[Path]) -> str:
    """Digest of the files' names relative to ``root``, sizes and content (cached by their stat signature, so
    the content is read once per machine while the files are unchanged)."""
    stats = [(p, p.stat()) for p in files]
    signature = hashlib.sha256()
    for p, st in stats:
        rel = Path(os.path.relpath(p, root)).as_posix()  # the names are in the digest: so in its memo key
        signature.update(f"{p.resolve()}|{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    memo = cache_dir() / "fingerprints" / signature.hexdigest()[:32]
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    h = hashlib.sha256()
    for p, st in stats:
        h.update(f"{Path(os.path.relpath(p, root)).as_posix()}|{st.st_size}|".encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    digest = "sha256:" + h.hexdigest()[:32]
    write_cache(memo, lambda p: p.write_text(digest))
    return digest


def write_cache(path: Path, write) -> None:
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


POOL_FRAC = 0.5  # of the smaller class of the train split, per class: the in-domain backbone's balanced pool
VAL_FRAC = 0.1  # of each class of the train split: the validation images every choice is made on


def stratified(y: torch.Tensor, sizes, g: torch.Generator) -> list[torch.Tensor]:
    """flx's one stratified splitter: the indices of each class of ``y`` (0, then 1) shuffled once by ``g`` and
    cut into consecutive parts of ``sizes(count)`` indices (a list), then the rest; returns each part's indices
    over both classes, sorted, the rest last."""
    parts: list[list[torch.Tensor]] = []
    for label in (0, 1):
        idx = torch.nonzero(y == label).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        bounds = [0, *itertools.accumulate(sizes(len(idx))), len(idx)]
        pieces = [idx[lo:hi] for lo, hi in itertools.pairwise(bounds)]
        parts = [[*p, q] for p, q in zip(parts, pieces, strict=True)] if parts else [[q] for q in pieces]
    return [torch.cat(p).sort().values for p in parts]


def split_off(y: torch.Tensor, frac: float, g: torch.Generator, at_least_one: bool = True):
    """(the rest, a ``frac`` share of each class) of ``y``'s indices: with ``at_least_one``, at least one and at
    most all but one of each class (of two or more), else ``round(frac * count)``."""

    def share(n: int) -> list[int]:
        if not at_least_one:
            return [round(frac * n)]
        return [min(max(1, round(frac * n)), n - 1) if n > 1 else 0]

    part, rest = stratified(y, share, g)
    return rest, part


def carve(y: torch.Tensor, g: torch.Generator, where: str) -> dict[str, torch.Tensor]:
    """The train split's indices cut three ways, per class: ``pool`` (:data:`POOL_FRAC` of the smaller class
    from each class: balanced, what the in-domain backbone trains on), ``val`` (:data:`VAL_FRAC` of each class)
    and ``train`` (the rest: what the heads train on, before the imbalance is made). The same cut serves every
    backbone, so heads on different backbones validate on the same images (a backbone that does not train on
    the pool gives it to the heads' training images). DataError below 3 images of a class."""
    counts = [int((y == c).sum()) for c in (0, 1)]
    if min(counts) < 3:
        raise DataError(
            f"{where}: the train split holds {counts[0]} and {counts[1]} images of the two classes; flx needs "
            "at least 3 of each (a backbone pool, validation and training images)"
        )
    n_pool = int(POOL_FRAC * min(counts))
    pool, val, train = stratified(
        y, lambda count: [n_pool, min(max(1, round(VAL_FRAC * count)), count - n_pool - 1)], g
    )
    return {"pool": pool, "val": val, "train": train}
