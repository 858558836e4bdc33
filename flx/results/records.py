"""A results folder's ``runs.csv``: its columns (the fields of :class:`flx.results.record.RunRecord`) and how it is
read back."""

from __future__ import annotations

from pathlib import Path

from flx.errors import ReportError
from flx.results.record import FIELDS

RUN_COLUMNS = tuple(FIELDS)  # runs.csv's columns, in this order, where any run has them


def read_runs_csv(results_dir: Path):
    """The per-run records of a results directory's runs.csv (what every table is rendered from); text fields of
    the config read as text, whatever they look like (``positive = "0"``)."""
    import pandas as pd

    from flx.experiment.params import PARAMS

    path = Path(results_dir) / "runs.csv"
    text = {name: str for name, p in PARAMS.items() if p.kind is str}  # a label value "0" stays text
    try:
        df = pd.read_csv(path, dtype=text)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportError(
            f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    missing = {"key", "status", "loss", "seed"} - set(df.columns)
    if missing:
        raise ReportError(f"{path} is not an flx runs file: it lacks the column(s) {sorted(missing)}")
    return df


def code_versions(runs) -> dict:
    """Code version (commit, and the hash of uncommitted changes if any) -> how many runs ran it."""
    done = runs[runs["status"] != "missing"]
    if "git_commit" not in done:
        return {}
    diff = done["code_diff"] if "code_diff" in done else None
    versions = {}
    for i, commit in enumerate(done["git_commit"]):
        text = str(commit)[:7] if commit == commit else "unknown"
        if diff is not None and diff.iloc[i] == diff.iloc[i] and diff.iloc[i]:
            text += f" + uncommitted changes {diff.iloc[i]}"
        versions[text] = versions.get(text, 0) + 1
    return versions
