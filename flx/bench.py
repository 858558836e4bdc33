"""Benchmarks (not tests): flx's sigmoid focal loss against torchvision's eager implementation.

Time is the median of forward + backward (reduction "mean") from ``torch.utils.benchmark``; the first call,
with any lazy initialisation, is timed on its own. Peak extra memory is measured in a fresh child process per
(implementation, size), as the growth of the peak resident set size over the resident size just before the
call, so neither implementation inherits the other's allocator state.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

IMPLEMENTATIONS = ("flx", "torchvision")


def _loss_fn(impl: str):
    if impl == "flx":
        from flx.losses import sigmoid_focal_loss
    else:
        from torchvision.ops import sigmoid_focal_loss
    return sigmoid_focal_loss


def _inputs(n: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, generator=g) * 3).requires_grad_()
    targets = (torch.rand(n, generator=g) < 0.01).float()
    return logits, targets


def _step(fn, logits, targets):
    logits.grad = None
    fn(logits, targets, alpha=0.25, gamma=2.0, reduction="mean").backward()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_extra_memory(impl: str, n: int) -> int:
    """Runs in a fresh child: bytes the peak RSS grows by during one forward + backward (gradient included)."""
    import torch

    torch.set_num_threads(1)
    fn = _loss_fn(impl)
    small = _inputs(1000)
    _step(fn, *small)  # load kernels and the allocator outside the measurement
    logits, targets = _inputs(n)
    before = _rss_bytes()
    _step(fn, logits, targets)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(peak - before, 0)


@dataclass
class BenchRow:
    n: int
    impl: str
    first_call_s: float
    median_s: float
    peak_extra_mb: float


def time_impl(impl: str, n: int, min_run_time: float = 1.0) -> tuple[float, float]:
    """(first-call seconds, median seconds) of forward + backward at n logits, in this process."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(
        logging.ERROR
    )  # "no CUDA runtime": irrelevant here
    from torch.utils import benchmark

    fn = _loss_fn(impl)
    logits, targets = _inputs(n)
    t0 = time.perf_counter()
    _step(fn, logits, targets)
    first = time.perf_counter() - t0
    timer = benchmark.Timer(
        "step(fn, logits, targets)", globals={"step": _step, "fn": fn, "logits": logits, "targets": targets}
    )
    return first, timer.blocked_autorange(min_run_time=min_run_time).median


def bench_losses(sizes: list[int], min_run_time: float = 1.0, measure_memory: bool = True) -> list[BenchRow]:
    """Time both implementations in this process; measure memory in child processes (one per measurement)."""
    import torch

    torch.set_num_threads(
        os.cpu_count() or 1
    )  # every core, whatever OMP_NUM_THREADS says (make sets it to 1)
    memory: dict[tuple[str, int], float] = {}
    if measure_memory:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures = {
                (impl, n): pool.submit(_peak_extra_memory, impl, n) for n in sizes for impl in IMPLEMENTATIONS
            }
            memory = {key: f.result() / 2**20 for key, f in futures.items()}
    rows = []
    for n in sizes:
        for impl in IMPLEMENTATIONS:
            first, median = time_impl(impl, n, min_run_time)
            rows.append(BenchRow(n, impl, first, median, memory.get((impl, n), float("nan"))))
    return rows
