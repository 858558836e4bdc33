"""Verdicts on the paper's claims, declared in a spec's ``[[report.claims]]`` before the runs.

A claim names two settings (``a``, the one the paper says is better, and ``b``) by config fields. When a side
matches several settings (``b = { loss = "ohem" }`` matches nine OHEM rows), the one with the highest mean
**validation** AP stands for it, its failed runs scored as the claim declares: choices are made on the
validation images, never on the test images. The two settings are paired by seed (the same images,
initialisation stream and batch order), the test metric's difference a - b (b - a for ``direction = "less"``)
is taken per seed, and its mean gets a 95% t interval (beside it, Wilcoxon's signed-rank p, which with 5 seeds
cannot go below 0.0625: the interval decides):

- ``replicated``: the interval lies above 0 (on the paper's side);
- ``contradicted``: it lies below 0;
- ``inconclusive``: it contains 0;
- ``too few seeds``: fewer paired seeds than the claim's ``min_seeds``.

A claim that two settings are as good as each other (``direction = "equivalent"``, with a ``margin`` m: "FL is
no better than CE") is judged as an equivalence test: ``replicated`` when the interval lies inside (-m, m),
``contradicted`` when it lies wholly outside [-m, m] (on either side), ``inconclusive`` otherwise.

A failed, diverged or collapsed run scores ``failures`` (default 0: a detector that failed detects nothing
useful) on both the validation and the test metric, and is counted in the verdict; ``failures = "drop"``
leaves such seeds out instead (and says how many).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flx.experiment.config import CONFIG_FIELDS
from flx.experiment.params import check
from flx.results.summary import cell

VERDICTS = ("replicated", "contradicted", "inconclusive", "too few seeds")


@dataclass
class Verdict:
    name: str
    a: str  # the chosen settings, as labels
    b: str
    metric: str
    n: int
    min_seeds: int
    mean: float
    low: float
    high: float
    verdict: str
    paper: str = ""
    margin: float | None = None  # an equivalence claim's
    failed: tuple = (0, 0)  # failed runs among the paired seeds' (a, b), scored as declared (or dropped)
    failures: float | str = 0.0  # what a failed run scores, or "drop"
    p: float = math.nan  # Wilcoxon signed-rank p of the paired differences (two-sided)

    @property
    def identical(self) -> bool:
        """Every paired difference is exactly 0: the two sides trained the same model on every seed (focal loss
        at gamma 0 beside alpha-balanced CE at the same alpha), so the verdict measures nothing."""
        return self.n >= 2 and self.mean == 0.0 and self.low == 0.0 and self.high == 0.0

    def failed_text(self) -> str:
        how = "left out" if self.failures == "drop" else f"scored {self.failures:g}"
        return f"{self.failed[0]} + {self.failed[1]} failed ({how})"

    def line(self) -> str:
        if self.n == 0:
            return (
                f"{self.name}: {self.a} vs {self.b}: no paired seeds with a result ({self.metric}; "
                f"{self.failed_text()}) → "
                f"**{self.verdict}**" + (f" (paper: {self.paper})" if self.paper else "")
            )
        interval = (
            f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]" if self.n >= 2 else f"{self.mean:+.3f}"
        )
        within = f", equivalence margin ±{self.margin:g}" if self.margin is not None else ""
        rank = f", signed-rank p = {self.p:.3g}" if self.p == self.p else ""
        return (
            f"{self.name}: {self.a} vs {self.b}, paired {self.metric} difference {interval} (95% CI, "
            f"n = {self.n} seeds{within}{rank}; {self.failed_text()}) → **{self.verdict}**"
            + (f" (paper: {self.paper})" if self.paper else "")
        )


def _matches(runs, where: dict):
    mask = runs["status"] != "missing"
    for field, value in where.items():
        if field not in runs:
            return mask & False
        column = runs[field]
        value = check(field, value)  # "none" -> None, canonical types
        if value is None:
            mask &= column.isna()
        elif isinstance(value, str):
            mask &= column == value
        else:
            mask &= (column - value).abs() <= 1e-9 * max(1.0, abs(value))
    return mask


def _setting(row, skip=("seed",)) -> tuple:
    """What tells one setting from another: its config fields but the seed (and the data seed where every run
    has it equal to its seed: resampled pairs, each seed on its own split)."""
    return tuple(cell(row[c]) for c in CONFIG_FIELDS if c in row and c not in skip)


def _label(group, where: dict) -> str:
    from flx.experiment.params import LOSS_PARAMS
    from flx.results.summary import run_label, setting_cell

    row = group.iloc[0].to_dict()
    extra = [f"{k}={setting_cell(row, k)}" for k in where if k not in ("loss", *LOSS_PARAMS)]
    return " ".join([run_label(row), *extra])


FAILED = ("failed", "diverged", "collapsed")


def choose(runs, where: dict, select_on: str = "val_ap", failures: float | str = 0.0):
    """The runs of the setting that ``where`` names: with several matching settings, the one with the best
    mean ``select_on`` (validation AP) over its runs, a failed run scoring ``failures`` ("drop": over its ok
    runs only), so a setting's failed seeds count against it. None when nothing matches."""
    matched = runs[_matches(runs, where)]
    if matched.empty:
        return None
    resampled = "data_seed" in matched and bool((matched["data_seed"] == matched["seed"]).all())
    skip = ("seed", "data_seed") if resampled else ("seed",)
    groups = list(matched.groupby(matched.apply(_setting, axis=1, skip=skip), sort=False))
    if len(groups) == 1:
        return groups[0][1]

    def score(group):
        values = list(_values(group, select_on, failures).values())
        value = sum(values) / len(values) if values else math.nan
        return -math.inf if value != value else value

    return max((g for _, g in groups), key=score)


