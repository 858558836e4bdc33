"""Findings: the sentences under a table (the best setting, plateaus, what the cats-vs-dogs claim says)."""

from __future__ import annotations

import math

import numpy as np

from flx.engine.status import BACK
from flx.results.summary import (
    format_mean_std,
    run_label,
    setting_cell,
    setting_columns,
    summarize,
)


def _ap(row) -> str:
    return format_mean_std(row["ap_mean"], row["ap_std"])


def _best(table, mask=None):
    t = table if mask is None else table[mask]
    t = t[t["ap_mean"].notna()]
    return None if t.empty else t.loc[t["ap_mean"].idxmax()]


def _findings_generic(table, runs) -> list[str]:
    best = _best(table)
    if best is None:
        return []
    keys = [c for c in setting_columns(table) if c in table]
    setting = ", ".join(f"{k} = {setting_cell(best.to_dict(), k)}" for k in keys)
    out = [f"Best setting: {setting} (AP {_ap(best)})."]
    per_setting = summarize(runs)  # every setting, also those a best_over table leaves out
    div = per_setting[(per_setting["diverged"] + per_setting["collapsed"]) > 0]
    if len(div):
        names = [c for c in setting_columns(runs) if c in div]
        out.append(
            "Diverged or collapsed runs: "
            + "; ".join(
                ", ".join(f"{k} = {setting_cell(r, k)}" for k in names)
                + f": {r['diverged']} diverged and {r['collapsed']} collapsed of {r['runs']}"
                for r in div.to_dict("records")
            )
            + "."
        )
    else:
        out.append(f"No run diverged or collapsed (of {len(runs)}).")
    return out


def _findings_catsdogs(table, runs) -> list[str]:
    """The backbone's quality, then per ratio each loss's test AP beside its accuracy at threshold 0.5 (what
    the original experiment reported; its ranking of the losses can differ from AP's), then the from-scratch
    control against the frozen features."""
    from flx.report.claims import choose

    ok = runs[runs["status"] == "ok"]
    out = []
    if "backbone_test_ap" in ok and ok["backbone_test_ap"].notna().any():
        r = ok[ok["backbone_test_ap"].notna()].iloc[0]
        out.append(
            f"Features: flx's in-domain CNN, trained in {r['backbone_train_s']:.0f} s on a balanced pool of "
            f"{int(r['backbone_pool']):,} training images that no head trains, validates or tests on; with its own "
            f"classifier it scores test AP {r['backbone_test_ap']:.3f} on the balanced test split."
        )
    if "backbone" not in ok or "ratio" not in ok:
        return out + _findings_generic(table, runs)
    for ratio in sorted(ok["ratio"].dropna().unique()):
        rows = []
        for loss in dict.fromkeys(ok["loss"]):
            group = choose(ok, {"loss": loss, "backbone": "indomain", "ratio": float(ratio)})
            if group is not None and len(group):
                label = run_label(group.iloc[0].to_dict())
                rows.append((label, group["ap"].mean(), group["accuracy"].mean()))
        if len(rows) < 2:
            continue
        by_ap = [r[0] for r in sorted(rows, key=lambda r: -r[1])]
        by_acc = [r[0] for r in sorted(rows, key=lambda r: -r[2])]
        same = "the same order" if by_ap == by_acc else f"another order ({' > '.join(by_acc)})"
        out.append(
            f"1:{ratio:g} (frozen features; FL at its best validation α): test AP "
            + ", ".join(f"{label} {ap:.3f}" for label, ap, _ in rows)
            + "; accuracy at threshold 0.5 "
            + ", ".join(f"{label} {acc:.3f}" for label, _, acc in rows)
            + f": AP ranks them {' > '.join(by_ap)}, accuracy gives {same}."
        )
    scratch = ok[ok["backbone"] == "scratch"]
    for (ratio, loss), group in scratch.groupby(["ratio", "loss"], sort=True):
        frozen = choose(ok, {"loss": loss, "backbone": "indomain", "ratio": float(ratio)})
        if frozen is None:
            continue
        out.append(
            f"Control, 1:{ratio:g} {loss}: the CNN trained from scratch on the images (the old design, "
            f"{int(group['steps'].iloc[0])} steps, {len(group)} seeds) reaches test AP {group['ap'].mean():.3f} "
            f"against {frozen['ap'].mean():.3f} on the frozen features."
        )
    return out + _findings_generic(table, runs)


