"""What a sweep's workers do: the tasks (a config, its run key and its data), checked once in the parent; a
worker's start (one torch thread, plugins imported, exit with the parent) and one run, on the device it is given.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flx.experiment.config import Config

Event = Callable[..., None]


def quiet(kind: str, **fields) -> None:
    pass


@dataclass(frozen=True)
class Task:
    """One run to train: its config, its key and what the parent found about its data."""

    config: Config
    key: str
    data: dict


def prepare(
    configs: list[Config],
    data_dir: str | None = None,
    copies: int = 1,
    on_event: Event = quiet,
    plan: bool = False,
    keep: bool = False,
) -> list[Task]:
    """Load (and for images decode and cache) each distinct data set once, here, and key every config by its
    data's fingerprint. Raises flx.data.DataError for missing, one-class, undecodable or oversized data, and
    ConfigError for a model that cannot work on it (each distinct model is built once here, on its data).
    ``plan`` (a dry run): image sets are listed and fingerprinted only, in seconds; nothing is decoded, no
    backbone trained and no model built on them. ``keep``: the runs train in this process, which keeps each data
    set loaded for them (it is loaded once)."""
    from flx.data.load import data_info
    from flx.engine.classification import check_models, models_to_check
    from flx.experiment.registries import get_dataset

    infos: dict[tuple, dict] = {}
    tasks = []
    for c in configs:
        ident = (c.dataset, c.data_params(), c.data_seed)
        if ident not in infos:

            def progress(done, total, stage="decoding images", c=c):
                on_event("decode", config=c, done=done, total=total, stage=stage)

            same_data = [d for d in configs if (d.dataset, d.data_params(), d.data_seed) == ident]
            infos[ident] = data_info(
                c,
                data_dir,
                copies=copies,
                progress=progress,
                check=(lambda train, cs=same_data: check_models(cs, train))
                if models_to_check(same_data)
                else None,
                plan=plan,
                keep=keep,
            )
            on_event("data", config=c, info=infos[ident])
            if plan and get_dataset(c.dataset).plans:
                on_event(
                    "note",
                    text=f"dry run: {c.dataset}'s images were counted and fingerprinted, not decoded; no backbone "
                    "trained and no model built on them",
                )
        tasks.append(Task(c, c.key(infos[ident]["data_fingerprint"]), infos[ident]))
    return tasks


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_WORKER_STARTED: float | None = None


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)  # the sweep is gone (SIGKILL, OOM killer): do not outlive it


def begin_worker() -> int:
    """What every executor does before its first run: one torch thread (no oversubscription) and the one-off
    import costs paid, timed as the first run's ``startup_s`` (not its ``wall_time_s``). Returns the torch
    threads that were set before."""
    global _WORKER_STARTED
    _WORKER_STARTED = time.perf_counter()
    import torch

    from flx.engine.run import warm_up

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    warm_up()
    return threads


_POOL_SLOT: dict = {"device": "cpu"}  # a pool worker's device: set once in that process, by init_worker


def init_worker(parent: int, plugins: list[str], slots) -> None:
    """A pool worker: signals are the parent's to handle, it exits with its parent, it imports the modules
    that registered losses, data sets or models in the parent (:mod:`flx.experiment.plugins`), and it trains on the
    device slot it takes from ``slots`` (a queue: each GPU gets its share of the workers)."""
    from flx.experiment.plugins import load_plugins

    _POOL_SLOT["device"] = slots.get()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    os.environ["OMP_NUM_THREADS"] = "1"
    load_plugins(plugins)
    begin_worker()


def run_task(task: Task, data_dir: str | None, device: str = "cpu"):
    """Train one task on ``device``; the first run of a worker also records the worker's start-up time (torch
    import)."""
    global _WORKER_STARTED
    from flx.engine.run import run

    startup = time.perf_counter() - _WORKER_STARTED if _WORKER_STARTED is not None else 0.0
    _WORKER_STARTED = None
    return run(task.config, data_dir, data=task.data, device=device).replace(startup_s=startup)


def pool_task(task: Task, data_dir: str | None):
    """:func:`run_task` in a pool worker, on the device slot the worker took when it started."""
    return run_task(task, data_dir, _POOL_SLOT["device"])


def failed_record(task: Task, error: str):
    """The record of a run that never reported (its worker died, Ray lost it)."""
    from flx.experiment.metrics import METRICS
    from flx.results.record import RunRecord

    return RunRecord(
        {"key": task.key, **task.config.to_dict(), **{m: math.nan for m in METRICS}, **task.data},
        status="failed",
        error=error,
        epochs_run=0,
    )
