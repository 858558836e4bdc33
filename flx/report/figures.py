"""Figures (matplotlib, PNG), each a function ``(runs, out, spec, store)`` of the runs' records (a DataFrame) and
their results store. Figures of trained models (PR curves, loss CDFs, example detections) read the runs' stored
artefacts (:mod:`flx.results.artefacts`): nothing is retrained and the data is not read again; a run without them
raises :class:`MissingArtefacts` and the report says which figure it left out."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from flx.experiment.registries import LR_DECAYS  # noqa: E402
from flx.report.ohem_rows import ohem_rows  # noqa: E402
from flx.report.png import save_png  # noqa: E402
from flx.report.seed_curves import seed_curves  # noqa: E402
from flx.results.summary import cell, run_label, setting_cell, setting_columns, summarize  # noqa: E402

PARAMS = ("gamma", "alpha", "epsilon", "ohem_k", "ratio", "anchor_scales")


def _finish(fig, ax, labels: tuple, path: Path) -> Path:
    """x label, y label and title, a small legend and a light grid; then saved."""
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(labels[2])
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def _swept(runs) -> str | None:
    """The hyperparameter that tells the most settings apart (the first of :data:`PARAMS` if tied): one that
    takes two values or more, or one value beside settings without it (a point against a reference line)."""
    swept = [p for p in PARAMS if p in setting_columns(runs) and runs[p].notna().any()]
    return max(swept, key=lambda p: runs[p].dropna().nunique()) if swept else None


def _setting_name(row, keys) -> str:
    """'loss=focal, alpha=0.25': the settings that apply to this row (a hyperparameter a loss lacks is left out)."""
    return ", ".join(f"{k}={cell(row[k])}" for k in keys if cell(row[k]) != "–")


def ap_vs_param(runs, out: Path, spec, store=None) -> Path | None:
    """Mean AP ± std against the hyperparameter swept over the most values, one line per value of the other
    settings; a setting without that hyperparameter (CE against focal's gamma) is a dashed level line; a
    setting whose runs all failed is an x at AP 0 marked "all n failed". None when no hyperparameter tells
    settings apart (a lone point says nothing)."""
    x = _swept(runs)
    if x is None:
        return None
    keys = setting_columns(runs)
    table = summarize(runs, keys=keys)
    others = [k for k in keys if k != x]
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in table[table[x].isna() & table["ap_mean"].notna()].to_dict("records"):
        ax.axhline(row["ap_mean"], ls="--", lw=1, color="grey", label=_setting_name(row, others) or "AP")
    table = table[table[x].notna()]
    groups = table.groupby([table[k].map(cell) for k in others], sort=False) if others else [("", table)]
    for _, g in groups:
        g = g.sort_values(x)
        name = _setting_name(g.iloc[0], others) or "AP"
        line = ax.errorbar(g[x], g["ap_mean"], yerr=g["ap_std"].fillna(0), marker="o", capsize=3, label=name)
        failed = g[g["ap_mean"].isna() & (g["runs"] > g["missing"])]  # every run failed: shown, not dropped
        for row in failed.to_dict("records"):
            ax.plot(row[x], 0, marker="x", ms=9, mew=2, color=line[0].get_color())
            ax.annotate(f"all {row['runs'] - row['missing']} failed", (row[x], 0), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=7)  # fmt: skip
    ax.set_xlabel(x)
    ax.set_ylabel("test AP (mean ± std over seeds)")
    if x in ("alpha",) and table[x].max() > 0.98:
        ax.set_xscale("logit")
    ax.set_title(f"{spec.name}: AP against {x}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_png(fig, out / f"ap_vs_{x}.png")


def loss_vs_pt(runs, out: Path, spec, store=None) -> Path:
    """The paper's Figure 1: FL(p_t) = -(1 - p_t)^gamma log p_t against p_t for several gamma."""
    import numpy as np

    p = np.linspace(1e-3, 1, 500)
    fig, ax = plt.subplots(figsize=(6, 4))
    for gamma in (0, 0.5, 1, 2, 5):
        ax.plot(p, -((1 - p) ** gamma) * np.log(p), label=f"γ = {gamma}" + (" (CE)" if gamma == 0 else ""))
    ax.set_xlabel("probability of ground-truth class p_t")
    ax.set_ylabel("loss")
    ax.set_ylim(0, 5)
    ax.axvspan(0.6, 1, color="grey", alpha=0.1, label="well-classified")
    ax.legend()
    ax.set_title("Focal loss against p_t (Lin et al., Figure 1)")
    return save_png(fig, out / "loss_vs_pt.png")


class MissingArtefacts(Exception):
    """A figure needs a run's stored artefacts (:mod:`flx.results.artefacts`) and the results folder has none for it."""


def _stored(store, row: dict, name: str) -> dict:
    """The ``name`` artefact of the run ``row``, decoded; MissingArtefacts when it is not stored."""
    from flx.results.artefacts import decode

    blob = store.artefacts(row["key"]).get(name) if store is not None else None
    if blob is None:
        where = (
            "this results folder has runs.csv but no runs.sqlite"
            if store is None
            else "a run stored before flx kept artefacts"
        )
        raise MissingArtefacts(
            f"run {row['key']} has no stored {name!r} artefact ({where}); rerun it into a new --out"
        )
    return decode(blob)


def _best_rows(runs, n: int) -> list[dict]:
    """The records (first seed) of the n settings with the highest mean AP."""
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return []
    keys = setting_columns(runs)
    table = summarize(ok, keys=keys).sort_values("ap_mean", ascending=False).head(n)
    rows = []
    for row in table.to_dict("records"):
        match = ok
        for k in keys:
            match = match[match[k].map(cell) == cell(row[k])]
        rows.append(match.sort_values("seed").iloc[0].to_dict())
    return rows


def _label(row: dict) -> str:
    ratio = f" ratio={cell(row.get('ratio'))}" if row.get("dataset") != "synthetic" else ""
    return run_label(row) + ratio


def pr_curves(runs, out: Path, spec, store=None) -> Path | None:
    """Precision-recall curves of the three best settings (their first seeds), from the stored test scores."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from flx.results.artefacts import stored_scores

    rows = _best_rows(runs, 3)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        y, scores = stored_scores(_stored(store, row, "test"))
        precision, recall, _ = precision_recall_curve(y, scores)
        ax.plot(recall, precision, label=f"{_label(row)} (AP {average_precision_score(y, scores):.3f})")
    title = f"{spec.name}: PR curves of the best settings (seed {rows[0]['seed']})"
    return _finish(fig, ax, ("recall", "precision", title), out / "pr_curves.png")


def loss_cdf(runs, out: Path, spec, store=None) -> Path | None:
    """The paper's Figure 4 for classifiers: cumulative distribution of normalized focal loss (alpha off, the
    model's own gamma) over positive and negative test examples, for the stored models trained with several
    gamma (the best setting at the alpha closest to the spec's shown alpha, 0.25 by default, first seed), from
    their stored test scores."""
    import numpy as np
    import torch

    from flx.losses.functional import sigmoid_focal_loss
    from flx.results.artefacts import stored_scores

    ok = runs[(runs["status"] == "ok") & (runs["loss"] == "focal")]
    if ok.empty:
        return None
    near = _shown(spec).get("alpha", 0.25)
    alpha = min(ok["alpha"].dropna().unique(), key=lambda a: abs(a - near))
    base = _best_rows(ok[ok["alpha"] == alpha], 1)[0]
    others = [k for k in setting_columns(ok) if k != "gamma"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for gamma in (0.0, 0.5, 1.0, 2.0):
        match = ok[ok["gamma"] == gamma]
        for k in others:
            match = match[match[k].map(cell) == cell(base[k])]
        if match.empty:
            continue
        row = match.sort_values("seed").iloc[0].to_dict()
        stored = _stored(store, row, "test")
        y, _ = stored_scores(stored)
        logits = torch.from_numpy(stored["logits"].astype(np.float64))
        loss = sigmoid_focal_loss(logits, torch.from_numpy(y).double(), alpha=-1, gamma=gamma).numpy()
        for ax, cls, name in ((axes[0], 1, "positive"), (axes[1], 0, "negative")):
            values = np.sort(loss[y == cls])
            cum = np.cumsum(values) / max(values.sum(), 1e-300)
            ax.plot(np.linspace(0, 1, len(values)), cum, label=f"γ = {gamma:g}")
            ax.set_title(f"{name} examples")
    for ax in axes:
        ax.set_xlabel("fraction of examples (sorted by loss)")
        ax.set_ylabel("cumulative normalized loss")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"{spec.name}: loss CDF of trained models (α = {alpha:g}; Lin et al., Figure 4)")
    return save_png(fig, out / "loss_cdf.png")


# ------------------------------------------------------------------------------------------------------------
# Detection (shapes)
# ------------------------------------------------------------------------------------------------------------
def val_curve(row) -> list | None:
    import json

    text = row.get("curve")
    return json.loads(text) if isinstance(text, str) and text else None


def _decays(row) -> bool:
    """Whether the run's lr decays (detection: at :data:`LR_DECAYS` of its steps); classification: constant."""
    from flx.experiment.registries import DATASETS

    spec = DATASETS.get(row.get("dataset"))
    return spec is not None and spec.task == "detection"


def plateau_steps(row, share: float = 0.95) -> tuple:
    """(the first evaluated step whose validation AP reaches ``share`` of the best before the first lr decay
    at 2/3 of training, that best), from a run's stored curve; (None, None) without one."""
    curve = val_curve(row)
    if not curve:
        return None, None
    steps = row.get("steps")  # detection: the lr decays at 2/3 of the steps; classification: a constant lr
    horizon = steps * LR_DECAYS[0] if _decays(row) else math.inf
    before = [(c[0], c[1]) for c in curve if c[0] <= horizon] or [(c[0], c[1]) for c in curve]
    best = max(ap for _, ap in before)
    return next(s for s, ap in before if ap >= share * best), best


def learning_curves(runs, out: Path, spec, store=None) -> Path | None:
    """Validation AP against training steps (or epochs): one line per run with a stored curve, or with several
    seeds per setting the mean over its ok runs, one panel per training ratio."""
    rows = [r for r in runs.to_dict("records") if val_curve(r)]
    if not rows:
        return None
    if "seed" in runs and runs["seed"].nunique() > 1:
        return _mean_curves(runs, rows, out, spec)
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        curve = val_curve(row)
        label = run_label(row) + ("" if row["status"] == "ok" else f" ({row['status']})")
        line = ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", ms=3, label=label)
        step, _ = plateau_steps(row)
        ax.axvline(step, color=line[0].get_color(), ls=":", lw=1)
    decay = rows[0].get("steps")
    if _decays(rows[0]):  # detection: steps, lr decays
        for frac in LR_DECAYS:
            ax.axvline(decay * frac, color="grey", lw=0.8)
        ax.set_xlabel("training step (8 images each); grey: lr / 10; dotted: 95% of the pre-decay best")
        ax.set_ylabel("validation COCO AP")
    else:
        ax.set_xlabel("epoch; dotted: 95% of the best")
        ax.set_ylabel("validation AP")
    ax.set_title(f"{spec.name}: learning curves")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_png(fig, out / "learning_curves.png")


def _mean_curves(runs, rows, out: Path, spec) -> Path:
    import numpy as np
    import pandas as pd

    ok = pd.DataFrame([r for r in rows if r["status"] == "ok"])
    columns = [c for c in setting_columns(runs) if c not in ("ratio",) and c in ok]
    panels = sorted(ok["ratio"].dropna().unique()) if "ratio" in ok and ok["ratio"].notna().any() else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False, sharey=True)
    for ax, ratio in zip(axes[0], panels, strict=True):
        at = ok if ratio is None else ok[ok["ratio"] == ratio]
        for _, group in at.groupby([at[c].map(cell) for c in columns], sort=True):
            curves = [val_curve(r) for r in group.to_dict("records")]
            length = min(len(c) for c in curves)
            x = [c[0] for c in curves[0][:length]]
            y = np.mean([[c[1] for c in curve[:length]] for curve in curves], axis=0)
            first = group.iloc[0].to_dict()
            label = " ".join(f"{setting_cell(first, c)}" for c in columns)
            ax.plot(x, y, lw=1.2, label=f"{label} (n={len(group)})")
        ax.set_title(f"1:{ratio:g}" if ratio is not None else spec.name, fontsize=9)
        ax.set_xlabel("training step" if "steps" in ok and ok["steps"].notna().any() else "epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation AP (mean over seeds)")
    axes[0][-1].legend(fontsize=6, title=" ".join(columns), title_fontsize=6)
    fig.suptitle(f"{spec.name}: learning curves", fontsize=10)
    return save_png(fig, out / "learning_curves.png")


def _best_alpha(runs) -> float | None:
    """The alpha of CE (focal at gamma 0) with the best mean validation AP, the one a table shows."""
    ce = runs[(runs["status"] == "ok") & (runs.get("gamma") == 0.0)] if "gamma" in runs else runs[:0]
    if ce.empty or "val_ap" not in ce or "alpha" not in ce:
        return None
    return float(ce.groupby("alpha")["val_ap"].mean().idxmax())


def _first_run(runs, **where):
    """The first seed's run of the setting ``where`` names: an ok one if there is one, else any stored one."""
    match = runs[runs["status"] != "missing"]
    for k, v in where.items():
        match = match[match[k] == v] if k in match else match.iloc[:0]
    if match.empty:
        return None
    return (
        match.sort_values(["status", "seed"], key=lambda c: c != "ok" if c.name == "status" else c)
        .iloc[0]
        .to_dict()
    )


def detection_loss_cdf(runs, out: Path, spec, store=None) -> Path | None:
    """The paper's Figure 4: one converged FL model (the spec's shown setting, by default gamma 2, alpha 0.25;
    first seed), the loss of its test anchors under FL
    with several gamma; the share of the total loss carried by the hardest fraction of positive and of negative
    anchors. From the run's stored histogram of anchor logits (:mod:`flx.results.artefacts`: each anchor's loss to the
    bin's width). The x axis is logarithmic so the negatives' curves, all crowded at the hardest end, separate."""
    import numpy as np
    import torch

    from flx.experiment.registries import get_loss
    from flx.results.artefacts import histogram_centres

    row = _first_run(runs, **_shown(spec))
    if row is None:
        return None
    stored = _stored(store, row, "anchors")
    centres = torch.from_numpy(histogram_centres(stored))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for gamma in (0.0, 0.5, 1.0, 2.0, 5.0):
        for ax, cls, name in ((axes[0], 1, "positive"), (axes[1], 0, "negative")):
            counts = stored["counts"][cls].astype(np.float64)
            y = torch.full_like(centres, float(cls))
            loss = get_loss("focal")(centres, y, reduction="none", alpha=-1.0, gamma=gamma).numpy()
            order = np.argsort(-loss, kind="stable")  # hardest first
            counts, loss = counts[order], loss[order]
            keep = counts > 0
            share = np.cumsum(loss * counts)[keep] / max(float((loss * counts).sum()), 1e-300)
            frac = np.cumsum(counts)[keep] / counts.sum()
            ax.plot(frac, share, label=f"γ = {gamma:g}")
            ax.set_title(f"{name} anchors ({int(counts.sum()):,})")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("fraction of anchors, hardest first (log scale)")
        ax.set_ylabel("share of the total loss")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle("Figure 4 on shapes: an FL (γ = 2) model's test anchors under FL with several γ (α off)")
    return save_png(fig, out / "loss_cdf.png")


def examples(runs, out: Path, spec, store=None) -> Path | None:
    """Test images (in grey, so no box colour is one the shapes use) with their ground truth (cyan, dashed) and
    the detections scoring >= 0.3 (magenta, with their scores) of CE (gamma 0 at its best alpha on validation) and of
    the spec's shown setting (by default FL, gamma 2, alpha 0.25), from their stored test detections (first
    seed)."""
    shown = _shown(spec)
    candidates = {
        "ground truth": None,
        "CE (γ = 0)": _first_run(runs, loss="focal", gamma=0.0, alpha=_best_alpha(runs))
        or _first_run(runs, loss="focal", gamma=0.0)
        or _first_run(runs, loss="balanced_ce"),
        _shown_label(shown): _first_run(runs, **shown),
    }
    stored = {name: _stored(store, row, "detections") for name, row in candidates.items() if row is not None}
    if not stored:
        return None
    first = next(iter(stored.values()))
    images = first["images"]
    n = len(images)
    fig, axes = plt.subplots(len(candidates), n, figsize=(2 * n, 2.1 * len(candidates)), squeeze=False)
    for r, name in enumerate(candidates):
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(images[i].transpose(1, 2, 0).mean(-1), cmap="gray", vmin=0, vmax=255)
            for b in first["truth_boxes"][first["truth_image"] == i].tolist():
                ax.add_patch(
                    plt.Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, ec="cyan", lw=1.2, ls="--")
                )
            if name in stored:
                d = stored[name]
                at = (d["image"] == i) & (d["scores"] >= 0.3)
                for b, score in zip(d["boxes"][at].tolist(), d["scores"][at].tolist(), strict=True):
                    ax.add_patch(
                        plt.Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, ec="magenta", lw=1)
                    )
                    ax.text(b[0], b[1] - 0.5, f"{score:.2f}", color="magenta", fontsize=5, va="bottom")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name if name in stored or r == 0 else f"{name}: no run", fontsize=8)
    fig.suptitle(
        "shapes test images (grey): rings among disks and boxes; cyan dashed: ground truth; magenta: "
        "detections ≥ 0.3 with scores"
    )
    return save_png(fig, out / "examples.png")