def _findings_curves(table, runs) -> list[str]:
    """Where each learning curve reaches its plateau, the training length the README's rule gives, and how much
    the validation AP still moved over the last sixth of training; each run named by what varies between them
    (canvas, clutter, steps) beside its loss, and the anchors of each canvas."""
    from flx.report.figures import plateau_steps, val_curve

    out, steps = [], []
    ok = runs[runs["status"] == "ok"]
    varying = [c for c in ("image_size", "clutter", "steps") if c in ok and ok[c].nunique() > 1]
    for row in ok.to_dict("records"):
        step, best = plateau_steps(row, PLATEAU_SHARE)
        curve = val_curve(row)
        if step is None:
            continue
        steps.append(step)
        out.append(
            f"{_curve_label(row, varying)}: at the constant lr, validation AP reaches {PLATEAU_SHARE:.0%} of its "
            f"pre-decay best ({best:.3f}) at step {step}; over the last sixth of training it moves "
            f"{_tail_move(curve):+.3f} (to {curve[-1][1]:.3f})."
        )
    out[:0] = _anchor_lines(ok, varying)
    detection = "steps" in runs and runs["steps"].notna().any()
    if steps and detection:
        length = math.ceil(max(steps) * 1.5 / 100) * 100
        out.append(
            f"Training length by the rule (1.5 x the latest of these steps, so the first lr decay, at 2/3, comes "
            f"where the constant-lr curves level off): {length} steps."
        )
    return out


_LABELS = {"image_size": "{:g} px", "clutter": "clutter {:g}", "steps": "{:g} steps"}


def _curve_label(row: dict, varying: list[str]) -> str:
    """``focal`` alone, or ``focal (128 px, clutter 8, 2400 steps)`` where the runs differ in those."""
    where = ", ".join(_LABELS[c].format(row[c]) for c in varying)
    return f"{row['loss']} ({where})" if where else row["loss"]


def _anchor_lines(ok, varying: list[str]) -> list[str]:
    """The anchors and the background's share of the initial loss: one line, or one per canvas where the runs
    span several (each share named by its run)."""
    if "imbalance" not in ok or not ok["imbalance"].notna().any():
        return []
    measured = ok[ok["imbalance"].notna()]
    groups = measured.groupby("image_size", sort=True) if "image_size" in varying else [(None, measured)]
    lines = []
    for size, group in groups:
        first = group.iloc[0]
        shares = ", ".join(
            f"{_curve_label(r, [c for c in varying if c != 'image_size'])} {100 * r['neg_loss_share']:.2g}%"
            for r in group.to_dict("records")
            if r["loss"] != "ohem"
        )
        lines.append(
            f"Anchors{'' if size is None else f' at {size:g} px'}: {first['anchors_per_image']:,.0f} per image, "
            f"{first['pos_anchors_per_image']:.1f} of them on an object and {first['ignored_anchors_per_image']:.1f}"
            f" ignored (IoU 0.4-0.5): 1:{first['imbalance']:.0f} object to background anchors (the paper: about "
            f"1:1000). Share of the initial loss (every anchor at p = π = 0.01) carried by the background anchors: "
            f"{shares}."
        )
    return lines


PLATEAU_SHARE = 0.95


FINDINGS = {"generic": _findings_generic, "catsdogs": _findings_catsdogs, "curves": _findings_curves}


def findings(kind: str, table, runs) -> list[str]:
    """What a results folder shows: its claims' verdicts, then the findings its spec asks for (``[report]
    findings``: :data:`FINDINGS`), then how its learning curves level off where its runs store them."""
    out = [v.line() for v in table.attrs.get("verdicts", [])]
    out += FINDINGS[kind](table, runs)
    if kind != "curves" and "curve" in runs and runs["curve"].notna().any():
        out += _plateau_summary(runs)
    return out + (regime(runs) if kind != "curves" else []) + stability(runs)


