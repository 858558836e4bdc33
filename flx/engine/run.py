"""One run: its data loaded, its model trained and evaluated, its record (metrics, curves, data, provenance)."""

from __future__ import annotations

import functools
import hashlib
import math
import platform
import subprocess
import time
from pathlib import Path

import torch

from flx import __version__
from flx.data.load import describe, load
from flx.engine.classification import run_classification
from flx.engine.detection import run_detection
from flx.experiment.config import Config
from flx.experiment.metrics import METRICS
from flx.experiment.registries import get_dataset
from flx.results.record import RunRecord


@functools.cache
def git_commit() -> str | None:
    """The checkout's commit, looked up once per process (not once per run)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def code_changes() -> str | None:
    """None when flx's code (the ``flx`` package of the checkout) is as committed; else a hash of its changes
    (the diff against the commit and the untracked files' contents): runs stamped with the same commit but
    different changes ran different code. Looked up once per process."""
    root = Path(__file__).resolve().parents[1]

    def git(*args) -> bytes:
        return subprocess.run(["git", *args], capture_output=True, timeout=10, cwd=root, check=True).stdout

    try:
        diff = git("diff", "HEAD", "--", ".")
        untracked = git("ls-files", "--others", "--exclude-standard", "--", ".").split()
    except (OSError, subprocess.SubprocessError):
        return None
    if not diff and not untracked:
        return None
    digest = hashlib.sha256(diff)
    for name in sorted(untracked):
        digest.update(name + b"\0" + (root / name.decode()).read_bytes())
    return digest.hexdigest()[:12]


def provenance() -> dict:
    """What code ran: flx's and torch's versions, the commit, whether flx's code differed from it (``git_dirty``)
    and a hash of the difference (``code_diff``), the host and the instruction set torch's CPU kernels dispatch to
    (``cpu_capability``: the same config, data and seed give bit-identical metrics only where it is the same)."""
    changes = code_changes()
    return {
        "flx_version": __version__,
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "git_dirty": changes is not None,
        "code_diff": changes,
        "host": platform.node(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def run(
    config: Config, data_dir: str | None = None, data: dict | None = None, device: str = "cpu"
) -> RunRecord:
    """Train one model on ``device`` (a resolved one: cpu, cuda, cuda:N, mps) and return its
    :class:`~flx.results.record.RunRecord`: key, config, status, metrics, data, timings, provenance and the
    device, with its artefacts beside (``record.artefacts``, bytes: :meth:`flx.results.store.Store.put` stores
    them next to the JSON record).

    ``data`` is what :func:`flx.data.describe` says of the config's data, when the caller (a sweep's parent) has
    it; otherwise it is computed here. ``data_time_s`` is the time spent loading data in this run (0 when this
    process has it already); ``wall_time_s`` covers training and evaluation only. Any exception gives status
    "failed" with its message (a sweep goes on; a later one retries it).
    """
    config = config.normalized()
    record = {"key": None, **config.to_dict(), **{m: math.nan for m in METRICS}, **(data or {})}
    artefacts: dict = {}
    t0 = time.perf_counter()
    try:
        train, test, meta = load(config.dataset, config.data_params(), config.data_seed, data_dir)
        record.update(data or describe(train, test, meta))
    except Exception as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", epochs_run=0)
    record["data_time_s"] = time.perf_counter() - t0
    record["key"] = config.key(record.get("data_fingerprint") or "unknown")
    started = time.perf_counter()
    if record.get("status") != "failed" and get_dataset(config.dataset).task == "detection":
        try:
            fields, artefacts = run_detection(config, train, test, meta, device)
            record.update({"error": None, **fields})
        except Exception as exc:  # recorded, so a sweep goes on; a rerun retries it
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", steps_run=0)
    elif record.get("status") != "failed":
        try:
            fields, artefacts = run_classification(config, train, test, meta, device)
            record.update(fields, error=None)
        except Exception as exc:  # recorded, so a sweep goes on; a rerun retries it
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", epochs_run=0)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    record["wall_time_s"] = time.perf_counter() - started
    record.update(provenance(), device=device)
    if device.startswith("cuda"):
        record["device_name"] = torch.cuda.get_device_name(device)
    return RunRecord(record, artefacts)


def warm_up() -> None:
    """Pay the one-off import costs of a first run now (scikit-learn's metrics; torch's optimizers import
    torch._dynamo on first use, about 3 s), so a run's wall time measures that run alone."""
    import sklearn.metrics  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    git_commit()
    code_changes()
