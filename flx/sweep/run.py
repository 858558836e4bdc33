"""Running a sweep: the planned configs (:func:`flx.experiment.plan.plan`) checked and keyed by their data
(:func:`flx.sweep.worker.prepare`), then trained on an executor.

- :func:`run_sweep` trains the tasks not yet in the store on an executor, stores each record as it finishes,
  claims runs so that overlapping sweeps never train one twice, and stops cleanly on Ctrl-C or SIGTERM
  (finished runs kept, workers ended). Progress goes to an ``on_event(kind, **fields)`` callback.
- :func:`run_one` trains one config in this process (``flx run``).

The executor is a seam (:mod:`flx.sweep.executors`): anything with ``map(tasks, data_dir)`` yielding records as
runs finish, pulling tasks lazily: a serial one (in-process), a local pool of spawned workers, and Ray.
Workers end with their parent however it ends: they ignore SIGINT/SIGTERM (the parent ends them) and a watchdog
thread exits each one within a second of its parent's death, SIGKILL included.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from dataclasses import dataclass, field

from flx.errors import ConfigError, StoreError
from flx.experiment.config import Config
from flx.experiment.spec import dump_spec
from flx.results.record import RunRecord
from flx.results.store import Store, new_owner, write_atomic
from flx.sweep.executors import BACKENDS, Executor, device_slots, make_executor
from flx.sweep.worker import Event, Task, available_cores, prepare, quiet


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
    def succeeded(self) -> bool:
        """False when this sweep trained runs and every one of them failed (an error, no result), with none
        stored before. A diverged or collapsed run is a result (claims score it), not a failure of the sweep."""
        trained = sum(self.counts.values())
        return not (trained and self.counts.get("failed", 0) == trained and not self.done_before)

    @property
    def exit_code(self) -> int:
        """130 or 143 when interrupted, 1 when every run failed, else 0."""
        return {"SIGINT": 130, "SIGTERM": 143}.get(self.interrupted, 0 if self.succeeded else 1)


def _slots(backend: str, device: str, workers: int | None, per_gpu: int, ray_address, on_event):
    """The device, workers and per-worker device slots of a sweep; Ray's reachability checked first."""
    if backend not in BACKENDS:
        raise ConfigError(f"--executor got {backend!r}; accepted: {' or '.join(BACKENDS)}")
    if backend == "ray":
        from flx.sweep.ray import check_reachable, import_ray

        import_ray()  # a missing Ray, or no cluster at the address, is said before the data is loaded
        if ray_address:
            check_reachable(ray_address)
        slots = [device]  # the cluster's resources size it, once it is joined
    else:
        from flx.engine.device import resolve_device

        device = resolve_device(device)
        cores = available_cores()
        if device == "cpu" and workers is not None and workers > cores:
            on_event(
                "note", text=f"--workers {workers} is more than the {cores} available cores; using {cores}"
            )
            workers = cores
        slots = device_slots(device, workers, per_gpu, cores)
    return device, workers, slots


def run_sweep(
    configs: list[Config],
    store: Store,
    *,
    workers: int | None = 1,
    data_dir: str | None = None,
    executor: Executor | None = None,
    spec: dict | None = None,
    dry_run: bool = False,
    on_event: Event = quiet,
    device: str = "cpu",
    per_gpu: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
) -> SweepResult:
    """Train every config not yet final in ``store`` on ``workers`` processes (None: the available cores, or
    ``per_gpu`` per GPU) on ``device`` (auto, cpu, cuda, cuda:N, mps: :func:`device_slots`); returns counts
    and whether it was interrupted. ``backend`` "ray" runs them as Ray tasks instead (:mod:`flx.sweep.ray`; on
    the cluster at ``ray_address``, or a local instance), sized by the cluster's CPUs or GPUs.

    Before anything is written: the store is checked (writable, not corrupt, current format) and each data set
    is checked and described once. ``spec`` (the effective spec) is then saved as ``store.out/spec.toml``.
    ``dry_run``: the checks only (reading; image sets only listed). Events: "note" (text), "data" (config, info),
    "decode" (done, total), "start" (pending, workers), "record" (record), "elsewhere" (key), "waiting" (n).
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "a sweep was started while a sweep worker imported the script that starts it: put the sweep under "
            '`if __name__ == "__main__":` (workers are spawned processes, and they import that script)'
        )
    if dry_run:
        store.done()  # a corrupt store is reported, a read-only one is fine
    else:
        store.check_writable()
    device, workers, slots = _slots(backend, device, workers, per_gpu, ray_address, on_event)
    copies = 1 if backend == "ray" else min(len(slots), len(configs))
    tasks = prepare(configs, data_dir, copies=copies + 1, on_event=on_event, plan=dry_run)
    done = store.done()
    result = SweepResult(tasks, done_before=sum(t.key in done for t in tasks))
    pending = [t for t in tasks if t.key not in done]
    result.workers = max(1, min(len(slots), len(pending)))
    if dry_run:
        return result
    if pending and backend == "ray" and executor is None:  # joined (or started) before anything is written
        from flx.sweep.ray import RayExecutor

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
            result.counts[record.status] = result.counts.get(record.status, 0) + 1
            on_event("record", record=record)
    except (KeyboardInterrupt, Interrupted) as exc:
        result.interrupted = "SIGTERM" if isinstance(exc, Interrupted) else "SIGINT"
    finally:
        executor.shutdown()  # also on any other error: no worker outlives the sweep
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        stop_heartbeat.set()
        try:
            store.release(owner)
        except (
            StoreError
        ):  # e.g. a full disk: this process's claims die with it, and the next sweep takes them over
            pass
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
) -> RunRecord:
    """``flx run``: one config trained in this process on ``device`` (auto resolved here); the store (if any) is
    checked before training, so a result is never trained only to be lost, and the record stored after."""
    from flx.engine.device import resolve_device
    from flx.engine.run import run

    device = resolve_device(device)
    if store is not None:
        store.check_writable()
    (task,) = prepare([config], data_dir)
    record = run(task.config, data_dir, data=task.data, device=device)
    if store is not None:
        store.put(record)
    return record