def regime(runs) -> list[str]:
    """The imbalance as the model trained it: anchors per image and object anchors, per canvas and layout."""
    done = runs[runs["status"] != "missing"]
    if "anchors_per_image" not in done or done["anchors_per_image"].isna().all():
        return []
    keys = [k for k in ("image_size", "anchor_scales", "anchor_ratios") if k in done]
    parts = []
    for _, g in done[done["anchors_per_image"].notna()].groupby(keys, sort=True):
        r = g.iloc[0]
        layout = (
            f"{r['anchor_scales']:.0f} x {r['anchor_ratios']:.0f} anchors" if "anchor_scales" in r else ""
        )
        parts.append(
            f"{r['image_size']:.0f} px{', ' + layout if layout else ''}: {r['anchors_per_image']:,.0f} anchors per "
            f"image, {r['pos_anchors_per_image']:.1f} on an object, 1:{r['imbalance']:,.0f}"
        )
    return [f"Regime (the model's own anchors, validation images): {'; '.join(parts)}."]


def stability(runs) -> list[str]:
    """The largest gradient norm of the runs, and each failed run with its step."""
    out = []
    if "max_grad_norm" in runs and runs["max_grad_norm"].notna().any():
        norms = runs["max_grad_norm"].dropna()
        out.append(
            f"Largest gradient norm per run: median {norms.median():.3g}, at most {norms.max():.3g} "
            f"(of {len(norms)} runs)."
        )
    if "rebound" in runs and runs["rebound"].notna().any():
        near = runs["rebound"].dropna()
        out.append(
            f"Rebound of the loss on object anchors (a knock-back at {BACK:g} of its initial level): median "
            f"{near.median():.2f}, at most {near.max():.2f} (of {len(near)} runs)."
        )
    if "collapse_step" in runs:
        failed = runs[runs["status"].isin(("diverged", "collapsed")) & runs["collapse_step"].notna()]
        if len(failed):
            out.append(
                "Failed runs and when: "
                + "; ".join(
                    f"{run_label(r)} seed {r['seed']:.0f} at step {r['collapse_step']:.0f} ({r['status']})"
                    for r in failed.to_dict("records")
                )  # fmt: skip
                + "."
            )
    return out


def code_version(runs) -> str:
    """One sentence: the code version every run ran, or the versions when they differ."""
    from flx.results.records import code_versions

    versions = code_versions(runs)
    if not versions:
        return ""
    if len(versions) == 1:
        ((version, n),) = versions.items()
        return f"Code: all {n} runs at commit {version}."
    return "Code: MIXED versions (" + ", ".join(f"{v}: {n} runs" for v, n in versions.items()) + ")."


def _tail_move(curve: list) -> float:
    """How far a stored curve's validation AP moved over its last sixth (its last step when that holds one)."""
    tail = [c[1] for c in curve if c[0] >= curve[-1][0] * 5 / 6]
    if len(tail) > 1 or len(curve) < 2:
        return tail[-1] - tail[0]
    return curve[-1][1] - curve[-2][1]


def _plateau_summary(runs) -> list[str]:
    """How much the ok runs' validation AP still moved over the last sixth of their stored curves."""
    from flx.report.figures import val_curve

    moves = []
    for row in runs[runs["status"] == "ok"].to_dict("records"):
        curve = val_curve(row)
        if curve and len(curve) > 1:
            moves.append(_tail_move(curve))
    if not moves:
        return []
    unit = "steps" if "steps" in runs and runs["steps"].notna().any() else "epochs"
    return [
        f"Plateau: over the last sixth of training ({unit}) the validation AP of the {len(moves)} ok runs moved by "
        f"{min(moves):+.3f} to {max(moves):+.3f} (median {float(np.median(moves)):+.3f})."
    ]
