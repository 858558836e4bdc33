"""``flx bench executors``: the same sweep with the local process pool and with Ray, one after the other."""

from __future__ import annotations

import time
from dataclasses import dataclass

EXECUTOR_GRID = {
    **{"loss": ["focal"], "gamma": [0.0, 0.5, 1.0, 2.0, 5.0], "alpha": [0.25, 0.75], "seeds": 4},
    **{"n_samples": 50_000, "ratio": 100.0, "epochs": 3},
}


@dataclass(frozen=True)
class SweepTiming:
    executor: str
    runs: int
    wall_s: float  # the whole run_sweep call: start-up (workers or Ray), training, storing
    train_s: float  # the sum of the runs' own training and evaluation times
    ok: int


def bench_executors(workers: int = 2, grid: dict | None = None, progress=None) -> list[SweepTiming]:
    """Time the same sweep (:data:`EXECUTOR_GRID`, 40 runs) into a fresh store with the local process pool and
    with Ray (a local instance of ``workers`` CPUs, started and stopped inside the timing), one after the other."""
    import tempfile

    from flx.experiment.plan import plan
    from flx.results.store import Store
    from flx.sweep.ray import import_ray
    from flx.sweep.run import run_sweep

    import_ray()  # no Ray: one line, before anything is timed
    configs = plan(None, grid or EXECUTOR_GRID)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for executor in ("local", "ray"):
            if progress is not None:
                progress(f"{executor}: {len(configs)} runs on {workers} workers...")
            store = Store(f"{tmp}/{executor}")
            t0 = time.perf_counter()
            if executor == "ray":
                import ray

                ray.init(
                    num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR"
                )
            try:
                result = run_sweep(configs, store, workers=workers, executor=executor)
            finally:
                if executor == "ray":
                    ray.shutdown()
            wall = time.perf_counter() - t0
            df = store.to_dataframe()
            out.append(
                SweepTiming(executor, len(df), wall, float(df["wall_time_s"].sum()), result.counts["ok"])
            )
    return out
