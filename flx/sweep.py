"""Sweeps as a library: config -> plan -> run -> store.

- :func:`plan` turns a spec (``flx.config.load_spec``) and overrides into the list of distinct normalized
  :class:`~flx.config.Config` s (a grid is a product of lists; parameters that do not apply to a loss collapse
  instead of multiplying runs), refusing grids above :data:`flx.config.MAX_RUNS`.
- :func:`prepare` checks each data set once in this process (files, both classes, decoding, memory) and gives
  every config its run key (config + data fingerprint) as a :class:`Task`.
- :func:`run_sweep` trains the tasks not yet in the store on an executor, stores each record as it finishes,
  claims runs so that overlapping sweeps never train one twice, and stops cleanly on Ctrl-C or SIGTERM
  (finished runs kept, workers ended). Progress goes to an ``on_event(kind, **fields)`` callback.

The executor is a seam: anything with ``map(tasks, data_dir)`` yielding records as runs finish, pulling tasks
lazily. flx has a serial one (in-process) and a local pool of spawned workers; a cluster engine would be a third.
Workers end with their parent however it ends: they ignore SIGINT/SIGTERM (the parent ends them) and a watchdog
thread exits each one within a second of its parent's death, SIGKILL included.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from flx.config import (
    CONFIG_FIELDS,
    LOSSES,
    MAX_RUNS,
    Config,
    ConfigError,
    dump_spec,
    empty_spec,
    parse_list,
)
from flx.errors import StoreError
from flx.store import Store, new_owner, write_atomic

Event = Callable[..., None]


def _quiet(kind: str, **fields) -> None:
    pass


# ------------------------------------------------------------------------------------------------------------
# Plan
# ------------------------------------------------------------------------------------------------------------
def merge(spec: dict | None, overrides: dict | None = None) -> dict:
    """The spec that really runs: ``overrides`` maps a config field to a list (it replaces that field in every
    grid) or to one value (fixed in [config] and dropped from the grids); "seeds" to the number of seeds."""
    spec = dict(spec or empty_spec())
    overrides = dict(overrides or {})
    seeds = overrides.pop("seeds", None)
    unknown = set(overrides) - set(CONFIG_FIELDS)
    if unknown:
        raise ConfigError(f"unknown config field(s) {sorted(unknown)}; known: {', '.join(CONFIG_FIELDS)}")
    lists = {k: list(v) for k, v in overrides.items() if isinstance(v, (list, tuple))}
    fixed = {k: v for k, v in overrides.items() if k not in lists}
    grids = [{k: v for k, v in g.items() if k not in fixed} | lists for g in spec["grid"]]
    if seeds is not None:  # --seeds replaces every grid's own number of seeds
        grids = [{k: v for k, v in g.items() if k != "seeds"} for g in grids]
    config = {k: v for k, v in spec["config"].items() if k not in lists} | fixed
    if not any("loss" in g for g in grids) and "loss" not in config:
        grids = [{**g, "loss": ["focal"]} for g in grids]
    return {**spec, "config": config, "grid": grids, "seeds": seeds or spec["seeds"]}


def parse_sets(items: list[str], many: bool = True, label: str = "--set") -> dict:
    """``["lr=0.1,0.01", "data_seed=1"]`` -> {name: [values]} (or one value each with ``many=False``), every
    value checked against the constraint table; ConfigError naming the item and what is accepted."""
    out: dict = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ConfigError(
                f"{label} got {item!r}; accepted: FIELD=VALUE{',VALUE...' if many else ''}, e.g. lr=0.1"
            )
        if name not in CONFIG_FIELDS or (name == "seed" and many):
            known = [f for f in CONFIG_FIELDS if f != "seed" or not many]
            raise ConfigError(
                f"{label} got field {name!r}; accepted: one of {', '.join(known)} (seeds: --seeds)"
            )
        if name in out:
            raise ConfigError(f"{label} gives {name} twice; give it once, with a comma-separated list")
        values = parse_list(name, text, f"{label} {name}")
        if not many and len(values) != 1:
            raise ConfigError(f"{label} {name} got {text!r}; accepted: one value (lists are for flx sweep)")
        out[name] = values if many else values[0]
    return out


# Options that were always lists: one value given for them still replaces the field in every grid.
GRID_AXES = (
    *("loss", "gamma", "alpha", "epsilon", "ohem_k", "ohem_ratio", "ohem_nms"),
    *("anchor_scales", "anchor_ratios", "ratio", "prior", "backbone"),
)


def with_sets(overrides: dict, items: list[str], many: bool = True, defaulted: Iterable[str] = ()) -> dict:
    """The named options' ``overrides`` plus the ``--set`` ``items`` (:func:`parse_sets`); ConfigError for a
    field given both ways (those in ``defaulted`` hold a command's default, not the user's value). For a sweep
    (``many``), one value of a field that is not a grid axis by nature is fixed in [config], as before lists were
    accepted, so the saved spec and a spec's own grids read the same; two or more make it a grid axis."""
    sets = parse_sets(items, many=many)
    twice = sorted(set(sets) & (set(overrides) - set(defaulted)))
    if twice:
        raise ConfigError(f"{', '.join(twice)} given both as an option and with --set; give each once")
    merged = overrides | sets
    if not many:
        return merged
    return {
        k: v[0] if isinstance(v, list) and len(v) == 1 and k not in GRID_AXES else v
        for k, v in merged.items()
    }


