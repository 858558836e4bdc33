"""Figures (matplotlib, PNG). Figures from trained models retrain the chosen configs (seed 0): a run is
deterministic, so this gives the stored run's model back without storing every example's score."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from flx.config import FIGURES as FIGURE_NAMES  # noqa: E402
from flx.config import LR_DECAYS  # noqa: E402
from flx.summary import cell, run_label, setting_cell, setting_columns, summarize  # noqa: E402

PARAMS = ("gamma", "alpha", "epsilon", "ohem_k", "ratio", "anchor_scales")
PNG_META = {"Software": None}  # no version strings: the same data gives the same file


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)
    return path


def ap_vs_param(runs, out: Path, spec) -> Path | None:
    """Mean AP ± std against the first swept hyperparameter, one line per value of the other settings."""

    keys = setting_columns(runs)
    swept = [p for p in PARAMS if p in keys]
    if not swept:
        return None
    x = max(swept, key=lambda p: runs[p].dropna().nunique())  # the most-swept parameter (first if tied)
    table = summarize(runs, keys=keys)
    table = table[table[x].notna()]
    others = [k for k in keys if k != x]
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = table.groupby([table[k].map(cell) for k in others], sort=False) if others else [("", table)]
    for _, g in groups:
        g = g.sort_values(x)
        name = ", ".join(f"{k}={cell(g.iloc[0][k])}" for k in others) or "AP"
        ax.errorbar(g[x], g["ap_mean"], yerr=g["ap_std"].fillna(0), marker="o", capsize=3, label=name)
    ax.set_xlabel(x)
    ax.set_ylabel("test AP (mean ± std over seeds)")
    if x in ("alpha",) and table[x].max() > 0.98:
        ax.set_xscale("logit")
    ax.set_title(f"{spec.name}: AP against {x}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out / f"ap_vs_{x}.png")


def loss_vs_pt(runs, out: Path, spec) -> Path:
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
    return _save(fig, out / "loss_vs_pt.png")


def _best_configs(runs, n: int):
    """Configs (seed 0) of the n settings with the highest mean AP."""
    from flx.config import config_from_record

    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return []
    keys = setting_columns(runs)
    table = summarize(ok, keys=keys).sort_values("ap_mean", ascending=False).head(n)
    configs = []
    for row in table.to_dict("records"):
        match = ok
        for k in keys:
            match = match[match[k].map(cell) == cell(row[k])]
        first = match.sort_values("seed").iloc[0].to_dict()
        configs.append(config_from_record(first).normalized())
    return configs


def _label(config) -> str:

    ratio = f" ratio={cell(config.ratio)}" if config.dataset != "synthetic" else ""
    return run_label(config.to_dict()) + ratio


def _scores(config, data_dir=None):
    import torch

    from flx.train import predict, train_model

    model, test, _, _, _ = train_model(config, data_dir)
    return torch.sigmoid(predict(model, test.x)).double().numpy(), test.y.numpy()


def pr_curves(runs, out: Path, spec, data_dir=None) -> Path | None:
    """Precision-recall curves of the three best settings (each retrained at its first seed)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    configs = _best_configs(runs, 3)
    if not configs:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for config in configs:
        scores, y = _scores(config, data_dir)
        precision, recall, _ = precision_recall_curve(y, scores)
        ax.plot(recall, precision, label=f"{_label(config)} (AP {average_precision_score(y, scores):.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{spec.name}: PR curves of the best settings (seed {configs[0].seed})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out / "pr_curves.png")


def loss_cdf(runs, out: Path, spec, data_dir=None) -> Path | None:
    """The paper's Figure 4: cumulative distribution of normalized focal loss over positive and negative test
    examples, for models trained with several gamma (the spec's alpha closest to 0.25, seed 0)."""
    import dataclasses

    import numpy as np
    import torch

    from flx.losses import sigmoid_focal_loss

    ok = runs[(runs["status"] == "ok") & (runs["loss"] == "focal")]
    if ok.empty:
        return None
    alpha = min(ok["alpha"].dropna().unique(), key=lambda a: abs(a - 0.25))
    base = _best_configs(ok[ok["alpha"] == alpha], 1)[0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for gamma in (0.0, 0.5, 1.0, 2.0):
        if not (ok["gamma"] == gamma).any():
            continue
        config = dataclasses.replace(base, gamma=gamma, seed=0).normalized()
        scores, y = _scores(config, data_dir)
        logits = torch.logit(torch.from_numpy(scores).clamp(1e-12, 1 - 1e-12))
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
    return _save(fig, out / "loss_cdf.png")


# ------------------------------------------------------------------------------------------------------------
# Detection (shapes)
# ------------------------------------------------------------------------------------------------------------
def _curve(row) -> list | None:
    import json

    text = row.get("curve")
    return json.loads(text) if isinstance(text, str) and text else None


def _decays(row) -> bool:
    """Whether the run's lr decays (detection: at :data:`LR_DECAYS` of its steps); classification: constant."""
    from flx.config import DATASETS

    spec = DATASETS.get(row.get("dataset"))
    return spec is not None and spec.task == "detection"


def plateau_steps(row, share: float = 0.95) -> tuple:
    """(the first evaluated step whose validation AP reaches ``share`` of the best before the first lr decay
    at 2/3 of training, that best), from a run's stored curve; (None, None) without one."""
    curve = _curve(row)
    if not curve:
        return None, None
    steps = row.get("steps")  # detection: the lr decays at 2/3 of the steps; classification: a constant lr
    horizon = steps * LR_DECAYS[0] if _decays(row) else math.inf
    before = [(c[0], c[1]) for c in curve if c[0] <= horizon] or [(c[0], c[1]) for c in curve]
    best = max(ap for _, ap in before)
    return next(s for s, ap in before if ap >= share * best), best


def learning_curves(runs, out: Path, spec) -> Path | None:
    """Validation AP against training steps (or epochs): one line per run with a stored curve, or with several
    seeds per setting the mean over its ok runs, one panel per training ratio."""
    rows = [r for r in runs.to_dict("records") if _curve(r)]
    if not rows:
        return None
    if "seed" in runs and runs["seed"].nunique() > 1:
        return _mean_curves(runs, rows, out, spec)
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        curve = _curve(row)
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
    return _save(fig, out / "learning_curves.png")


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
            curves = [_curve(r) for r in group.to_dict("records")]
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
    return _save(fig, out / "learning_curves.png")


_RETRAINED: dict = {}


def _retrain(row):
    """A stored detection run's model, retrained (runs are deterministic; once per report process), and its
    test images."""
    from flx.config import config_from_record
    from flx.data import load
    from flx.detection import train_detector

    config = config_from_record(row).normalized()
    if config not in _RETRAINED:
        train, test, meta = load(config.dataset, config.data_params(), config.data_seed, None)
        model, *_ = train_detector(config, train)
        _RETRAINED[config] = (config, model, test)
    return _RETRAINED[config]


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


def detection_loss_cdf(runs, out: Path, spec) -> Path | None:
    """The paper's Figure 4: one converged FL model (gamma 2, seed 0), the loss of its test anchors under FL
    with several gamma; the share of the total loss carried by the hardest fraction of positive and of negative
    anchors. The x axis is logarithmic so the negatives' curves, all crowded at the hardest end, separate."""
    import numpy as np

    from flx.config import get_loss
    from flx.detection import anchor_labels, predict_split

    row = _first_run(runs, loss="focal", gamma=2.0, alpha=0.25)
    if row is None:
        return None
    config, model, test = _retrain(row)
    _, logits, anchors = predict_split(model, test)
    labels = anchor_labels(model, test, anchors)
    keep = labels >= 0
    logits, y = logits[keep], labels[keep].float()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for gamma in (0.0, 0.5, 1.0, 2.0, 5.0):
        loss = get_loss("focal")(logits, y, reduction="none", alpha=-1.0, gamma=gamma).double().numpy()
        for ax, cls, name in ((axes[0], 1, "positive"), (axes[1], 0, "negative")):
            values = np.sort(loss[y.numpy() == cls])[::-1]  # hardest first
            share = np.cumsum(values) / max(values.sum(), 1e-300)
            frac = np.arange(1, len(values) + 1) / len(values)
            at = np.unique(np.geomspace(1, len(values), 400).astype(int)) - 1  # log-spaced points
            ax.plot(frac[at], share[at], label=f"γ = {gamma:g}")
            ax.set_title(f"{name} anchors ({len(values):,})")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("fraction of anchors, hardest first (log scale)")
        ax.set_ylabel("share of the total loss")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle("Figure 4 on shapes: an FL (γ = 2) model's test anchors under FL with several γ (α off)")
    return _save(fig, out / "loss_cdf.png")


def examples(runs, out: Path, spec) -> Path | None:
    """Test images with their ground truth (green) and the detections scoring >= 0.3 of the first CE-like run
    (gamma 0 or ce) and of FL (gamma 2), each retrained at its first seed."""
    candidates = {
        "ground truth": None,
        "CE (γ = 0)": _first_run(runs, loss="focal", gamma=0.0) or _first_run(runs, loss="balanced_ce"),
        "FL (γ = 2)": _first_run(runs, loss="focal", gamma=2.0, alpha=0.25),
    }
    models = {name: _retrain(row) for name, row in candidates.items() if row is not None}
    if not models:
        return None
    _, _, test = next(iter(models.values()))
    n = 6
    fig, axes = plt.subplots(len(candidates), n, figsize=(2 * n, 2.1 * len(candidates)), squeeze=False)
    for r, name in enumerate(candidates):
        dets = None
        if name in models:
            from flx.detection import predict_split

            dets, _, _ = predict_split(models[name][1], type(test)(test.images[:n], test.boxes[:n]))
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(test.images[i].permute(1, 2, 0).numpy())
            for b in test.boxes[i].tolist():
                ax.add_patch(plt.Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=1))
            if dets is not None:
                d = dets[i]
                for b, sc in zip(d["boxes"].tolist(), d["scores"].tolist(), strict=True):
                    if sc >= 0.3:
                        ax.add_patch(
                            plt.Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, ec="red", lw=1)
                        )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name if name in models or r == 0 else f"{name}: no run", fontsize=8)
    fig.suptitle(
        "shapes test images: rings (green: ground truth) among disks and boxes; red: detections ≥ 0.3"
    )
    return _save(fig, out / "examples.png")


FIGURES = {
    "ap_vs_param": ap_vs_param,
    "loss_vs_pt": loss_vs_pt,
    "pr_curves": pr_curves,
    "loss_cdf": loss_cdf,
    "learning_curves": learning_curves,
    "detection_loss_cdf": detection_loss_cdf,
    "examples": examples,
}
assert set(FIGURES) == set(FIGURE_NAMES), "flx.config.FIGURES names the figures a spec may ask for"