def regime_map(runs, out: Path, spec, store=None) -> Path | None:
    """The regime map: each canvas's claims (named "N px: ...") as paired test-AP differences, mean and 95%
    interval, against the object : background anchor ratio measured on that canvas, one line per claim."""
    from flx.report.claims import judge

    series: dict[str, list] = {}
    for claim in spec.claims:
        size = claim["a"].get("image_size")
        at = runs[(runs["status"] != "missing") & (runs.get("image_size") == size)] if size else runs[:0]
        if at.empty or "imbalance" not in at or at["imbalance"].isna().all():
            continue
        v = judge(claim, runs)
        name = claim["name"].split(": ", 1)[-1]
        series.setdefault(name, []).append((at["imbalance"].median(), v.mean, v.low, v.high, size))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (name, points) in enumerate(series.items()):
        points.sort()
        xs = [p[0] * (1 + 0.04 * (i - (len(series) - 1) / 2)) for p in points]  # side by side
        means = [p[1] for p in points]
        low = [p[1] - p[2] if p[2] == p[2] else 0 for p in points]
        high = [p[3] - p[1] if p[3] == p[3] else 0 for p in points]
        ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=3, label=name)
    ticks = sorted({(p[0], p[4]) for points in series.values() for p in points})
    ax.set_xscale("log")
    ax.set_xticks([t[0] for t in ticks], [f"{t[1]:.0f} px\n1:{t[0]:,.0f}" for t in ticks])
    ax.minorticks_off()
    ax.axhline(0, color="grey", lw=0.8)
    labels = (
        "canvas and object : background anchors (measured)",
        "paired test AP difference\n(mean, 95% t interval over seeds)",
        f"{spec.name}: FL's advantage against the share of easy negatives",
    )
    return _finish(fig, ax, labels, out / "regime_map.png")


