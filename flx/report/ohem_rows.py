"""Table 1d's figure: each OHEM row's test AP, seed by seed, against focal loss's; rows whose runs are identical
seed by seed (a B the 1:3 rule never fills) drawn as the one result they are."""

from __future__ import annotations

from pathlib import Path

from flx.report.png import save_png
from flx.results.summary import cell, merge_identical

KEYS = ("ohem_k", "ohem_nms", "ohem_ratio")
WORDS = {"ohem_k": "B", "ohem_nms": "NMS", "ohem_ratio": "1:"}


def _label(setting: dict, members: list[dict] | None) -> str:
    """'B 128 / 256 / 512, NMS 0.5, 1:3'."""
    parts = []
    for k in KEYS:
        values = [cell(m[k]) for m in members] if members else [cell(setting[k])]
        text = " / ".join(dict.fromkeys(values))
        if text == "–" or text == "none":
            text = "none" if k != "ohem_ratio" else ""
        if text:
            parts.append(f"{WORDS[k]}{'' if k == 'ohem_ratio' else ' '}{text}")
    return ", ".join(parts)


def ohem_rows(runs, out: Path, spec, store=None) -> Path | None:
    """A dot per seed and the mean ± std of each OHEM setting's test AP (best first), focal loss's mean ± std as a
    band; ``out/ohem_rows.png``. None without OHEM runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = runs[runs["status"] == "ok"]
    keys = [k for k in KEYS if k in runs]
    ohem = runs[runs["loss"] == "ohem"]
    if ohem.empty or not keys:
        return None
    shown, merged = merge_identical(ohem, keys)
    rows = []
    for label, group in shown.groupby([shown[k].map(cell) for k in keys], sort=False, dropna=False):
        aps = group[group["status"] == "ok"]["ap"].dropna()
        setting = {k: group.iloc[0][k] for k in keys}
        failed = int((group["status"] != "ok").sum())
        rows.append((aps.mean() if len(aps) else 0.0, aps, _label(setting, merged.get(label)), failed))
    rows.sort(key=lambda r: r[0])
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.6))
    focal = ok[ok["loss"] == "focal"]["ap"].dropna()
    if len(focal):
        mean, std = focal.mean(), focal.std(ddof=1) if len(focal) > 1 else 0.0
        ax.axvspan(mean - std, mean + std, color="tab:red", alpha=0.15, lw=0)
        ax.axvline(mean, color="tab:red", lw=1.2, label=f"focal loss: mean ± std of {len(focal)} seeds")
    for i, (mean, aps, _, failed) in enumerate(rows):
        ax.scatter(aps, [i] * len(aps), s=14, color="tab:blue", alpha=0.7, zorder=3)
        if len(aps):
            std = aps.std(ddof=1) if len(aps) > 1 else 0.0
            ax.errorbar(mean, i, xerr=std, fmt="|", color="black", ms=14, capsize=3, zorder=4)
        if failed:
            ax.text(ax.get_xlim()[0], i, f" {failed} failed", va="center", fontsize=7, color="tab:red")
    ax.set_yticks(range(len(rows)), [r[2] for r in rows], fontsize=8)
    ax.set_xlabel("test COCO AP (dots: seeds; bar: mean ± std)")
    ax.set_title(f"{spec.name}: OHEM's rows against focal loss", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    if len(focal):
        ax.legend(fontsize=7, loc="lower right")
    return save_png(fig, out / "ohem_rows.png")
