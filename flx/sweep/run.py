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
import sys
import threading
import time
from dataclasses import dataclass, field

from flx.errors import StoreError
from flx.experiment.config import Config
from flx.experiment.spec import dump_spec
from flx.results.record import RunRecord
from flx.results.store import Store, new_owner, write_atomic
from flx.sweep.executors import EXECUTORS, Executor
from flx.sweep.options import IN_PROCESS, SweepOptions
from flx.sweep.restored import reuse_restored
from flx.sweep.worker import Event, Task, prepare, quiet


class Interrupted(BaseException):
    """SIGTERM, raised in the main thread so a sweep stops the way Ctrl-C stops it. A BaseException, as
    KeyboardInterrupt is: a run that trains in this process (``--workers 1``) records any *error* as failed and goes
    on, but a stop signal must pass through that handler and end the sweep."""


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


def run_sweep(
    configs: list[Config],
    store: Store,
    options: SweepOptions | None = None,
    *,
    runner: Executor | None = None,
    spec: dict | None = None,
    on_event: Event = quiet,
    **fields,
) -> SweepResult:
    """Train every config not yet final in ``store`` as ``options`` say (:class:`SweepOptions`; default: one run
    at a time in this process, on the CPU; ``**fields`` replace single options: ``run_sweep(configs, store,
    workers=2)``); returns counts and whether it was interrupted. The executor named by ``options.executor``
    (:data:`flx.sweep.executors.EXECUTORS`) gives the device slots and starts the workers; ``runner``: an
    executor object to use instead (tests, ``flx compare``).

    Before anything is written: the store is checked (writable, not corrupt, current format) and each data set
    is checked and described once. ``spec`` (the effective spec) is then saved as ``store.out/spec.toml``.
    ``options.dry_run``: the checks only (reading; image sets only listed). Events: "note" (text), "data" (config,
    info), "decode" (done, total), "start" (pending, workers), "record" (record), "elsewhere" (key), "waiting"
    (n).
    """
    options = (options or IN_PROCESS).replace(**fields)
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "a sweep was started while a sweep worker imported the script that starts it: put the sweep under "
            '`if __name__ == "__main__":` (workers are spawned processes, and they import that script)'
        )
    if options.dry_run:
        store.done()  # a corrupt store is reported, a read-only one is fine
    else:
        store.check_writable()
    chosen = EXECUTORS[options.executor]
    device, slots = chosen.slots(options, on_event)
    copies = chosen.copies(slots, len(configs))
    here = getattr(runner, "in_process", False) if runner is not None else chosen.in_process(slots)
    tasks = prepare(
        configs,
        options.data_dir,
        copies=copies + 1,
        on_event=on_event,
        plan=options.dry_run,
        keep=here and not options.dry_run,
    )
    done = store.done()
    tasks, reused = reuse_restored(tasks, store, done)
    if reused:
        on_event(
            "note",
            text=f"{reused} restored runs reused: their generated data is drawn differently on this machine (the "
            "same data set, parameters and seed; another machine's floating point), so they are not trained again",
        )
    result = SweepResult(tasks, done_before=sum(t.key in done for t in tasks))
    pending = [t for t in tasks if t.key not in done]
    result.workers = max(1, min(len(slots), len(pending)))
    if options.dry_run:
        return result
    if pending and runner is None:
        runner, result.workers, device = chosen.start(options, device, slots, len(pending))
    store.create()
    # provenance: the grid that really runs (overrides included); flx report reads it back
    if spec is not None:
        write_atomic(store.out / "spec.toml", lambda p: p.write_text(dump_spec(spec)))
    on_event("start", pending=len(pending), workers=result.workers, device=device)
    if not pending:
        return result
    _train(pending, store, runner, options.data_dir, result, on_event)
    return result


def _train(pending: list[Task], store: Store, runner, data_dir, result: SweepResult, on_event: Event) -> None:
    """Train ``pending`` on ``runner``, each claimed just before it starts and stored as it finishes; Ctrl-C
    and SIGTERM stop it cleanly (``result.interrupted``), and no worker outlives it."""
    owner = new_owner()
    stop_heartbeat = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(store, owner, stop_heartbeat), daemon=True)
    beat.start()
    previous = _on_signals()
    try:
        for record in runner.map(_claimed(pending, store, owner, result, on_event), data_dir):
            store.put(record)
            result.counts[record.status] = result.counts.get(record.status, 0) + 1
            on_event("record", record=record)
            check_signalled()
    except (KeyboardInterrupt, Interrupted) as exc:
        result.interrupted = "SIGTERM" if isinstance(exc, Interrupted) else "SIGINT"
    finally:
        runner.shutdown()  # also on any other error: no worker outlives the sweep
        hook = previous.pop("hook", sys.unraisablehook)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = hook
        stop_heartbeat.set()
        try:
            store.release(owner)
        except StoreError:  # e.g. a full disk: this process's claims die with it, the next sweep takes them
            pass


def _claimed(pending: list[Task], store: Store, owner: str, result: SweepResult, on_event: Event):
    """The pending tasks, each claimed in the store just before it is handed to a worker; runs another live sweep
    holds are waited for (and taken over if that sweep dies)."""
    queue = pending
    while queue:
        waiting = []
        for task in queue:
            check_signalled()  # a signal whose exception Python swallowed still stops the next run
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


_SIGNALLED: dict = {"signal": None}  # the stop signal this sweep received, noted where it may be swallowed


def check_signalled() -> None:
    """Raise the stop signal's exception again if one came: Python swallows an exception raised while it runs a
    garbage-collection or weakref callback (printing "Exception ignored"), so the sweep checks between runs."""
    if _SIGNALLED["signal"] == signal.SIGTERM:
        raise Interrupted()
    if _SIGNALLED["signal"] == signal.SIGINT:
        raise KeyboardInterrupt


def quiet_unraisable(previous):
    """A ``sys.unraisablehook`` that stays silent for a stop signal's exception raised inside a callback (it is
    noted and raised again between runs) and passes anything else to ``previous``."""

    def hook(unraisable):
        if isinstance(unraisable.exc_value, (Interrupted, KeyboardInterrupt)) or (
            type(unraisable.exc_value).__name__ == "CompareInterrupted"
        ):
            return
        previous(unraisable)

    return hook


def _on_signals() -> dict:
    """SIGTERM raises Interrupted and SIGINT KeyboardInterrupt in the main thread, each noted first; returns what
    to put back (signal -> handler, "hook" -> the unraisable hook); nothing off the main thread."""
    _SIGNALLED["signal"] = None
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        _SIGNALLED["signal"] = signum
        raise Interrupted() if signum == signal.SIGTERM else KeyboardInterrupt

    stops = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) != signal.SIG_IGN else [])
    previous = {s: signal.signal(s, handler) for s in stops}  # an ignored Ctrl-C (a background job) stays so
    previous["hook"] = sys.unraisablehook
    sys.unraisablehook = quiet_unraisable(sys.unraisablehook)
    return previous


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