SHOWN = {"loss": "focal", "gamma": 2.0, "alpha": 0.25}  # the paper's FL: the default [report] shown


def _shown(spec) -> dict:
    """The setting whose one model the single-model figures show: the spec's ``[report] shown``, else FL."""
    return dict(getattr(spec, "shown", None) or SHOWN)


def _shown_label(shown: dict) -> str:
    if shown.get("loss") == "focal" and "gamma" in shown:
        return f"FL (γ = {shown['gamma']:g})"
    return " ".join(f"{k}={v}" for k, v in shown.items())


def chosen_figures(runs, store=None) -> list[str]:
    """The figures of a results folder without a spec (a sweep from flags), chosen from what varies in its runs:
    AP against a hyperparameter that tells settings apart (:func:`_swept`); learning curves when runs stored
    them; the PR curves of the best settings when there are several (classification); for detection, Figure 4
    and example detections when an FL run (gamma 2) is there. Figures of stored artefacts need the store."""
    from flx.experiment.registries import DATASETS

    ok = runs[runs["status"] == "ok"] if "status" in runs else runs.iloc[:0]
    detection = any(getattr(DATASETS.get(d), "task", "") == "detection" for d in runs.get("dataset", []))
    chosen = ["ap_vs_param"] if _swept(runs) else []
    if "curve" in runs and any(val_curve(r) for r in ok.to_dict("records")):
        chosen.append("learning_curves")
    if store is not None and not detection and len(summarize(ok, keys=setting_columns(runs))) > 1:
        chosen.append("pr_curves")
    if (
        store is not None
        and detection
        and _first_run(ok, **{k: SHOWN[k] for k in ("loss", "gamma")}) is not None
    ):
        chosen += ["detection_loss_cdf", "examples"]
    return chosen


FIGURES = {
    "ap_vs_param": ap_vs_param,
    "loss_vs_pt": loss_vs_pt,
    "pr_curves": pr_curves,
    "loss_cdf": loss_cdf,
    "learning_curves": learning_curves,
    "seed_curves": seed_curves,
    "detection_loss_cdf": detection_loss_cdf,
    "examples": examples,
    "regime_map": regime_map,
    "ohem_rows": ohem_rows,
}
