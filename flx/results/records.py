"""A results folder's ``runs.csv``: the columns it has and how it is read back."""

from __future__ import annotations

from pathlib import Path

from flx.errors import ReportError
from flx.experiment.config import CONFIG_FIELDS
from flx.experiment.metrics import METRICS
from flx.experiment.params import DATA_COLUMNS

RUN_COLUMNS = (
    "key",
    "status",
    *CONFIG_FIELDS,
    *METRICS,
    "epochs_run",
    "steps_run",
    "best_step",
    "wall_time_s",
    "error",
    "flx_version",
    "torch_version",
    "git_commit",
    "git_dirty",
    "code_diff",
    "host",
    *DATA_COLUMNS,
    *("backbone_test_ap", "backbone_train_s", "backbone_pool", "backbone_cache"),
    "data_time_s",
    "startup_s",
)


def read_runs_csv(results_dir: Path):
    """The per-run records of a results directory's runs.csv (what every table is rendered from)."""
    import pandas as pd

    path = Path(results_dir) / "runs.csv"
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportError(
            f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    missing = {"key", "status", "loss", "seed"} - set(df.columns)
    if missing:
        raise ReportError(f"{path} is not an flx runs file: it lacks the column(s) {sorted(missing)}")
    return df
