"""``flx bench losses``: flx's sigmoid focal loss against torchvision's, side by side in one run.

Six implementations of forward + backward (reduction "mean", alpha 0.25, gamma 2, 1% positives):

- ``flx``: :func:`flx.losses.sigmoid_focal_loss` in eager mode (the fused kernel);
- ``flx_compiled``: flx's under ``torch.compile`` (its custom operator, ``flx::sigmoid_focal``);
- ``torchvision``: ``torchvision.ops.sigmoid_focal_loss`` in eager mode;
- ``tv_compiled``: torchvision's under ``torch.compile`` (inductor; one static graph per size for both compiled
  ones; compilation is the first call and is not in the median);
- ``bce``: ``F.binary_cross_entropy_with_logits``, what torch's own eager loss over the same tensors costs;
- ``floor``: one read of logits and targets, one exp and one log1p, one write per logit (:mod:`flx.bench.floor`);
  CPU only.

Each is timed under every condition: torch thread count 1 or 2, each alone and with 2 background processes that
keep the CPU busy (pure-Python spin loops, started before and stopped after that condition). Time is the median
from ``torch.utils.benchmark``; the first call (with any compilation) is timed on its own. Peak extra memory is
measured in a fresh child process per (implementation, size), as the growth of the peak resident set size (reset
just before the call) over the resident size just before one call, so no implementation inherits another's allocator state.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

IMPLEMENTATIONS = ("flx", "flx_compiled", "torchvision", "tv_compiled", "bce", "floor")
# (torch threads, busy background processes)
CONDITIONS = ((1, 0), (2, 0), (1, 2), (2, 2))


def condition_name(threads: int, busy: int) -> str:
    return f"{threads} thr" + (f", {busy} busy" if busy else "")


def _loss_fn(impl: str) -> Callable:
    """The loss function an implementation name stands for; ValueError for a name not in IMPLEMENTATIONS."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"implementation got {impl!r}; accepted: one of {', '.join(IMPLEMENTATIONS)}")
    import logging

    import torch
    import torch.nn.functional as F

    # "no CUDA runtime" warnings are irrelevant on a CPU
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if impl in ("flx", "flx_compiled"):
        from flx.losses.functional import sigmoid_focal_loss

        return sigmoid_focal_loss if impl == "flx" else torch.compile(sigmoid_focal_loss, dynamic=False)
    if impl == "floor":
        from flx.bench.floor import floor_loss

        return floor_loss
    if impl == "bce":
        return lambda x, y, alpha, gamma, reduction: F.binary_cross_entropy_with_logits(
            x, y, reduction=reduction
        )
    from torchvision.ops import sigmoid_focal_loss

    if impl == "tv_compiled":
        return torch.compile(sigmoid_focal_loss, dynamic=False)
    return sigmoid_focal_loss


def _inputs(n: int, seed: int = 0, device: str = "cpu"):
    import torch

    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, generator=g) * 3).to(device).requires_grad_()
    targets = (torch.rand(n, generator=g) < 0.01).float().to(device)
    return logits, targets


def _step(fn, logits, targets):
    logits.grad = None
    fn(logits, targets, alpha=0.25, gamma=2.0, reduction="mean").backward()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _high_water_bytes() -> int:
    """The peak resident set size since the last reset (VmHWM), or since the start where it cannot be reset."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_high_water() -> None:
    """Sets the peak RSS to the current RSS (Linux >= 4.0), so that making the inputs is not counted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_extra_memory(impl: str, n: int) -> int:
    """Runs in a fresh child: bytes the peak RSS grows by during one forward + backward (gradient included)."""
    import torch

    torch.set_num_threads(1)
    fn = _loss_fn(impl)
    _step(fn, *_inputs(n, seed=1))  # kernels, the allocator and any compilation, outside the measurement
    from flx.losses.threads import empty_cache

    empty_cache()  # the warm-up's gradient, kept for reuse, would make this call's look free
    logits, targets = _inputs(n)
    logits.grad = None
    before = _rss_bytes()
    _reset_high_water()
    _step(fn, logits, targets)
    return max(_high_water_bytes() - before, 0)


def _spin() -> None:  # a busy background process
    x = 0
    while True:
        x = (x + 1) % 1_000_003


@dataclass
class BenchRow:
    condition: str
    n: int
    impl: str
    first_call_s: float
    median_s: float
    peak_extra_mb: float


