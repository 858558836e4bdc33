"""Every seed's learning curve, one panel per setting: where the runs of one setting part (``make bimodal``: the v3
map's alpha-CE runs at 128 px that ended near 0.68 or near 0.76 test AP). ``learning_curves`` draws the mean
over seeds instead, which hides such a split."""

from __future__ import annotations

import json
from pathlib import Path

from flx.experiment.registries import LR_DECAYS
from flx.report.png import save_png
from flx.results.summary import cell, setting_cell, setting_columns


def seed_curves(runs, out: Path, spec, store=None) -> Path | None:
    """Validation AP against training steps, a line per ok run labelled with its seed and test AP, a panel per
    setting, grey lines where a detector's learning rate drops; ``out/seed_curves.png``. None without curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "curve" not in runs:
        return None
    ok = runs[(runs["status"] == "ok") & runs["curve"].notna()]
    if ok.empty:
        return None
    columns = [c for c in setting_columns(runs) if c in ok and c != "seed"]
    groups = [g for _, g in ok.groupby([ok[c].map(cell) for c in columns], sort=True)] if columns else [ok]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.8), squeeze=False, sharey=True)
    for ax, group in zip(axes[0], groups, strict=True):
        rows = group.sort_values("seed").to_dict("records")
        for row in rows:
            curve = json.loads(row["curve"])
            test = f": test AP {row['ap']:.3f}" if row.get("ap") == row.get("ap") else ""
            ax.plot([c[0] for c in curve], [c[1] for c in curve], lw=1.1, marker="o", ms=2,
                    label=f"seed {row['seed']}{test}")  # fmt: skip
        if rows[0].get("steps") == rows[0].get("steps") and rows[0].get("dataset") == "shapes":
            for frac in LR_DECAYS:
                ax.axvline(rows[0]["steps"] * frac, color="grey", lw=0.8)
        ax.set_title(", ".join(f"{c} {setting_cell(rows[0], c)}" for c in columns) or spec.name, fontsize=9)
        ax.set_xlabel("training step; grey: lr / 10")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation COCO AP")
    fig.suptitle(f"{spec.name}: every seed's learning curve", fontsize=10)
    return save_png(fig, out / "seed_curves.png")
