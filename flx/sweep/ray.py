"""Sweeps on a Ray cluster: :class:`RayExecutor`, the third executor behind :class:`flx.sweep.Executor`.

``flx sweep ... --executor ray`` starts a local Ray instance (every core of this machine), and
``--ray-address HOST:PORT`` (or ``auto``) joins a running cluster, e.g. one started with ``ray start --head``.
Runs go to Ray tasks in small batches (a few runs per task, so Ray's per-task cost is paid once per batch),
each task declaring one CPU and, with ``--device cuda``, ``1 / --per-gpu`` of a GPU. Ray keeps its worker
processes between tasks, and a process loads each data set once (flx's per-process cache): data is read from
the same path on every node (a shared file system) or generated, never shipped per run.

Only the driver (the ``flx sweep`` process) writes the store, exactly as with the local pool: runs are claimed
before they are handed out, stored once as their batch returns (a final record is never written twice), and
Ctrl-C or SIGTERM cancels the running tasks, keeps what is stored and releases the rest for the next sweep. Ray
retries a task whose worker or node died (``max_retries``); a batch lost for good is recorded as failed runs,
which the next sweep retries. Ray is an optional dependency (``pip install 'flx[ray]'``), imported only here.
"""

from __future__ import annotations

import itertools
import os
import sys

from flx.errors import ConfigError

MAX_RETRIES = 3  # Ray's retries of a task whose worker or node died (a run's own errors are recorded)
MAX_BATCH = 8
TASK_SECONDS = (
    2.0  # runs per task: as many as take about this long (one at a time until runs have been timed)
)
_READY = False  # this Ray worker process has paid the one-off start-up costs


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"--executor ray needs Ray ({exc}); install it with pip install 'flx[ray]', or use --executor local"
        ) from None
    return ray


class RayBackend:
    """``--executor ray``: Ray tasks on the cluster at ``--ray-address`` or on a local instance, sized by the
    cluster's CPUs or GPUs once it is joined."""

    def slots(self, options, on_event) -> tuple[str, list[str]]:
        """Ray's presence and the cluster's address are checked before the data is loaded; the device stays as
        given until the cluster is joined."""
        import_ray()
        if options.ray_address:
            check_reachable(options.ray_address)
        return options.device, [options.device]

    def copies(self, slots: list[str], configs: int) -> int:
        return 1  # the driver holds the data once; Ray's workers load their own

    def in_process(self, slots: list[str]) -> bool:
        return False

    def start(self, options, device: str, slots: list[str], pending: int):
        """Joined (or started) before anything is written: (executor, runs at once, device as the tasks see it)."""
        executor = RayExecutor(options.ray_address, device, options.per_gpu, options.workers).start(pending)
        return executor, executor.slots, executor.device


def _run_batch(tasks: list, data_dir: str | None, env: dict, device: str) -> list[dict]:
    """A Ray task: train ``tasks`` one after another in this worker process and return their records."""
    global _READY
    from flx.sweep.worker import begin_worker, run_task

    os.environ.update(env)
    if env.get("FLX_CWD") and env["FLX_CWD"] not in sys.path:
        sys.path.append(
            env["FLX_CWD"]
        )  # module:function models and plugins beside the driver's working folder
    if not _READY:
        from flx.experiment.plugins import load_plugins

        load_plugins()
        begin_worker()  # one torch thread per task (it holds one CPU), imports paid: startup_s
        _READY = True
    return [run_task(task, data_dir, device) for task in tasks]


def _wait(ray, refs: list) -> list:
    """The finished ones of ``refs``, waiting at most half a second (so Ctrl-C and SIGTERM are seen). A signal
    handler's exception raised inside Ray's Cython wait comes back wrapped in a SystemError: it is unwrapped."""
    try:
        return ray.wait(refs, num_returns=1, timeout=0.5)[0]
    except SystemError as exc:
        cause = exc.__cause__
        if isinstance(cause, KeyboardInterrupt) or type(cause).__name__ == "Interrupted":  # Ctrl-C, SIGTERM
            raise cause from None
        raise


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConfigError at once when nothing listens at a HOST:PORT address (Ray itself retries for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms: Ray resolves them
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"--ray-address got {address!r}, but nothing answers there ({exc.strerror or exc}); start the head with "
            "`ray start --head` and give the address it prints (HOST:6379)"
        ) from None


