"""Figures (matplotlib, PNG). Figures from trained models retrain the chosen configs (seed 0): a run is
deterministic, so this gives the stored run's model back without storing every example's score."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from flx.config import FIGURES as FIGURE_NAMES  # noqa: E402
from flx.summary import cell, run_label, setting_columns, summarize  # noqa: E402

PARAMS = ("gamma", "alpha", "epsilon", "ohem_k", "ratio")
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


FIGURES = {"ap_vs_param": ap_vs_param, "loss_vs_pt": loss_vs_pt, "pr_curves": pr_curves, "loss_cdf": loss_cdf}
assert set(FIGURES) == set(FIGURE_NAMES), "flx.config.FIGURES names the figures a spec may ask for"