def _cuda_peak_extra_memory(fn, n: int, device: str) -> int:
    """On a GPU: bytes the peak allocated memory grows by during one forward + backward (in this process; the
    caching allocator's peak is reset before the call)."""
    import torch

    _step(fn, *_inputs(n, seed=1, device=device))
    logits, targets = _inputs(n, device=device)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    _step(fn, logits, targets)
    torch.cuda.synchronize(device)
    return max(torch.cuda.max_memory_allocated(device) - before, 0)


def _time(fn, n: int, min_run_time: float, device: str = "cpu") -> tuple[float, float]:
    import torch
    from torch.utils import benchmark  # its timer synchronises CUDA

    logits, targets = _inputs(n, device=device)
    t0 = time.perf_counter()
    _step(fn, logits, targets)
    if device != "cpu":
        torch.cuda.synchronize(device)
    first = time.perf_counter() - t0
    timer = benchmark.Timer(  # its num_threads defaults to 1: it would time every condition on one thread
        "step(fn, logits, targets)",
        globals={"step": _step, "fn": fn, "logits": logits, "targets": targets},
        num_threads=torch.get_num_threads(),
    )
    return first, timer.blocked_autorange(min_run_time=min_run_time).median


def bench_losses(
    sizes: list[int],
    min_run_time: float = 1.0,
    measure_memory: bool = True,
    conditions: tuple[tuple[int, int], ...] = CONDITIONS,
    implementations: tuple[str, ...] = IMPLEMENTATIONS,
    progress: Callable[[str], None] | None = None,
    busy: bool = True,
    device: str = "cpu",
) -> list[BenchRow]:
    """Time every implementation at every size under every condition in this process; measure memory in child
    processes, one per (implementation, size). ``progress`` is called with a line before each condition.
    ``busy`` False leaves out the conditions with busy background processes. On a ``device`` other than the
    CPU (a CUDA GPU) there is one condition, the GPU, and memory is the allocator's peak."""
    from flx.engine.device import resolve_device

    device = resolve_device(device)  # a GPU that is not there: one line
    if device != "cpu":
        return _bench_cuda(sizes, min_run_time, measure_memory, implementations, progress, device)
    conditions = tuple(c for c in conditions if busy or c[1] == 0)
    import logging

    import torch

    # "no CUDA runtime" warnings are irrelevant on a CPU
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    ctx = mp.get_context("spawn")
    memory: dict[tuple[str, int], float] = {}
    if measure_memory:
        if progress:
            progress("peak memory: one child process per implementation and size")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures = {
                (impl, n): pool.submit(_peak_extra_memory, impl, n) for n in sizes for impl in implementations
            }
            memory = {key: f.result() / 2**20 for key, f in futures.items()}
    fns = {impl: _loss_fn(impl) for impl in implementations}
    previous = torch.get_num_threads()
    rows = []
    try:
        for threads, busy in conditions:
            name = condition_name(threads, busy)
            if progress:
                progress(f"timing: {name}")
            torch.set_num_threads(threads)
            spinners = [ctx.Process(target=_spin, daemon=True) for _ in range(busy)]
            for p in spinners:
                p.start()
            try:
                for n in sizes:
                    for impl in implementations:
                        first, median = _time(fns[impl], n, min_run_time)
                        rows.append(
                            BenchRow(name, n, impl, first, median, memory.get((impl, n), float("nan")))
                        )
            finally:
                for p in spinners:
                    p.terminate()
                    p.join()
    finally:
        torch.set_num_threads(previous)
    return rows


def _bench_cuda(sizes, min_run_time, measure_memory, implementations, progress, device) -> list[BenchRow]:
    import torch

    implementations = tuple(i for i in implementations if i != "floor")  # a CPU kernel
    fns = {impl: _loss_fn(impl) for impl in implementations}
    name = torch.cuda.get_device_name(device)
    if progress:
        progress(f"timing on {device} ({name})")
    rows = []
    for n in sizes:
        for impl in implementations:
            first, median = _time(fns[impl], n, min_run_time, device)
            memory = _cuda_peak_extra_memory(fns[impl], n, device) / 2**20 if measure_memory else float("nan")
            rows.append(BenchRow(device, n, impl, first, median, memory))
    return rows
