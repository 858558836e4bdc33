"""Tables from stored runs: mean and sample standard deviation (ddof = 1) over seeds, per setting."""

from __future__ import annotations

from flx.train import CONFIG_FIELDS

SETTING_EXCLUDE = ("seed",)


def setting_columns(df) -> list[str]:
    """Config columns that vary across the runs (the seed aside): what tells one setting from another."""
    cols = [c for c in CONFIG_FIELDS if c in df and c not in SETTING_EXCLUDE]
    return [c for c in cols if df[c].astype(str).nunique(dropna=False) > 1] or ["loss"]


def summarize(df, metrics=("ap", "roc_auc", "best_f1", "ece")):
    """One row per setting: n runs, n diverged/failed, and mean/std of each metric over the ok runs."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame()
    keys = setting_columns(df)
    rows = []
    for _, group in df.groupby([df[k].astype(str) for k in keys], sort=False, dropna=False):
        first = group.iloc[0]
        ok = group[group["status"] == "ok"]
        row = {k: first[k] for k in keys}
        row.update(
            n=len(group),
            diverged=int((group["status"] == "diverged").sum()),
            failed=int((group["status"] == "failed").sum()),
        )
        for m in metrics:
            row[f"{m}_mean"] = ok[m].mean() if len(ok) else float("nan")
            row[f"{m}_std"] = ok[m].std(ddof=1) if len(ok) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    if mean != mean:  # NaN
        return "–"
    return f"{mean:.{digits}f}" if std != std else f"{mean:.{digits}f} ± {std:.{digits}f}"