def inapplicable(configs: list[Config], given: Iterable[str]) -> str | None:
    """A note on the loss hyperparameters the user gave that some or all of the sweep's losses do not take
    (``--loss ce --gamma 2``: ce has no gamma), or None when every one applies to every loss."""
    losses = list(dict.fromkeys(c.loss for c in configs))
    hyper = dict.fromkeys(p for spec in LOSSES.values() for p in spec.params)
    parts = []
    for name in [f for f in given if f in hyper]:
        users = [loss for loss in losses if name in LOSSES[loss].params]
        others = [loss for loss in losses if loss not in users]
        option = "--" + name.replace("_", "-")
        if not users:
            parts.append(f"{option} does not apply to {', '.join(others)} and is ignored")
        elif others:
            parts.append(f"{option} applies to {', '.join(users)} only, not {', '.join(others)}")
    return "; ".join(parts) or None


def plan_size(spec: dict) -> int:
    """Grid points times seeds before inapplicable parameters collapse (an upper bound on the runs)."""
    return sum(
        math.prod(len(v) for k, v in g.items() if k != "seeds") * g.get("seeds", spec["seeds"])
        for g in spec["grid"]
    )


def expand(base: Config, grids: list[dict[str, list]], seeds: Iterable[int]) -> list[Config]:
    """Every distinct normalized config of the grids (each a product of its lists) times the seeds (a grid's own
    ``seeds``, a number, replaces them for that grid), in order."""
    out: dict[str, Config] = {}
    for grid in grids:
        names = [n for n in grid if n != "seeds"]
        for values in itertools.product(*(grid[n] for n in names)):
            for seed in range(grid["seeds"]) if "seeds" in grid else seeds:
                config = dataclasses.replace(
                    base, **dict(zip(names, values, strict=True)), seed=seed
                ).normalized()
                out.setdefault(config.config_key(), config)
    return list(out.values())


def plan(spec: dict | None = None, overrides: dict | None = None, paths: bool = True) -> list[Config]:
    """The distinct runs of a spec with its overrides, checked; ConfigError above MAX_RUNS grid points, or
    (``paths``: when the runs are to train) when a data path they read does not exist."""
    spec = merge(spec, overrides)
    size = plan_size(spec)
    if size > MAX_RUNS:
        raise ConfigError(
            f"the sweep has {size:,} grid points x seeds; at most {MAX_RUNS:,} are accepted: give fewer values or seeds"
        )
    configs = expand(Config(**spec["config"]), spec["grid"], range(spec["seeds"]))
    for config in {(c.data, c.test, c.model): c for c in configs}.values() if paths else ():  # each once
        config.check_runnable()
    return configs


# ------------------------------------------------------------------------------------------------------------
# Prepare: data checked once, run keys
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One run to train: its config, its key and what the parent found about its data."""

    config: Config
    key: str
    data: dict


def prepare(
    configs: list[Config], data_dir: str | None = None, copies: int = 1, on_event: Event = _quiet
) -> list[Task]:
    """Load (and for images decode and cache) each distinct data set once, here, and key every config by its
    data's fingerprint. Raises flx.data.DataError for missing, one-class, undecodable or oversized data."""
    from flx.data import data_info

    infos: dict[tuple, dict] = {}
    tasks = []
    for c in configs:
        ident = (c.dataset, c.data_params(), c.data_seed)
        if ident not in infos:

            def progress(done, total, stage="decoding images", c=c):
                on_event("decode", config=c, done=done, total=total, stage=stage)

            infos[ident] = data_info(c, data_dir, copies=copies, progress=progress)
            on_event("data", config=c, info=infos[ident])
        tasks.append(Task(c, c.key(infos[ident]["data_fingerprint"]), infos[ident]))
    return tasks


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------------------------
# Executors
# ------------------------------------------------------------------------------------------------------------
class Executor(Protocol):
    def map(self, tasks: Iterable[Task], data_dir: str | None) -> Iterator[dict]:
        """Yield one record per task, in completion order, taking tasks from the iterable only as it has room."""
        ...

    def shutdown(self) -> None: ...


