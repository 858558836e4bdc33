"""``compare.md``: the verdicts in plain words first, then the finalists, the trials per family (equal
budgets), the tuning curves and the focal family's AP over (alpha, gamma)."""

from __future__ import annotations

from pathlib import Path

from flx.compare.figures import finalist_figures, focal_figure, tuning_figure
from flx.compare.result import completed, setting_text, startup_trials
from flx.compare.study import STUDY_FILE
from flx.experiment.metrics import METRICS

FINAL_METRICS = ("ap", "ap50", "anchor_ap", "roc_auc", "balanced_accuracy", "ece")  # those the records hold


def write_page(result) -> Path:
    """``compare.md`` and its figures in ``result.out``."""
    from tabulate import tabulate

    from flx.results.store import write_atomic
    from flx.results.summary import format_mean_std

    metrics = [m for m in FINAL_METRICS if m in result.runs and result.runs[m].notna().any()]
    rows = []
    for family in result.families:
        runs = result.runs[result.runs["loss"] == family]
        ok = runs[runs["status"] == "ok"]
        trials = result.trials[family]
        best = max(t["val_ap"] for t in completed(trials))
        pruned = len(trials) - len(completed(trials))
        count = f"{len(trials)} ({pruned} pruned)" if result.rung else str(len(trials))
        cells = [family, setting_text(result.finalists[family]), count, f"{best:.3f}"]
        cells += [f"{len(ok)} of {len(runs)}"]
        for m in metrics:
            cells.append(
                format_mean_std(ok[m].mean(), ok[m].std(ddof=1), METRICS[m].digits) if m in ok else "–"
            )
        rows.append(cells)
    rows += _baseline_rows(result.baselines, metrics, format_mean_std)
    header = ["family", "chosen on validation", "trials", "best val AP (seed 0)", "ok runs"]
    header += [METRICS[m].label for m in metrics]
    lines = [
        "# flx compare",
        "",
        *result.summary_lines(),
        "",
        f"Each family had {result.budget} trials (Optuna TPE, seeded{_side_by_side(result)}) on the validation "
        "split at seed 0, "
        f"{_lr_text(result)}; a failed trial scores 0.{_queued(result)}{_pruning(result)} "
        f"The studies are in {STUDY_FILE} (`optuna-dashboard sqlite:///{STUDY_FILE}` here); a larger --budget "
        "later trains only the new trials. The best of each was "
        f"retrained on seeds 1-{result.seeds} and tested; the claims were written to spec.toml before those runs "
        "(a failed run scores AP 0), judged by the paired test-AP difference's 95% t interval (corrected for "
        "resampling where each seed draws its own split) beside the signed-rank p.",
        "",
        tabulate(rows, headers=header, tablefmt="github", disable_numparse=True),
        "",
        f"![tuning]({tuning_figure(result).name})",
    ]
    for figure in (focal_figure(result), *finalist_figures(result)):
        if figure is not None:
            lines += ["", f"![{figure.stem}]({figure.name})"]
    path = result.out / "compare.md"
    write_atomic(path, lambda p: p.write_text("\n".join(lines) + "\n"))
    return path


def _baseline_rows(baselines: list[dict], metrics: list[str], format_mean_std) -> list[list[str]]:
    """The baselines as rows of the finalists' table: fitted on the same training split, one per seed."""
    import pandas as pd

    if not baselines:
        return []
    rows = []
    for name, group in pd.DataFrame(baselines).groupby("baseline", sort=False):
        cells = [f"baseline: {name}", "scikit-learn's defaults", "–", "–", f"{len(group)} of {len(group)}"]
        cells += [
            format_mean_std(group[m].mean(), group[m].std(ddof=1), METRICS[m].digits) if m in group else "–"
            for m in metrics
        ]
        rows.append(cells)
    return rows


def _lr_text(result) -> str:
    if result.search_lr:
        return "its learning rate searched with its own hyperparameters"
    return (
        "over its own hyperparameters; the learning rate is the data set's for every family (as in the "
        "focal-loss paper, whose Table 1 rows share one schedule)"
    )


def _queued(result) -> str:
    """The settings each study tried first, in words."""
    parts = [
        f"{family}: {'; '.join(setting_text(f) for f in queued[: result.budget])}"
        for family, queued in result.queued.items()
        if queued and family in result.families
    ]
    if not parts:
        return ""
    lr = (
        f" (at the data set's learning rate, {result.base_lr:g})"
        if result.search_lr and result.base_lr
        else ""
    )
    return f" Tried first, within the budget{lr}: {', and '.join(parts)}."


def _pruning(result) -> str:
    if not result.rung:
        return ""
    return (
        f" Each trial after the first {startup_trials(result.budget)} (TPE's random start) first trained "
        f"{result.rung} of its {result.finals_steps} steps; Optuna's median pruner stopped there the ones whose "
        "validation AP trailed the median of the complete trials at that step, and a pruned trial is never chosen."
    )


def _side_by_side(result) -> str:
    if result.trial_workers <= 1:
        return ""
    return (
        f"; {result.trial_workers} trained side by side, TPE's constant liar standing in for the ones still "
        "training"
    )
