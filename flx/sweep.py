"""Sweeps: a grid of configs, run in parallel, stored as they finish, resumable.

A grid is a dict of Config field -> list of values (``loss``, ``gamma``, ``alpha`` ... any field), expanded as a
product and then normalized, so parameters that do not apply to a loss (gamma for ``ce``) collapse instead of
multiplying runs. A TOML spec holds fixed fields in ``[config]``, one or more ``[[grid]]`` tables and ``seeds``.

The executor is a seam: anything with ``map(configs, data_dir)`` yielding records as runs finish. flx has a
serial one (in-process) and a local process pool; a cluster engine (Ray) would be a third.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Protocol

import tomllib

from flx.train import CONFIG_FIELDS, Config


class SpecError(ValueError):
    """A malformed or missing spec file."""


def expand(base: Config, grids: list[dict[str, list]], seeds: Iterable[int]) -> list[Config]:
    """Every distinct normalized config of the grids (each a product of its lists) times the seeds, in order."""
    out: dict[str, Config] = {}
    for grid in grids:
        unknown = set(grid) - set(CONFIG_FIELDS)
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)}; known: {', '.join(CONFIG_FIELDS)}")
        names = list(grid)
        for values in itertools.product(*(grid[n] for n in names)):
            for seed in seeds:
                config = dataclasses.replace(
                    base, **dict(zip(names, values, strict=True)), seed=seed
                ).normalized()
                out.setdefault(config.key(), config)
    return list(out.values())


def load_spec(path: str | os.PathLike) -> dict:
    """A TOML spec: {"name", "description", "config": {...}, "grid": [{field: [values]}], "seeds": int}."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist; give a TOML file such as experiments/table1a.toml")
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"spec file {path} is not valid TOML: {exc}") from None
    allowed = {"name", "description", "config", "grid", "seeds", "out", "report"}
    unknown = set(spec) - allowed
    if unknown:
        raise SpecError(
            f"spec file {path}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    grids = spec.get("grid", [{}])
    if isinstance(grids, dict):
        grids = [grids]
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise SpecError(f"spec file {path}: [[grid]] must be tables of field = [values]")
    spec["grid"] = [{k: v if isinstance(v, list) else [v] for k, v in g.items()} for g in grids]
    if any(len(v) == 0 for g in spec["grid"] for v in g.values()):
        raise SpecError(f"spec file {path}: a grid list is empty")
    if not isinstance(spec.setdefault("config", {}), dict):
        raise SpecError(f"spec file {path}: [config] must be a table of field = value")
    for table in [spec["config"], *spec["grid"]]:
        unknown = set(table) - set(CONFIG_FIELDS)
        if unknown:
            raise SpecError(
                f"spec file {path}: unknown config field(s) {sorted(unknown)}; "
                f"known: {', '.join(CONFIG_FIELDS)}"
            )
    seeds = spec.get("seeds", 1)
    if not isinstance(seeds, int) or seeds < 1:
        raise SpecError(f"spec file {path}: seeds = {seeds!r}; it must be an integer >= 1")
    spec["seeds"] = seeds
    spec.setdefault("name", path.stem)
    return spec


def _toml_value(value) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def dump_spec(spec: dict) -> str:
    """A spec as TOML (the subset load_spec reads), so a results directory records the grid that really ran,
    command-line overrides included."""
    lines = [
        f"{k} = {_toml_value(spec[k])}" for k in ("name", "description", "seeds") if spec.get(k) is not None
    ]
    for table in ("config", "report"):
        if spec.get(table):
            lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in spec[table].items()]
    for grid in spec["grid"]:
        lines += ["", "[[grid]]"] + [f"{k} = {_toml_value(v)}" for k, v in grid.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------
# Executors
# ------------------------------------------------------------------------------------------------------------
class Executor(Protocol):
    def map(self, configs: list[Config], data_dir: str | None) -> Iterator[dict]:
        """Yield one record per config, in completion order."""
        ...


def _init_worker() -> None:
    """One torch thread per worker (no oversubscription); Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _run_one(config: Config, data_dir: str | None) -> dict:
    from flx.train import run

    return run(config, data_dir)


class SerialExecutor:
    """Runs configs one after another in this process (workers = 1; also what tests use)."""

    def map(self, configs, data_dir):
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for config in configs:
                yield _run_one(config, data_dir)
        finally:
            torch.set_num_threads(threads)


class LocalPoolExecutor:
    """A persistent pool of spawned worker processes, each importing torch once and running many configs."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def map(self, configs, data_dir):
        import multiprocessing as mp

        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
        )
        try:
            pending = {self._pool.submit(_run_one, c, data_dir) for c in configs}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop at once: cancel queued runs and end the workers (finished runs are already stored)."""
        if self._pool is None:
            return
        processes = list((self._pool._processes or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(timeout=5)
        self._pool = None


def make_executor(workers: int) -> Executor:
    return SerialExecutor() if workers <= 1 else LocalPoolExecutor(workers)