_WORKER_STARTED: float | None = None


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)  # the sweep is gone (SIGKILL, OOM killer): do not outlive it


def _begin_worker() -> int:
    """What every executor does before its first run: one torch thread (no oversubscription) and the one-off
    import costs paid, timed as the first run's ``startup_s`` (not its ``wall_time_s``). Returns the torch
    threads that were set before."""
    global _WORKER_STARTED
    _WORKER_STARTED = time.perf_counter()
    import torch

    from flx.train import warm_up

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    warm_up()
    return threads


_DEVICE = "cpu"  # where this process trains (a pool worker takes one of the sweep's device slots)


def _init_worker(parent: int, plugins: list[str], slots) -> None:
    """A pool worker: signals are the parent's to handle, it exits with its parent, it imports the modules
    that registered losses, data sets or models in the parent (:mod:`flx.registry`), and it trains on the
    device slot it takes from ``slots`` (a queue: each GPU gets its share of the workers)."""
    from flx.registry import load_plugins

    global _DEVICE
    _DEVICE = slots.get()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    os.environ["OMP_NUM_THREADS"] = "1"
    load_plugins(plugins)
    _begin_worker()


def _run_task(task: Task, data_dir: str | None) -> dict:
    """Train one task; the first run of a worker also records the worker's start-up time (torch import)."""
    global _WORKER_STARTED
    from flx.train import run

    startup = time.perf_counter() - _WORKER_STARTED if _WORKER_STARTED is not None else 0.0
    _WORKER_STARTED = None
    record = run(task.config, data_dir, data=task.data, device=_DEVICE)
    record["startup_s"] = startup
    return record


class SerialExecutor:
    """Runs tasks one after another in this process (workers = 1; also what tests use)."""

    def __init__(self, device: str = "cpu"):
        self.device = device

    def map(self, tasks, data_dir):
        import torch

        global _DEVICE
        threads, before = _begin_worker(), _DEVICE
        _DEVICE = self.device
        try:
            for task in tasks:
                yield _run_task(task, data_dir)
        finally:
            torch.set_num_threads(threads)
            _DEVICE = before

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

        from flx.registry import plugin_modules

        context = mp.get_context("spawn")
        slots = context.Queue()
        for device in self.devices:
            slots.put(device)
        self._pool = ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_init_worker,
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
                    in_flight[pool.submit(_run_task, task, data_dir)] = task
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
                        yield _failed(task, "a worker process died while training this run (out of memory?)")
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


def _failed(task: Task, error: str) -> dict:
    from flx.metrics import METRICS

    return {
        "key": task.key,
        **task.config.to_dict(),
        **{m: math.nan for m in METRICS},
        **task.data,
        "status": "failed",
        "error": error,
        "epochs_run": 0,
    }


BACKENDS = ("local", "ray")  # flx sweep --executor


def make_executor(workers: int, devices: list[str] | None = None) -> Executor:
    devices = devices or ["cpu"] * workers
    return SerialExecutor(devices[0]) if workers <= 1 else LocalPoolExecutor(workers, devices)


def device_slots(device: str, workers: int | None, per_gpu: int = 1, cores: int = 1) -> list[str]:
    """One device per worker. ``device`` is resolved (:func:`flx.train.resolve_device`): on ``cuda`` the
    workers take the GPUs in turn (default: ``per_gpu`` per GPU), on ``cuda:N`` or ``mps`` they share the one
    (default: ``per_gpu``), on ``cpu`` each takes a core (default: every core)."""
    if device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        return [f"cuda:{i % gpus}" for i in range(workers or gpus * per_gpu)]
    if device != "cpu":
        return [device] * (workers or per_gpu)
    return ["cpu"] * (workers or cores)


