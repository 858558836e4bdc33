"""Executors: anything with ``map(tasks, data_dir)`` yielding records as runs finish, pulling tasks lazily. A
serial one (in-process), a local pool of spawned workers, and Ray (:mod:`flx.sweep.ray`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from flx.sweep.worker import Task, begin_worker, failed_record, init_worker, pool_task, run_task


class Executor(Protocol):
    def map(self, tasks: Iterable[Task], data_dir: str | None) -> Iterator[dict]:
        """Yield one record per task, in completion order, taking tasks from the iterable only as it has room."""
        ...

    def shutdown(self) -> None: ...


class SerialExecutor:
    """Runs tasks one after another in this process (workers = 1; also what tests use)."""

    in_process = True  # the sweep keeps its data loaded for these runs

    def __init__(self, device: str = "cpu"):
        self.device = device

    def map(self, tasks, data_dir):
        import torch

        threads = begin_worker()
        try:
            for task in tasks:
                yield run_task(task, data_dir, self.device)
        finally:
            torch.set_num_threads(threads)

    def shutdown(self) -> None:
        pass


class LocalPoolExecutor:
    """A persistent pool of spawned worker processes, each importing torch once and running many tasks, each
    on its own entry of ``devices`` (default: all on the CPU)."""

    def __init__(self, workers: int, devices: list[str] | None = None):
        self.workers = workers
        self.devices = devices or ["cpu"] * workers
        self._pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        import multiprocessing as mp

        from flx.experiment.plugins import plugin_modules

        context = mp.get_context("spawn")
        slots = context.Queue()
        for device in self.devices:
            slots.put(device)
        self._pool = ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=init_worker,
            initargs=(os.getpid(), plugin_modules(), slots),
        )
        return self._pool

    def map(self, tasks, data_dir):
        pool = self._start()
        source = iter(tasks)
        in_flight: dict = {}
        try:
            while True:
                while len(in_flight) < self.workers:
                    task = next(source, None)
                    if task is None:
                        break
                    in_flight[pool.submit(pool_task, task, data_dir)] = task
                if not in_flight:
                    return
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = in_flight.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:  # a worker was killed (e.g. out of memory): record, go on
                        self.shutdown()
                        pool = self._start()
                        yield failed_record(
                            task,
                            f"a worker process died while training this run (out of memory?{_script_hint()})",
                        )
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop at once: cancel queued runs and kill the workers (finished runs are already stored)."""
        if self._pool is None:
            return
        processes = list((self._pool._processes or {}).values())
        for p in processes:
            if p.is_alive():
                p.kill()  # workers ignore SIGTERM
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.join(timeout=5)
        self._pool = None


class KeptPoolExecutor(LocalPoolExecutor):
    """A :class:`LocalPoolExecutor` that outlives each sweep it serves, so its workers keep torch and their loaded
    data from one sweep to the next (``flx compare``'s trials: many short sweeps in a row). A sweep's end leaves
    the workers running; :meth:`close` stops them, and whoever made the executor calls it in a ``finally``. A
    broken pool (a worker killed) is replaced as in the plain pool."""

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is not None and not getattr(self._pool, "_broken", False):
            return self._pool
        super().shutdown()
        return super()._start()

    def shutdown(self) -> None:  # a sweep's end: the workers stay for the next one
        if self._pool is not None and getattr(self._pool, "_broken", False):
            super().shutdown()

    def close(self) -> None:
        super().shutdown()


def _script_hint() -> str:
    """For a sweep started from a Python script: spawned workers import that script again, so a sweep not under
    ``if __name__ == "__main__":`` kills every worker at its start."""
    import sys

    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if not script or "flx" in script.replace("\\", "/").split("/"):
        return ""
    return f' or, in a script, a sweep outside `if __name__ == "__main__":` in {script}'


class LocalBackend:
    """``--executor local``: worker processes on this machine (one run at a time in this process for one worker),
    one device slot each."""

    def slots(self, options, on_event) -> tuple[str, list[str]]:
        """The resolved device and one device slot per worker (``--workers`` capped at the available cores)."""
        from flx.engine.device import resolve_device
        from flx.sweep.worker import available_cores

        device, workers = resolve_device(options.device), options.workers
        cores = available_cores()
        if device == "cpu" and workers is not None and workers > cores:
            on_event(
                "note", text=f"--workers {workers} is more than the {cores} available cores; using {cores}"
            )
            workers = cores
        return device, device_slots(device, workers, options.per_gpu, cores)

    def copies(self, slots: list[str], configs: int) -> int:
        """Processes that hold a data set at once (each worker loads it)."""
        return min(len(slots), configs)

    def in_process(self, slots: list[str]) -> bool:
        """Whether the runs train in this process (one worker: :class:`SerialExecutor`)."""
        return len(slots) <= 1

    def start(self, options, device: str, slots: list[str], pending: int):
        """(executor, runs at once, device) for ``pending`` runs."""
        workers = max(1, min(len(slots), pending))
        return make_executor(workers, slots[:workers]), workers, device


def _executors() -> dict:
    from flx.sweep.ray import RayBackend

    return {"local": LocalBackend(), "ray": RayBackend()}


EXECUTORS = _executors()  # flx sweep --executor NAME: each knows its slots and its start-up


def make_executor(workers: int, devices: list[str] | None = None) -> Executor:
    devices = devices or ["cpu"] * workers
    return SerialExecutor(devices[0]) if workers <= 1 else LocalPoolExecutor(workers, devices)


def device_slots(device: str, workers: int | None, per_gpu: int = 1, cores: int = 1) -> list[str]:
    """One device per worker. ``device`` is resolved (:func:`flx.engine.device.resolve_device`): on ``cuda`` the
    workers take the GPUs in turn (default: ``per_gpu`` per GPU), on ``cuda:N`` or ``mps`` they share the one
    (default: ``per_gpu``), on ``cpu`` each takes a core (default: every core)."""
    if device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        return [f"cuda:{i % gpus}" for i in range(workers or gpus * per_gpu)]
    if device != "cpu":
        return [device] * (workers or per_gpu)
    return ["cpu"] * (workers or cores)
