"""Baselines beside the losses: does any of this matter? A class-weighted logistic regression and scikit-learn's
histogram gradient boosting, fitted on the same training split as the finalists (their features, standardized
as the runs see them), one per paired seed, scored on the same test split with the same metrics."""

from __future__ import annotations

import math

BASELINES = {
    "logistic regression (class-weighted)": "logistic",
    "gradient boosting (histogram)": "boosting",
}


def _model(kind: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if kind == "logistic":
        return LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)
    return HistGradientBoostingClassifier(random_state=seed)


def fit_baselines(base, data_dir: str | None, seeds: list[int], resampled: bool = False) -> list[dict]:
    """One row per baseline and seed: {"baseline", "seed", metrics...}, each seed on the finalists' split of
    that seed (its own with ``resampled``, else the base's); none for image data (the baselines take feature
    vectors: an image set through a frozen backbone has them, raw images do not)."""
    from flx.data.load import load
    from flx.experiment.metrics import classification_metrics

    rows = []
    for seed in seeds:
        data_seed = seed if resampled else base.data_seed
        train, test, _ = load(base.dataset, base.data_params(), data_seed, data_dir)
        if not hasattr(train, "x") or train.x.dim() != 2:  # a detector's images, or raw images
            return []
        x, y, x_test, y_test = train.x.numpy(), train.y.numpy(), test.x.numpy(), test.y.numpy()
        for name, kind in BASELINES.items():
            scores = _model(kind, seed).fit(x, y).predict_proba(x_test)[:, 1]
            metrics = classification_metrics(y_test, scores, float(y.mean()))
            rows.append({"baseline": name, "seed": seed, **metrics})
    order = list(BASELINES)
    return sorted(rows, key=lambda r: (order.index(r["baseline"]), r["seed"]))


def against_baselines(runs, rows: list[dict], families: list[str]) -> str:
    """One plain sentence: the best loss family (mean test AP of its ok runs) against the best baseline, with
    the paired difference's 95% t interval over the seeds both have."""
    import pandas as pd
    from scipy import stats

    if not rows:
        return "No baseline: the baselines take feature vectors, and these data are images."
    base = pd.DataFrame(rows)
    ok = runs[runs["status"] == "ok"]
    means = {f: ok[ok["loss"] == f]["ap"].mean() for f in families if (ok["loss"] == f).any()}
    if not means:
        return ""
    family = max(means, key=means.get)
    baseline = base.groupby("baseline")["ap"].mean().idxmax()
    a = ok[ok["loss"] == family].set_index("seed")["ap"]
    b = base[base["baseline"] == baseline].set_index("seed")["ap"]
    diff = (a - b).dropna()
    text = (
        f"The best loss family, {family} (test AP {means[family]:.3f}), against the best baseline, {baseline} "
        f"({b.mean():.3f}): {diff.mean():+.3f} AP"
    )
    if len(diff) >= 2 and diff.std(ddof=1) > 0:
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
        text += f" [{diff.mean() - half:+.3f}, {diff.mean() + half:+.3f}] over {len(diff)} paired seeds"
    if len(b) >= 2 and b.std(ddof=1) == 0:
        text += (
            " Every seed trains on the same split, so a deterministic baseline scores the same on each: the "
            "interval holds the loss family's seed-to-seed spread only, not the data's"
        )
    return text + "."
