"""``compare.md``: the verdicts in plain words first, then the finalists, the trials per family (equal
budgets), the tuning curves and the focal family's AP over (alpha, gamma)."""

from __future__ import annotations

from pathlib import Path

from flx.compare.result import completed, setting_text, startup_trials
from flx.experiment.metrics import METRICS

FINAL_METRICS = ("ap", "roc_auc", "balanced_accuracy", "ece")


def write_page(result) -> Path:
    """``compare.md`` and its figures in ``result.out``."""
    from tabulate import tabulate

    from flx.results.store import write_atomic
    from flx.results.summary import format_mean_std

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
        for m in FINAL_METRICS:
            cells.append(
                format_mean_std(ok[m].mean(), ok[m].std(ddof=1), METRICS[m].digits) if m in ok else "–"
            )
        rows.append(cells)
    rows += _baseline_rows(result.baselines, format_mean_std)
    header = ["family", "chosen on validation", "trials", "best val AP (seed 0)", "ok runs"]
    header += [METRICS[m].label for m in FINAL_METRICS]
    lines = [
        "# flx compare",
        "",
        *result.summary_lines(),
        "",
        f"Each family had {result.budget} trials (Optuna TPE, seeded) on the validation split at seed 0, its "
        f"learning rate searched with its own hyperparameters; a failed trial scores 0.{_pruning(result)} "
        "The best of each was "
        f"retrained on seeds 1-{result.seeds} and tested; the claims were written to spec.toml before those runs "
        "(a failed run scores AP 0), judged by the paired test-AP difference's 95% t interval (corrected for "
        "resampling where each seed draws its own split) beside the signed-rank p.",
        "",
        tabulate(rows, headers=header, tablefmt="github", disable_numparse=True),
        "",
        f"![tuning]({_tuning_figure(result).name})",
    ]
    for figure in (_focal_figure(result), *_test_figures(result)):
        if figure is not None:
            lines += ["", f"![{figure.stem}]({figure.name})"]
    path = result.out / "compare.md"
    write_atomic(path, lambda p: p.write_text("\n".join(lines) + "\n"))
    return path


def _baseline_rows(baselines: list[dict], format_mean_std) -> list[list[str]]:
    """The baselines as rows of the finalists' table: fitted on the same training split, one per seed."""
    import pandas as pd

    if not baselines:
        return []
    rows = []
    for name, group in pd.DataFrame(baselines).groupby("baseline", sort=False):
        cells = [f"baseline: {name}", "scikit-learn's defaults", "–", "–", f"{len(group)} of {len(group)}"]
        cells += [
            format_mean_std(group[m].mean(), group[m].std(ddof=1), METRICS[m].digits) for m in FINAL_METRICS
        ]
        rows.append(cells)
    return rows


def _pruning(result) -> str:
    if not result.rung:
        return ""
    return (
        f" Each trial after the first {startup_trials(result.budget)} (TPE's random start) first trained "
        f"{result.rung} of its {result.finals_steps} steps; Optuna's median pruner stopped there the ones whose "
        "validation AP trailed the median of the complete trials at that step, and a pruned trial is never chosen."
    )


