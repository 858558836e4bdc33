"""What ``flx compare`` found: its trials per family, the finalists, the verdicts (:class:`CompareResult`), and
the verdicts in plain words, which the page (:mod:`flx.compare.page`) writes and the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FEW_VAL_POSITIVES = 30  # below this the choice on validation is noisy: the page says so

WORDS = {
    "replicated": "holds",
    "contradicted": "is contradicted",
    "inconclusive": "is not shown either way",
    "too few seeds": "cannot be judged (too few seeds)",
}


def setting_text(fields: dict) -> str:
    """{"lr": 0.003, "ohem_nms": None} -> 'lr 0.003, ohem_nms none'."""
    return ", ".join(f"{k} {'none' if v is None else format(v, 'g')}" for k, v in fields.items())


def sentence(verdict, finalists: dict) -> str:
    """One verdict in plain words: 'focal loss beats cross-entropy is not shown either way: focal (lr 0.003,
    alpha 0.4, gamma 1.5) vs ce (lr 0.001): -0.003 AP [-0.011, +0.004], 5 paired seeds, 0 + 0 failed.'"""
    a, b = verdict.a.split()[0], verdict.b.split()[0]
    diff = (
        f"{verdict.mean:+.3f} AP [{verdict.low:+.3f}, {verdict.high:+.3f}]"
        if verdict.low == verdict.low
        else "–"
    )
    rank = f", signed-rank p = {verdict.p:.2g}" if verdict.p == verdict.p else ""
    return (
        f"**{verdict.name}** {WORDS[verdict.verdict]} on this data: {a} ({setting_text(finalists.get(a, {}))}) vs "
        f"{b} ({setting_text(finalists.get(b, {}))}): {diff}, {verdict.n} paired seeds{rank}, "
        f"{verdict.failed_text()} → {verdict.verdict}."
    )


