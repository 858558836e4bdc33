"""How flx's CPU loss kernels use threads and memory, public so that ``flx bench losses`` times its floor the
same way: one kept thread pool, one contiguous range of chunks per thread, outputs allocated through numpy (huge
pages), large ones reused, and touched once a page before the threads write them.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

CHUNK = 4096  # elements per unit of work: the binary kernel's partial sum (its loss buffer, 16-32 KB, stays in L1)
# chunks (64k logits, ~100 us of the binary kernel) per thread, at least: waking a thread costs ~40-80 us
LEAST = 16

_POOL: list = [None, 0]  # [executor, its size]


def _reset_pool() -> None:  # a forked child has no worker threads; its copy of the executor must not be used
    global _FREE_LOCK  # nor a lock that another thread of the parent may have held
    _POOL[0], _POOL[1] = None, 0
    _FREE_LOCK = threading.RLock()


os.register_at_fork(after_in_child=_reset_pool)


def executor(workers: int) -> ThreadPoolExecutor:
    """The loss kernels' thread pool of ``workers`` threads, kept between calls (the calling thread is the
    last worker, so a pass over k threads uses a pool of k - 1)."""
    if _POOL[0] is None or _POOL[1] != workers:
        if _POOL[0] is not None:
            _POOL[0].shutdown(wait=False)
        _POOL[0], _POOL[1] = ThreadPoolExecutor(workers, thread_name_prefix="flx-loss"), workers
    return _POOL[0]


_LARGE = 1 << 25  # 32 MB: glibc's malloc keeps freed blocks below this (its largest mmap threshold) for reuse
_KEEP = 4  # free buffers kept, at most
_KEEP_BYTES = 1 << 30  # and at most this many bytes of them
_FREE: list = []  # freed large buffers (uint8 numpy arrays), the most recent last
_FREE_LOCK = threading.RLock()  # re-entrant: a garbage collection inside may run _give_back


def _take(nbytes: int):
    with _FREE_LOCK:
        for k in range(len(_FREE) - 1, -1, -1):
            if _FREE[k].nbytes == nbytes:
                return _FREE.pop(k)
    return None


def _give_back(base) -> None:
    with _FREE_LOCK:
        _FREE.append(base)
        while len(_FREE) > _KEEP or sum(b.nbytes for b in _FREE) > _KEEP_BYTES:
            _FREE.pop(0)


def empty_cache() -> None:
    """Frees the large output buffers :func:`host_empty` keeps for reuse (at most 4, at most 1 GB)."""
    with _FREE_LOCK:
        _FREE.clear()


def host_empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor whose memory numpy allocates, the loss kernels' outputs.

    numpy asks Linux for transparent huge pages on large arrays (madvise), torch's allocator only under
    THP_MEM_ALLOC_ENABLE=1, so a fresh 40 MB gradient faults in 20 pages, not 10,000 (10^7 logits: the kernel's
    54 ms became 43 ms). Buffers of 32 MB or more, which malloc hands back to Linux when freed, are kept for
    reuse once the tensor is gone (a gradient that autograd has consumed, a ``.grad`` set to None), as torch's
    CUDA allocator keeps its blocks: the next call of that size then writes memory already mapped, where a fresh
    buffer paid about 5 ms of page faults at 10^7 logits. At most 4 such buffers, 1 GB, are kept;
    :func:`empty_cache` frees them. The tensor owns its array."""
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    shape = tuple(shape)
    nbytes = math.prod(shape) * np_dtype.itemsize
    if nbytes < _LARGE:
        return torch.from_numpy(np.empty(shape, dtype=np_dtype))
    base = _take(nbytes)
    if base is None:
        base = np.empty(nbytes, np.uint8)
    array = base.view(np_dtype).reshape(shape)
    weakref.finalize(array, _give_back, base)  # when the last tensor over it is gone
    return torch.from_numpy(array)


def in_threads(work, chunks: int, least: int, outputs=()) -> None:
    """work(c0, c1) over chunks 0..chunks-1, one contiguous range per thread (torch's thread count, with at least
    ``least`` chunks each): numba releases the GIL, so the threads run side by side, and each chunk's sum is the
    same whichever thread adds it. Fresh ``outputs`` (numpy arrays) are touched once a page first: threads that
    fault in one new buffer's huge pages side by side were slower than one thread (10^7 logits, 2 threads:
    55 ms against 43; touched first, 24)."""
    workers = min(torch.get_num_threads(), chunks // least)
    if workers <= 1:
        work(0, chunks)
        return
    for array in outputs:
        if array is not None:
            array.reshape(-1)[:: max(1, 4096 // array.itemsize)] = 0
    bounds = [round(k * chunks / workers) for k in range(workers + 1)]
    futures = [executor(workers - 1).submit(work, bounds[k], bounds[k + 1]) for k in range(workers - 1)]
    try:
        work(bounds[-2], bounds[-1])  # the calling thread takes the last range: one wake-up fewer
    finally:
        for f in futures:
            f.result()