def _tuning_figure(result) -> Path:
    """Each family's best-so-far validation AP (over its complete trials) against the number of trials, pruned
    ones marked: did the budget suffice?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for family in result.families:
        trials = result.trials[family]
        running, best = [], float("nan")
        for t in trials:
            if t["status"] != "pruned":
                best = t["val_ap"] if best != best else max(best, t["val_ap"])
            running.append(best)
        line = ax.plot(range(1, len(trials) + 1), running, marker="o", ms=3, label=family)
        cut = [(t["trial"], running[i]) for i, t in enumerate(trials) if t["status"] == "pruned"]
        if cut:
            ax.plot(*zip(*cut, strict=True), "x", color=line[0].get_color(), ms=6)
    ax.set_xlabel("trials (x: pruned)" if result.rung else "trials")
    ax.set_ylabel("best validation AP so far")
    ax.set_title("tuning: an equal budget per family")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, result.out / "tuning.png")


ALPHA_EDGES = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)  # the heat map's cells over focal's search space
GAMMA_EDGES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)


def heat_cells(trials: list[dict]):
    """(best validation AP, trial count) per (gamma, alpha) cell of :data:`GAMMA_EDGES` x :data:`ALPHA_EDGES`
    (NaN and 0 where no trial fell); a value on an inner edge belongs to the upper cell."""
    import numpy as np

    best = np.full((len(GAMMA_EDGES) - 1, len(ALPHA_EDGES) - 1), np.nan)
    count = np.zeros(best.shape, dtype=int)
    for t in trials:
        i = min(int(np.searchsorted(GAMMA_EDGES, t["fields"]["gamma"], side="right")) - 1, best.shape[0] - 1)
        j = min(int(np.searchsorted(ALPHA_EDGES, t["fields"]["alpha"], side="right")) - 1, best.shape[1] - 1)
        best[i, j] = np.fmax(best[i, j], t["val_ap"])
        count[i, j] += 1
    return best, count


def _focal_figure(result) -> Path | None:
    """The focal family's validation AP over (alpha, gamma): a heat map of the best complete trial in each cell
    (its count of complete trials written in it; blank: none there), with every trial as a dot (x: pruned)."""
    trials = result.trials.get("focal")
    if not trials:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a pruned trial's AP is the one at a quarter of its steps: it is a dot only, not a cell's value
    best, count = heat_cells(completed(trials))
    fig, ax = plt.subplots(figsize=(6, 4))
    mesh = ax.pcolormesh(ALPHA_EDGES, GAMMA_EDGES, best, cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label="best validation AP in the cell")
    for i in range(best.shape[0]):
        for j in range(best.shape[1]):
            if count[i, j]:
                x, y = (ALPHA_EDGES[j] + ALPHA_EDGES[j + 1]) / 2, (GAMMA_EDGES[i] + GAMMA_EDGES[i + 1]) / 2
                ax.text(x, y, f"{best[i, j]:.3f}\nn={count[i, j]}", ha="center", va="center", fontsize=7,
                        color="white")  # fmt: skip
    for status, marker in (("ok", "o"), ("pruned", "x")):
        shown = [t for t in trials if (t["status"] == "pruned") == (status == "pruned")]
        if shown:
            ax.scatter([t["fields"]["alpha"] for t in shown], [t["fields"]["gamma"] for t in shown], s=10, c="k",
                       marker=marker, label="pruned" if status == "pruned" else "complete")  # fmt: skip
    if any(t["status"] == "pruned" for t in trials):
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel("alpha")
    ax.set_ylabel("gamma")
    ax.set_title(f"focal loss: validation AP over (alpha, gamma), {len(trials)} trials")
    return _save(fig, result.out / "focal_alpha_gamma.png")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def _test_figures(result) -> list:
    """PR curves of the finalists and their reliability diagram, from the stored test scores of each one's
    first paired seed (nothing retrained)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from flx.report.figures import MissingArtefacts, pr_curves
    from flx.report.tables import ReportSpec
    from flx.results.artefacts import decode, stored_scores
    from flx.results.store import Store

    store = Store(result.out)
    try:
        pr = pr_curves(result.runs, result.out, ReportSpec(name="compare"), store)
    except MissingArtefacts:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for family in result.families:
        runs = result.runs[(result.runs["loss"] == family) & (result.runs["status"] == "ok")]
        if runs.empty:
            continue
        blob = store.artefacts(runs.sort_values("seed").iloc[0]["key"]).get("test")
        if blob is None:
            continue
        y, scores = stored_scores(decode(blob))
        bins = np.clip((np.asarray(scores) * 10).astype(int), 0, 9)
        filled = [b for b in range(10) if (bins == b).any()]
        ax.plot(
            [np.mean(np.asarray(scores)[bins == b]) for b in filled],
            [np.mean(np.asarray(y)[bins == b]) for b in filled],
            marker="o",
            label=family,
        )
    ax.set_xlabel("predicted probability (10 bins, test split; no prior correction)")
    ax.set_ylabel("observed share of positives")
    ax.set_title("reliability of the finalists (first paired seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [pr, _save(fig, result.out / "reliability.png")]