class RayExecutor:
    """Runs tasks as Ray tasks on a local instance (``address`` None) or a cluster; see the module's doc.
    :meth:`start` connects and sizes it (``slots``: runs trained at once; ``device`` as the tasks see it)."""

    def __init__(
        self, address: str | None = None, device: str = "auto", per_gpu: int = 1, workers: int | None = None
    ):
        self.address = address
        self.device = device
        self.per_gpu = per_gpu
        self.workers = workers
        self.slots = 1
        self._most = 1
        self._ray = None
        self._remote = None
        self._owned = False  # this executor started Ray (and shuts it down)
        self._in_flight: dict = {}

    def start(self, pending: int) -> RayExecutor:
        ray = self._ray = import_ray()
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # not its connection retries, line by line
        if not ray.is_initialized() and self.address:
            check_reachable(self.address)
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address, include_dashboard=False, log_to_driver=False,
                    logging_level="ERROR", configure_logging=True,
                )  # fmt: skip
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                hint = ""
                if self.address and "RAY_AUTH_MODE" not in os.environ:
                    hint = " (a cluster that checks tokens needs RAY_AUTH_MODE=token here; `ray get-auth-token` prints it)"
                raise ConfigError(f"cannot start or join {where}: {str(exc).splitlines()[0]}{hint}") from None
            self._owned = True
        self._remote = ray.remote(_run_batch)
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
        if self.device == "auto":
            self.device = "cuda" if gpus > 0 else "cpu"
        if self.device.startswith("cuda:"):
            raise ConfigError(
                "--device got a numbered GPU with --executor ray; accepted: cuda (Ray assigns the GPUs), cpu or auto"
            )
        if self.device == "cuda" and gpus == 0:
            raise ConfigError("--device cuda: the Ray cluster has no GPU; accepted: cpu or auto")
        capacity = int(gpus * self.per_gpu) if self.device == "cuda" else cpus
        self.slots = max(1, min(self.workers or capacity, capacity, pending))
        self._most = max(
            1, min(MAX_BATCH, pending // (3 * self.slots))
        )  # yet ~3 tasks per slot: balanced load
        return self

    def _batch_size(self, seconds: list[float]) -> int:
        """Runs per task: one until runs have been timed, then as many as take :data:`TASK_SECONDS` (short runs
        share Ray's per-task cost; long ones report one by one)."""
        if not seconds:
            return 1
        mean = sum(seconds) / len(seconds)
        return max(1, min(self._most, int(TASK_SECONDS / max(mean, 1e-3))))

    def _submit(self, batch: list, data_dir: str | None, env: dict) -> None:
        gpu = 1.0 / self.per_gpu if self.device == "cuda" else 0
        remote = self._remote.options(num_cpus=1, num_gpus=gpu, max_retries=MAX_RETRIES)
        self._in_flight[remote.remote(batch, data_dir, env, self.device)] = batch

    def map(self, tasks, data_dir):
        from flx.experiment.plugins import PLUGINS_ENV, plugin_modules
        from flx.sweep.worker import failed_record

        ray = self._ray
        env = {
            PLUGINS_ENV: ",".join(plugin_modules()),
            "FLX_CWD": os.getcwd(),
            **{k: os.environ[k] for k in ("FLX_CACHE_DIR", "FLX_CHECK_TARGETS") if k in os.environ},
        }
        source = iter(tasks)
        seconds: list[float] = []  # the runs' times so far: how many go in a task

        def fill():  # two batches per slot in flight: a slot never waits for the driver
            while len(self._in_flight) < 2 * self.slots:
                batch = list(itertools.islice(source, self._batch_size(seconds)))
                if not batch:
                    return
                self._submit(batch, data_dir, env)

        fill()
        while self._in_flight:
            ready = _wait(ray, list(self._in_flight))
            for ref in ready:
                batch = self._in_flight.pop(ref)
                try:
                    records = ray.get(ref)
                except ray.exceptions.RayError as exc:  # its worker or node died more than MAX_RETRIES times
                    why = f"the Ray task training this run was lost ({type(exc).__name__}); a later sweep retries it"
                    records = [failed_record(task, why) for task in batch]
                seconds += [r.get("wall_time_s", 0.0) + r.get("data_time_s", 0.0) for r in records]
                yield from records
            fill()

    def shutdown(self) -> None:
        """Cancel the running tasks (their runs stay unstored, for the next sweep) and stop a Ray this started."""
        if self._ray is None:
            return
        for ref in list(self._in_flight):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass
        self._in_flight.clear()
        if self._owned:
            self._ray.shutdown()
            self._owned = False