# ------------------------------------------------------------------------------------------------------------
# Run a sweep
# ------------------------------------------------------------------------------------------------------------
class Interrupted(Exception):
    """SIGTERM, raised in the main thread so a sweep stops the way Ctrl-C stops it."""


@dataclass
class SweepResult:
    tasks: list[Task]
    done_before: int = 0  # runs already final in the store when the sweep started
    workers: int = 1
    counts: dict = field(default_factory=lambda: {"ok": 0, "diverged": 0, "collapsed": 0, "failed": 0})
    elsewhere: int = 0  # runs finished meanwhile by another sweep on the same store
    interrupted: str | None = None  # "SIGINT" or "SIGTERM"

    @property
    def keys(self) -> set[str]:
        return {t.key for t in self.tasks}

    @property
    def exit_code(self) -> int:
        return {"SIGINT": 130, "SIGTERM": 143}.get(self.interrupted, 0)


def run_sweep(
    configs: list[Config],
    store: Store,
    *,
    workers: int | None = 1,
    data_dir: str | None = None,
    executor: Executor | None = None,
    spec: dict | None = None,
    dry_run: bool = False,
    on_event: Event = _quiet,
    device: str = "cpu",
    per_gpu: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
) -> SweepResult:
    """Train every config not yet final in ``store`` on ``workers`` processes (None: the available cores, or
    ``per_gpu`` per GPU) on ``device`` (auto, cpu, cuda, cuda:N, mps: :func:`device_slots`); returns counts
    and whether it was interrupted. ``backend`` "ray" runs them as Ray tasks instead (:mod:`flx.cluster`; on
    the cluster at ``ray_address``, or a local instance), sized by the cluster's CPUs or GPUs.

    Before anything is written: the store is checked (writable, not corrupt, current format) and each data set
    is checked and described once. ``spec`` (the effective spec) is then saved as ``store.out/spec.toml``.
    ``dry_run`` stops after the checks (reading only). Events: "note" (text), "data" (config, info), "decode"
    (done, total), "start" (pending, workers), "record" (record), "elsewhere" (key), "waiting" (n).
    """
    if dry_run:
        store.done()  # a corrupt store is reported, a read-only one is fine
    else:
        store.check_writable()
    if backend not in BACKENDS:
        raise ConfigError(f"--executor got {backend!r}; accepted: {' or '.join(BACKENDS)}")
    if backend == "ray":
        from flx.cluster import _check_reachable, _import_ray

        _import_ray()  # a missing Ray, or no cluster at the address, is said before the data is loaded
        if ray_address:
            _check_reachable(ray_address)
        slots = [device]  # the cluster's resources size it, once it is joined
    else:
        from flx.train import resolve_device

        device = resolve_device(device)
        cores = available_cores()
        if device == "cpu" and workers is not None and workers > cores:
            on_event(
                "note", text=f"--workers {workers} is more than the {cores} available cores; using {cores}"
            )
            workers = cores
        slots = device_slots(device, workers, per_gpu, cores)
    copies = 1 if backend == "ray" else min(len(slots), len(configs))
    tasks = prepare(configs, data_dir, copies=copies + 1, on_event=on_event)
    done = store.done()
    result = SweepResult(tasks, done_before=sum(t.key in done for t in tasks))
    pending = [t for t in tasks if t.key not in done]
    result.workers = max(1, min(len(slots), len(pending)))
    if dry_run:
        return result
    if pending and backend == "ray" and executor is None:  # joined (or started) before anything is written
        from flx.cluster import RayExecutor

        executor = RayExecutor(ray_address, device, per_gpu, workers).start(len(pending))
        result.workers, device = executor.slots, executor.device
    store.create()
    # provenance: the grid that really runs (overrides included); flx report reads it back
    if spec is not None:
        write_atomic(store.out / "spec.toml", lambda p: p.write_text(dump_spec(spec)))
    on_event("start", pending=len(pending), workers=result.workers, device=device)
    if not pending:
        return result
    executor = executor or make_executor(result.workers, slots[: result.workers])
    owner = new_owner()
    stop_heartbeat = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(store, owner, stop_heartbeat), daemon=True)
    beat.start()
    previous = _on_sigterm()
    try:
        for record in executor.map(_claimed(pending, store, owner, result, on_event), data_dir):
            store.put(record)
            result.counts[record["status"]] = result.counts.get(record["status"], 0) + 1
            on_event("record", record=record)
    except (KeyboardInterrupt, Interrupted) as exc:
        result.interrupted = "SIGTERM" if isinstance(exc, Interrupted) else "SIGINT"
    finally:
        executor.shutdown()  # also on any other error: no worker outlives the sweep
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        stop_heartbeat.set()
        store.release(owner)
    return result