@dataclass
class CompareResult:
    out: Path
    families: list[str]
    budget: int
    seeds: int
    trials: dict = field(default_factory=dict)  # family -> [{"trial", "fields", "val_ap", "status", "key"}]
    rung: int | None = (
        None  # the step at which trials may be pruned (None: --no-prune, or no curve to prune on)
    )
    finals_steps: int | None = None  # the steps of a complete trial
    finalists: dict = field(default_factory=dict)  # family -> its best fields (on validation)
    verdicts: list = field(default_factory=list)  # flx.report.claims.Verdict
    runs: object = None  # the finalists' records (DataFrame)
    trained: int = 0  # runs trained by this call (0: everything was in the store)
    mlflow: str | None = None  # the tracking URI each run is logged to as it finishes
    page: Path | None = None
    splits: dict = field(default_factory=dict)  # split -> (rows, positives): flx.compare.run.split_counts
    baselines: list = field(default_factory=list)  # rows of flx.compare.baselines.fit_baselines
    resampled: float | None = None  # test/train rows when each seed draws its own split (None: a given split)
    detection: bool = False  # a detector's comparison: images and objects, not rows and positives
    base_lr: float | None = None  # the data set's learning rate (the queued trials' where it is searched)
    queued: dict = field(default_factory=dict)  # family -> the settings its study tried first
    trial_workers: int = 1  # trials trained side by side (flx.compare.run.trial_workers)
    fresh: dict = field(
        default_factory=dict
    )  # "recheck", "more_seeds" -> flx.compare.recheck.Recheck or None

    @property
    def recheck(self):
        """The settled verdicts on fresh seeds (--recheck), or None."""
        return self.fresh.get("recheck")

    @property
    def more_seeds(self):
        """The inconclusive verdicts on a larger fresh sample (--more-seeds), or None."""
        return self.fresh.get("more_seeds")

    def finalist(self, base, family: str, seed: int):
        """``family``'s chosen setting on ``seed``, on its own training images (``data_seed`` = seed) where the
        comparison resamples."""
        from flx.experiment.config import Config

        data_seed = seed if self.resampled is not None else base.data_seed
        fields = {**base.to_dict(), "loss": family, "seed": seed, "data_seed": data_seed}
        return Config(**{**fields, **self.finalists[family]})

    def finals_spec(self, base, families: list[str], seeds: str, declared: list[dict], **about) -> dict:
        """The spec of finalists' runs, written before they train: the fixed config, one grid entry per family (its
        chosen setting and any loss field fixed for it alone, such as OHEM's ``ohem_norm``), the seeds ("A-B"), the
        claims; ``about``: its name and description."""
        from flx.experiment.params import LOSS_PARAMS

        def own(family: str) -> dict:
            config = self.finalist(base, family, 0).normalized()
            return {k: getattr(config, k) for k in LOSS_PARAMS if getattr(config, k) is not None}

        fixed = {
            k: v
            for k, v in base.to_dict().items()
            if v is not None and k not in ("loss", "seed", *LOSS_PARAMS)
        }
        grid = [
            {"loss": [f], **{k: [v] for k, v in {**own(f), **self.finalists[f]}.items()}} for f in families
        ]
        return {**about, "config": fixed, "grid": grid, "seeds": seeds, "resample": self.resampled is not None,
                "report": {"claims": declared}}  # fmt: skip

    @property
    def search_lr(self) -> bool:
        """The learning rate is searched with each family's own for a classifier; a detector keeps its data
        set's for every family."""
        return not self.detection

    def data_line(self) -> str:
        """What the comparison trained and tested on, from the finalists' records: the data, the positive class,
        the rows and positives per split, and what was done to a table (``data_prep``)."""
        if self.runs is None or not len(self.runs):
            return ""
        r = self.runs.iloc[0]
        negative, positive = str(r["data_classes"]).split("/", 1)
        splits = self.splits or {
            "train": (int(r["n_train_pos"] + r["n_train_neg"]), int(r["n_train_pos"])),
            "test": (int(r["n_test_pos"] + r["n_test_neg"]), int(r["n_test_pos"])),
        }
        rows_word, pos_word = ("images", "objects") if self.detection else ("rows", "positive")
        counts = ", ".join(
            f"{name} {rows:,} {rows_word} ({pos:,} {pos_word})" for name, (rows, pos) in splits.items()
        )
        line = (
            f"- Data: {r['data_location']} (split {r['data_split']}); positive class {positive!r} against "
            f"{negative!r}: {counts}."
        )
        prep = r.get("data_prep")
        if isinstance(prep, str) and prep:
            line += f" Prepared: {prep}."
        return line

    def baseline_line(self) -> str:
        """The best loss family against the best baseline, in one sentence (:mod:`flx.compare.baselines`)."""
        from flx.compare.baselines import against_baselines

        if self.runs is None or not len(self.runs):
            return ""
        return "- " + against_baselines(self.runs, self.baselines, self.families)

    def variance_line(self) -> str:
        """Which sources of variance the verdicts' intervals cover."""
        if self.resampled is None:
            return (
                "- Sources of variance: the split is given, so the paired seeds differ in initialisation and batch "
                "order only; the intervals do not cover the data's variance."
            )
        if self.detection:
            return (
                "- Sources of variance: each paired seed trains on its own rendered images (data_seed = seed) from its "
                "own initialisation; the validation and test images are the same for every seed, so the intervals "
                "cover the training images' and the optimiser's variance, not the test set's."
            )
        if self.resampled == 0:
            return (
                "- Sources of variance: each paired seed draws its own data (training and test alike) and its own "
                "initialisation; the splits never overlap, so the plain paired t interval applies."
            )
        return (
            "- Sources of variance: each paired seed draws its own stratified train / validation / test split and "
            "its own initialisation; the training sets of the seeds overlap, so each interval is Nadeau & "
            f"Bengio's corrected resampled t (variance times 1/n + n_test/n_train, here {self.resampled:.2f})."
        )

    def summary_lines(self) -> list[str]:
        """What ``compare.md`` opens with and ``flx compare`` prints: the verdicts and cautions, the best family
        against the best baseline, the sources of variance, the data."""
        lines = [*self.verdict_lines(), self.baseline_line(), self.variance_line(), self.data_line()]
        return [line for line in lines if line]

    def verdict_lines(self) -> list[str]:
        """The verdicts in plain words, one line each, then the caution on tied trials (if any): what
        ``compare.md`` opens with and ``flx compare`` prints."""
        tied = [
            f for f in self.families if len({round(t["val_ap"], 3) for t in completed(self.trials[f])}) == 1
        ]
        caution = (
            f"- Caution: every trial of {', '.join(tied)} scored the same validation AP to 3 decimals, so "
            "validation could barely tell the settings apart and the choice among them is close to arbitrary; a "
            "larger or harder validation split would tell them apart."
        )
        lines = [f"- {sentence(v, self.finalists)}" for v in self.verdicts] + ([caution] if tied else [])
        for v in (v for v in self.verdicts if v.identical):
            a, b = v.a.split()[0], v.b.split()[0]
            lines.append(
                f"- Caution: in **{v.name}** every paired difference is exactly 0: {a}'s choice on validation "
                f"({setting_text(self.finalists.get(a, {}))}) trains the same model as {b}'s "
                f"({setting_text(self.finalists.get(b, {}))}), so this verdict measures nothing; {a}'s own "
                f"tuning found nothing better than {b}."
            )
        rows, positives = self.splits.get("validation", (0, FEW_VAL_POSITIVES))
        if positives < FEW_VAL_POSITIVES:
            lines.append(
                f"- Caution: the validation split holds {positives} positives in {rows:,} rows, so each family's "
                "choice on validation is noisy: a setting that wins there may trail on test."
            )
        return lines


def completed(trials: list[dict]) -> list[dict]:
    """The trials that trained to the end (a pruned one is a partial run: never a finalist)."""
    return [t for t in trials if t["status"] != "pruned"]


def startup_trials(budget: int) -> int:
    """TPE's random start, and the complete trials the pruner waits for: a third of the budget, 3 at least."""
    return max(3, budget // 3)
