"""How flx's CPU loss kernels use threads and memory, public so that ``flx bench losses`` times its floor the
same way: one kept thread pool, one contiguous range of chunks per thread, outputs allocated through numpy (huge
pages) and touched once a page before the threads write them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

CHUNK = 4096  # elements per unit of work: the binary kernel's partial sum (its loss buffer, 16-32 KB, stays in L1)

_POOL: list = [None, 0]  # [executor, its size]


def _reset_pool() -> None:  # a forked child has no worker threads; its copy of the executor must not be used
    _POOL[0], _POOL[1] = None, 0


os.register_at_fork(after_in_child=_reset_pool)


def executor(workers: int) -> ThreadPoolExecutor:
    """The loss kernels' thread pool of ``workers`` threads, kept between calls."""
    if _POOL[0] is None or _POOL[1] != workers:
        if _POOL[0] is not None:
            _POOL[0].shutdown(wait=False)
        _POOL[0], _POOL[1] = ThreadPoolExecutor(workers, thread_name_prefix="flx-loss"), workers
    return _POOL[0]


def host_empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor whose memory numpy allocates: numpy asks Linux for transparent huge pages on
    large arrays (madvise), torch's allocator only under THP_MEM_ALLOC_ENABLE=1, so a fresh 40 MB gradient
    faults in 20 pages, not 10,000 (10^7 logits: the kernel's 54 ms became 43 ms). The tensor owns the array."""
    return torch.from_numpy(np.empty(tuple(shape), dtype=torch.empty(0, dtype=dtype).numpy().dtype))


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
    for f in [executor(workers).submit(work, bounds[k], bounds[k + 1]) for k in range(workers)]:
        f.result()