def _claimed(pending: list[Task], store: Store, owner: str, result: SweepResult, on_event: Event):
    """The pending tasks, each claimed in the store just before it is handed to a worker; runs another live sweep
    holds are waited for (and taken over if that sweep dies)."""
    queue = pending
    while queue:
        waiting = []
        for task in queue:
            state = store.claim(task.key, owner)
            if state == "claimed":
                yield task
            elif state == "done":
                result.elsewhere += 1
                on_event("elsewhere", key=task.key)
            else:
                waiting.append(task)
        if waiting:
            on_event("waiting", n=len(waiting))
            time.sleep(1.0)
        queue = waiting


def _heartbeat(store: Store, owner: str, stop: threading.Event) -> None:
    while not stop.wait(30.0):
        try:
            store.heartbeat(owner)
        except Exception:  # a missed heartbeat only lets another host take over sooner
            pass


def _on_sigterm():
    """SIGTERM raises Interrupted in the main thread (so it ends the sweep as Ctrl-C does); None elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Interrupted()

    return signal.signal(signal.SIGTERM, handler)


def run_one(
    config: Config, store: Store | None = None, data_dir: str | None = None, device: str = "cpu"
) -> dict:
    """``flx run``: one config trained in this process on ``device`` (auto resolved here); the store (if any) is
    checked before training, so a result is never trained only to be lost, and the record stored after."""
    from flx.train import resolve_device, run

    device = resolve_device(device)
    if store is not None:
        store.check_writable()
    (task,) = prepare([config], data_dir)
    record = run(task.config, data_dir, data=task.data, device=device)
    if store is not None:
        store.put(record)
    return record


# ------------------------------------------------------------------------------------------------------------
# Migration of stores written before run keys included the data (flx < 0.2)
# ------------------------------------------------------------------------------------------------------------
def migrate(results_dirs: list, data_dir: str | None = None, on_event: Event = _quiet) -> dict:
    """Re-key every record of each results folder (its runs.sqlite and runs.csv) by config and data fingerprint
    and add the data columns (location, fingerprint, examples per class). Records of file-backed data get the
    fingerprint of the files under ``data_dir`` (old records did not say which files they used). Every folder is
    checked before any is changed; each file is rewritten atomically; records already migrated are left as they
    are. Returns the number of records per file."""
    for d in results_dirs:
        if not (Store(d).exists() or (Path(d) / "runs.csv").exists()):
            raise StoreError(f"no runs in {d} (neither runs.sqlite nor runs.csv)")
    infos: dict = {}
    counts: dict = {}
    for d in results_dirs:
        counts |= _migrate_dir(Store(d), data_dir, infos, on_event)
    return counts


def _migrate_dir(store: Store, data_dir: str | None, infos: dict, on_event: Event) -> dict:
    import pandas as pd

    from flx.config import DATA_COLUMNS, config_from_record

    def upgrade(record: dict) -> dict:
        if record.get("data_fingerprint"):
            return record
        config = config_from_record(record).normalized()
        ident = (config.dataset, config.data_params(), config.data_seed)
        if ident not in infos:
            infos[ident] = prepare([config], data_dir, on_event=on_event)[0].data
        return {**record, "key": config.key(infos[ident]["data_fingerprint"]), **infos[ident]}

    counts = {}
    if store.exists():
        store.done()  # corrupt -> StoreError before anything changes
        records = [upgrade(r) for r in store.records(with_time=True)]
        store.replace_all(records)
        counts[str(store.path)] = len(records)
    csv = store.out / "runs.csv"
    if csv.exists():
        from flx.report import read_runs_csv

        df = read_runs_csv(store.out)
        rows = [
            upgrade({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
            for r in df.to_dict("records")
        ]
        new = pd.DataFrame(rows)
        cols = [c for c in df.columns if c not in DATA_COLUMNS] + [c for c in DATA_COLUMNS if c in new]
        new = new.reindex(columns=cols + [c for c in new.columns if c not in cols])
        write_atomic(csv, lambda p: new.sort_values("key").to_csv(p, index=False))
        counts[str(csv)] = len(new)
    return counts