def _values(group, metric: str, failures):
    """Seed -> the run's ``metric``; a failed run's is ``failures`` (or left out with "drop")."""
    out = {}
    for row in group.to_dict("records"):
        value = row.get(metric, math.nan)
        if row["status"] in FAILED and failures != "drop":
            value = failures
        elif row["status"] != "ok":
            value = math.nan
        if value == value:
            out[int(row["seed"])] = float(value)
    return out


def judge(claim: dict, runs) -> Verdict:
    """The verdict on one declared claim from the runs of a results folder."""
    from scipy import stats

    metric = claim.get("metric", "ap")
    failures = claim.get("failures", 0.0)
    a, b = choose(runs, claim["a"], failures=failures), choose(runs, claim["b"], failures=failures)
    label_a = _label(a, claim["a"]) if a is not None else "no runs"
    label_b = _label(b, claim["b"]) if b is not None else "no runs"
    va = _values(a, metric, failures) if a is not None else {}
    vb = _values(b, metric, failures) if b is not None else {}
    seeds = sorted(set(va) & set(vb))
    failed = tuple(
        0 if g is None else int(g[g["seed"].isin(seeds) | (failures == "drop")]["status"].isin(FAILED).sum())
        for g in (a, b)
    )
    direction = claim.get("direction", "greater")
    sign = -1.0 if direction == "less" else 1.0
    diffs = [sign * (va[s] - vb[s]) for s in seeds]
    n, min_seeds = len(diffs), claim.get("min_seeds", 3)
    mean = sum(diffs) / n if n else math.nan
    low = high = math.nan
    if n >= 2:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        # resampled splits overlap: Nadeau & Bengio's corrected variance, (1/n + n_test/n_train) sd^2
        scale = (
            math.sqrt(1 / n + claim["resampled"]) if claim.get("resampled") is not None else 1 / math.sqrt(n)
        )
        half = stats.t.ppf(0.975, n - 1) * sd * scale
        low, high = mean - half, mean + half
    p = _signed_rank(diffs)
    margin = claim.get("margin") if direction == "equivalent" else None
    if n < max(2, min_seeds):
        verdict = "too few seeds"
    elif margin is not None:
        inside, outside = -margin < low and high < margin, low > margin or high < -margin
        verdict = "replicated" if inside else "contradicted" if outside else "inconclusive"
    elif low > 0:
        verdict = "replicated"
    elif high < 0:
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    return Verdict(
        claim["name"],
        label_a,
        label_b,
        metric,
        n,
        min_seeds,
        mean,
        low,
        high,
        verdict,
        claim.get("paper", ""),
        margin,
        failed,
        failures,
        p,
    )


def _signed_rank(diffs: list) -> float:
    """Wilcoxon's signed-rank p (two-sided, exact for few seeds) of the paired differences; nan below 2
    seeds, 1 when every difference is 0."""
    from scipy import stats

    if len(diffs) < 2:
        return math.nan
    if all(d == 0 for d in diffs):
        return 1.0
    return float(stats.wilcoxon(diffs, zero_method="zsplit").pvalue)


def judge_all(claims: list[dict], runs) -> list[Verdict]:
    return [judge(c, runs) for c in claims]


def render(verdicts: list[Verdict]) -> str:
    """The claims as a markdown section: criterion, paired difference, interval, verdict."""
    from tabulate import tabulate

    if not verdicts:
        return ""
    rows = [
        [
            v.name + (f" (within ±{v.margin:g})" if v.margin is not None else ""),
            v.a,
            v.b,
            f"{v.n} (≥ {v.min_seeds})",
            f"{v.failed[0]} / {v.failed[1]}" + (" (left out)" if v.failures == "drop" else ""),
            f"{v.mean:+.3f}" if v.mean == v.mean else "–",
            f"[{v.low:+.3f}, {v.high:+.3f}]" if v.low == v.low else "–",
            f"{v.p:.3g}" if v.p == v.p else "–",
            f"**{v.verdict}**",
            v.paper,
        ]
        for v in verdicts
    ]
    header = [
        "claim (declared before the runs)",
        "a",
        "b",
        "paired seeds",
        "failed a / b",
        "mean a − b",
        "95% CI",
        "signed-rank p",
        "verdict",
        "paper",
    ]
    note = (
        "Each claim was written in the spec before its runs. Where a side matches several settings, the one with "
        "the best mean validation AP stands for it; a and b are paired by seed and compared on the test images. "
        "A failed, diverged or collapsed run scores what its claim declares (AP 0 unless it says otherwise) in "
        "both the choice and the comparison; the failed column counts them among the paired seeds. "
        "Replicated: the 95% t interval of the paired difference lies above 0; contradicted: below 0; "
        "inconclusive: it contains 0. The signed-rank p (Wilcoxon, two-sided) is shown beside it; with 5 seeds "
        "it cannot go below 0.0625."
    )
    if any(v.margin is not None for v in verdicts):
        note += (
            " An equivalence claim (within ±m) is replicated when the interval lies inside (−m, m), contradicted "
            "when it lies wholly outside [−m, m], inconclusive otherwise."
        )
    table = tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)
    return f"### Claims\n\n{table}\n\n{note}\n"
