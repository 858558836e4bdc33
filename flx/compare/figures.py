"""The figures of ``compare.md``, each from the comparison's trials and stored runs (nothing retrained):

- ``tuning.png``: each family's best-so-far validation AP over its trials, with the seed noise beside it (the
  spread of its finalist's validation AP over the paired seeds): is a gain from tuning larger than a reseed?
- ``focal_alpha_gamma.png``: focal loss's validation AP over (alpha, gamma): a heat map of the cells that hold two
  or more complete trials, every trial a dot; with no such cell, a scatter. The colour scale stays within [0, 1].
- ``pr_curves.png``: every family's finalist (its first paired seed) on the test split.
- ``reliability.png``: the finalists' reliability diagrams, each point's example count written beside it.
"""

from __future__ import annotations

from pathlib import Path

from flx.compare.result import completed

ALPHA_EDGES = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)  # the heat map's cells over focal's search space
GAMMA_EDGES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)
MIN_CELL_TRIALS = 2  # a heat-map cell with fewer complete trials is left blank (its dot stays)
BINS = 10  # the reliability diagram's equal-width probability bins


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` to ``path`` as every flx figure is (:func:`flx.report.png.save_png`) and close it."""
    from flx.report.png import save_png

    return save_png(fig, path)


def seed_noise(result, family: str) -> float:
    """The sample std of the family's finalist's validation AP over its paired seeds (NaN if fewer than 2)."""
    runs = result.runs
    if runs is None or "val_ap" not in runs:
        return float("nan")
    ok = runs[(runs["loss"] == family) & (runs["status"] == "ok")]["val_ap"].dropna()
    return float(ok.std(ddof=1)) if len(ok) >= 2 else float("nan")


def tuning_figure(result) -> Path:
    """Each family's best-so-far validation AP (over its complete trials) against the number of trials, pruned
    ones marked, and a band of +- one seed std (:func:`seed_noise`) around its final best."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for family in result.families:
        trials = result.trials[family]
        running, best = [], float("nan")
        for t in trials:
            if t["status"] != "pruned":
                best = t["val_ap"] if best != best else max(best, t["val_ap"])
            running.append(best)
        x = range(1, len(trials) + 1)
        line = ax.plot(x, running, marker="o", ms=3, label=family)
        color = line[0].get_color()
        noise = seed_noise(result, family)
        if noise == noise:
            ax.fill_between([1, len(trials)], best - noise, best + noise, color=color, alpha=0.15, lw=0)
        cut = [(t["trial"], running[i]) for i, t in enumerate(trials) if t["status"] == "pruned"]
        if cut:
            ax.plot(*zip(*cut, strict=True), "x", color=color, ms=6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trials (x: pruned)" if result.rung else "trials")
    ax.set_ylabel("best validation AP so far")
    ax.set_title(
        "tuning: an equal budget per family\n(band: ± one std of the finalist over the paired seeds)"
    )
    low, high = ax.get_ylim()
    if high - low < 0.02:  # never zoom past the scale of an AP difference worth reading
        middle = (low + high) / 2
        ax.set_ylim(middle - 0.01, middle + 0.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, result.out / "tuning.png")


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


def shown_cells(best, count):
    """The heat map's cells: the best AP where a cell holds :data:`MIN_CELL_TRIALS` or more trials, else NaN."""
    import numpy as np

    return np.where(count >= MIN_CELL_TRIALS, best, np.nan)


def colour_range(values) -> tuple[float, float]:
    """The colour scale of validation APs: their range, clipped to [0, 1] (never a colour past AP 1)."""
    values = [v for v in values if v == v]
    if not values:
        return 0.0, 1.0
    low, high = max(0.0, min(values)), min(1.0, max(values))
    return (low, high) if high > low else (max(0.0, low - 0.01), min(1.0, high + 0.01))


def focal_figure(result) -> Path | None:
    """The focal family's validation AP over (alpha, gamma): the cells holding :data:`MIN_CELL_TRIALS` or more
    complete trials as a heat map (their best AP and count written in), every trial a dot (x: pruned); with no
    such cell, a scatter coloured by each trial's AP."""
    import numpy as np

    trials = result.trials.get("focal")
    if not trials:
        return None
    plt = pyplot()
    best, count = heat_cells(completed(trials))  # a pruned trial's AP is partial: a dot only
    shown = shown_cells(best, count)
    vmin, vmax = colour_range([t["val_ap"] for t in completed(trials)])
    fig, ax = plt.subplots(figsize=(6, 4))
    if np.isfinite(shown).any():
        mesh = ax.pcolormesh(
            ALPHA_EDGES, GAMMA_EDGES, shown, cmap="viridis", shading="flat", vmin=vmin, vmax=vmax
        )
        fig.colorbar(
            mesh, ax=ax, label=f"best validation AP in the cell (cells of {MIN_CELL_TRIALS}+ trials)"
        )
        for i, j in zip(*np.nonzero(count >= MIN_CELL_TRIALS), strict=True):
            x, y = (ALPHA_EDGES[j] + ALPHA_EDGES[j + 1]) / 2, (GAMMA_EDGES[i] + GAMMA_EDGES[i + 1]) / 2
            ax.text(
                x,
                y,
                f"{best[i, j]:.3f}\nn={count[i, j]}",
                ha="center",
                va="center",
                fontsize=7,
                color="white",
            )
        colours = {"c": "k"}
    else:
        colours = {
            "c": [t["val_ap"] for t in completed(trials)],
            "cmap": "viridis",
            "vmin": vmin,
            "vmax": vmax,
        }
    done = completed(trials)
    dots = ax.scatter([t["fields"]["alpha"] for t in done], [t["fields"]["gamma"] for t in done], s=18 if
                      "cmap" in colours else 10, marker="o", label="complete", **colours)  # fmt: skip
    if "cmap" in colours:
        fig.colorbar(dots, ax=ax, label="validation AP of the trial")
    pruned = [t for t in trials if t["status"] == "pruned"]
    if pruned:
        ax.scatter([t["fields"]["alpha"] for t in pruned], [t["fields"]["gamma"] for t in pruned], s=10, c="k",
                   marker="x", label="pruned")  # fmt: skip
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xlim(ALPHA_EDGES[0], ALPHA_EDGES[-1])
    ax.set_ylim(GAMMA_EDGES[0], GAMMA_EDGES[-1])
    ax.set_xlabel("alpha")
    ax.set_ylabel("gamma")
    ax.set_title(f"focal loss: validation AP over (alpha, gamma), {len(trials)} trials")
    return save_figure(fig, result.out / "focal_alpha_gamma.png")


def _first_seed_scores(result, store) -> dict:
    """family -> (y, scores) of its finalist's first paired seed's stored test scores (families without: left out)."""
    from flx.results.artefacts import decode, stored_scores

    out = {}
    for family in result.families:
        runs = result.runs[(result.runs["loss"] == family) & (result.runs["status"] == "ok")]
        if runs.empty:
            continue
        blob = store.artefacts(runs.sort_values("seed").iloc[0]["key"]).get("test")
        if blob is not None:
            out[family] = stored_scores(decode(blob))
    return out


def finalist_figures(result) -> list[Path]:
    """PR curves of every family's finalist and their reliability diagram (none for a detector's runs, whose test
    scores are detections)."""
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from flx.results.store import Store

    scores = _first_seed_scores(result, Store(result.out))
    if not scores:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for family, (y, s) in scores.items():
        precision, recall, _ = precision_recall_curve(y, s)
        ax.plot(recall, precision, label=f"{family} (AP {average_precision_score(y, s):.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("PR curves of every family's finalist (first paired seed, test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    pr = save_figure(fig, result.out / "pr_curves.png")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for family, (y, s) in scores.items():
        bins = np.clip((np.asarray(s) * BINS).astype(int), 0, BINS - 1)
        filled = [b for b in range(BINS) if (bins == b).any()]
        x = [float(np.mean(s[bins == b])) for b in filled]
        observed = [float(np.mean(y[bins == b])) for b in filled]
        line = ax.plot(x, observed, marker="o", label=family)
        for xi, yi, b in zip(x, observed, filled, strict=True):
            ax.annotate(f"{int((bins == b).sum())}", (xi, yi), textcoords="offset points", xytext=(3, 3),
                        fontsize=6, color=line[0].get_color())  # fmt: skip
    ax.set_xlabel(f"predicted probability ({BINS} bins, test split; no prior correction)")
    ax.set_ylabel("observed share of positives")
    ax.set_title("reliability of the finalists (first paired seed; numbers: examples in the bin)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [pr, save_figure(fig, result.out / "reliability.png")]
