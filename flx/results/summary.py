"""Per-setting summaries of stored runs (mean ± sample std over seeds) and how their cells are written; read by
the report, the figures and the sweep's closing table."""

from __future__ import annotations

import math

from flx.experiment.config import CONFIG_FIELDS
from flx.experiment.metrics import METRICS, TABLE_METRICS
from flx.experiment.params import LOSS_PARAMS
from flx.experiment.registries import LOSSES

SETTING_EXCLUDE = ("seed",)
STATUSES = ("ok", "missing", "diverged", "failed", "collapsed")  # "missing": planned but not stored
MERGED = " / "  # between the values of a row that stands for several identical settings (merge_identical)
NONE_MEANS_OFF = ("prior", "ohem_ratio")  # None for these is a setting ("none"), not "does not apply"


def cell(value) -> str:
    """A table cell: None/NaN (a parameter that does not apply) as an en dash, numbers compactly."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    if mean != mean:  # NaN
        return "–"
    return f"{mean:.{digits}f}" if std != std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def run_label(fields: dict) -> str:
    """'focal alpha=0.25 gamma=2': a run's loss and the hyperparameters it uses (the others are None)."""
    return " ".join(
        [fields["loss"], *(f"{k}={cell(fields[k])}" for k in LOSS_PARAMS if cell(fields.get(k)) != "–")]
    )


def setting_cell(row: dict, col: str) -> str:
    """A setting's cell: 'none' where a parameter applies but is off (prior, OHEM ratio), '–' where it does not."""
    value = row.get(col)
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    loss = LOSSES.get(row.get("loss"))
    applies = col == "prior" or (loss is not None and col in loss.params)
    return "none" if missing and col in NONE_MEANS_OFF and applies else cell(value)


def setting_columns(df) -> list[str]:
    """Config columns that vary across the runs (the seed aside), and the data when runs on other files share a
    store: what tells one setting from another."""
    cols = [c for c in CONFIG_FIELDS if c in df and c not in SETTING_EXCLUDE]
    resampled = (  # each of several seeds drew its own data (data_seed = seed)
        "data_seed" in df
        and "seed" in df
        and df["seed"].nunique() > 1
        and bool((df["data_seed"] == df["seed"]).all())
    )
    if resampled:  # each seed drew its own data: the data seed and the data's fingerprint follow the seed
        cols.remove("data_seed")
    cols = [c for c in cols if df[c].map(cell).nunique(dropna=False) > 1]
    if not resampled and "data_fingerprint" in df and df["data_fingerprint"].nunique() > 1:
        cols.append("data_fingerprint")  # runs on other files share the store (missing runs have none)
    return cols or ["loss"]


RUN_MAXIMA = {
    "max_grad_norm": "largest grad norm",
    "rebound": "largest rebound",
}  # per setting, failed runs too


def summarize(df, metrics=TABLE_METRICS, keys: list[str] | None = None):
    """One row per setting: runs, a count per status, and mean/std of each metric over the ok runs only (and
    the largest of each of :data:`RUN_MAXIMA` over all its runs, where the runs record it)."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame()
    keys = keys or setting_columns(df)
    rows = []
    for _, group in df.groupby([df[k].map(cell) for k in keys], sort=False, dropna=False):
        first = group.iloc[0]
        ok = group[group["status"] == "ok"]
        row = {k: first[k] for k in keys}
        row["runs"] = len(group)
        row.update({s: int((group["status"] == s).sum()) for s in STATUSES})
        for m in metrics:  # a metric these runs do not record (older records, another task) is NaN
            row[f"{m}_mean"] = ok[m].mean() if len(ok) and m in ok else math.nan
            row[f"{m}_std"] = ok[m].std(ddof=1) if len(ok) > 1 and m in ok else math.nan
        for name in RUN_MAXIMA:  # over every run, failed ones too
            if name in group and group[name].notna().any():
                row[name] = group[name].max()
        rows.append(row)
    return pd.DataFrame(rows).sort_values(keys, na_position="first", kind="stable").reset_index(drop=True)


def still_rising(df) -> int:
    """How many ok runs chose their last evaluated step on validation (``best_step`` = ``steps_run``): their
    validation AP was still rising when training stopped."""
    if "best_step" not in df or "steps_run" not in df:
        return 0
    ok = df[(df["status"] == "ok") & df["best_step"].notna()]
    return int((ok["best_step"] >= ok["steps_run"]).sum())


def merge_identical(df, keys: list[str]):
    """Settings whose runs are identical seed by seed (the same seeds and statuses, the training loss and every
    other recorded metric equal to the last bit, at least one ok run) did not change what was trained, like an OHEM B that the 1:3 rule never
    fills: they are one result. Returns the runs with only the first of each such group kept, and
    ``{kept setting's cells: [each member's key values]}`` for the groups of two or more."""
    metrics = [m for m in METRICS if m in df]
    groups: dict[tuple, list] = {}
    for label, group in df.groupby([df[k].map(cell) for k in keys], sort=False, dropna=False):
        ok = group[group["status"] == "ok"]
        if ok.empty or "train_loss" not in ok or ok["train_loss"].isna().any():
            continue  # no training loss to show the training was the same
        runs = group.sort_values("seed")[["seed", "status", *metrics]].astype(str)
        groups.setdefault(tuple(runs.itertuples(index=False)), []).append((label, group))
    merged, dropped = {}, []
    for members in groups.values():
        if len(members) > 1:
            merged[members[0][0]] = [{k: g.iloc[0][k] for k in keys} for _, g in members]
            dropped += [i for _, g in members[1:] for i in g.index]
    return df.drop(index=dropped), merged
