"""How a sweep runs, as one object: :class:`SweepOptions` is what ``flx sweep``'s options become (built and
checked by the CLI before torch is imported) and what :func:`flx.sweep.sweep` and :func:`flx.sweep.run_sweep`
take, so a sweep from Python is the CLI's sweep. What a sweep trains (the grid) is the spec's and the config
fields'; these are the rest: where the runs train, how many at once, where their records go."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from flx.errors import ConfigError
from flx.experiment.params import check

EXECUTOR_NAMES = (
    "local",
    "ray",
)  # flx sweep --executor: the map of executors is flx.sweep.executors.EXECUTORS


@dataclass(frozen=True)
class SweepOptions:
    """``workers``: runs trained at once (None: the available cores; on GPUs ``per_gpu`` per GPU). ``device``:
    auto, cpu, cuda, cuda:N or mps. ``executor``: "local" (worker processes here) or "ray" (Ray tasks, on the
    cluster at ``ray_address`` or a local instance). ``out``: the results folder (None: the spec's, else
    ``FLX_OUT`` / ./runs). ``data_dir``: real data. ``dry_run``: plan and check only. ``mlflow``: a tracking URI
    each run is logged to as it finishes."""

    workers: int | None = None
    device: str = "auto"
    per_gpu: int = 1
    executor: str = "local"
    ray_address: str | None = None
    out: str | None = None
    data_dir: str | None = None
    dry_run: bool = False
    mlflow: str | None = None

    def __post_init__(self):
        if self.executor not in EXECUTOR_NAMES:
            raise ConfigError(f"--executor got {self.executor!r}; accepted: {' or '.join(EXECUTOR_NAMES)}")
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError("--ray-address is for --executor ray; add --executor ray or leave it out")

    @classmethod
    def parse(cls, workers=None, device=None, per_gpu=None, **rest) -> SweepOptions:
        """From the command line's text: each value checked against the constraint table (one line naming it
        and what is accepted), an MLflow URI's scheme too, the rest as given."""
        if rest.get("mlflow") is not None:
            from flx.results.export import check_scheme

            check_scheme(rest["mlflow"])
        return cls(
            workers=check("workers", workers, "--workers") if workers is not None else None,
            device=check("device", device or "auto", "--device"),
            per_gpu=check("per_gpu", per_gpu or 1, "--per-gpu"),
            **rest,
        )

    def replace(self, **changes) -> SweepOptions:
        return dataclasses.replace(self, **changes)


# run_sweep's default: one run at a time, in this process, on the CPU (a library call starts nothing it was
# not asked to; the CLI's default is every core and the best device).
IN_PROCESS = SweepOptions(workers=1, device="cpu")
