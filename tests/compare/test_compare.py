"""flx compare: equal budgets, seeded tuning, claims written before the finalists, verdicts that can flip."""

import dataclasses
import sqlite3

import pandas as pd
import pytest
import torch.nn.functional as F
from typer.testing import CliRunner

from flx.cli import app
from flx.compare import run_compare
from flx.experiment.registries import LOSSES
from tests.compare.conftest import rare_table

runner = CliRunner()


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return rare_table(tmp_path_factory.mktemp("data") / "rare.csv", 800, 8, seed=0, weight=0.85)


def _compare(table, out, **kw):
    options = {
        "label": "label",
        "positive": "1",
        "families": "ce,focal",
        "budget": 3,
        "seeds": 3,
        "workers": 1,
        "sets": ["steps=400"],  # a fifth of a table's default: enough to rank these settings
    }
    return run_compare(str(table), out=out, **{**options, **kw})


@pytest.mark.slow
def test_compare_tunes_each_family_equally_and_resumes_with_nothing_to_train(table, tmp_path):
    first = _compare(table, tmp_path / "a")
    assert {f: len(t) for f, t in first.trials.items()} == {"ce": 3, "focal": 3}  # equal budgets
    assert first.trained == 3 + 3 + 2 * 3 and set(first.finalists) == {"ce", "focal"}
    assert [v.name for v in first.verdicts][0] == "focal loss beats cross-entropy"
    assert all(v.n == 3 for v in first.verdicts)
    spec = (tmp_path / "a" / "spec.toml").read_text()  # the claims, declared with the finalists' grid
    assert "[[report.claims]]" in spec and 'seeds = "1-3"' in spec
    page = first.page.read_text()
    assert page.startswith("# flx compare\n\n- **focal loss beats cross-entropy**") and "| 3 " in page
    assert (tmp_path / "a" / "tuning.png").exists() and (tmp_path / "a" / "focal_alpha_gamma.png").exists()
    again = _compare(table, tmp_path / "a")
    assert again.trained == 0 and again.finalists == first.finalists
    elsewhere = _compare(table, tmp_path / "b")  # the sampler is seeded: the same trials, planned afresh
    assert [t["fields"] for t in elsewhere.trials["focal"]] == [t["fields"] for t in first.trials["focal"]]
    _more_seeds_rerun_the_open_verdicts(table, tmp_path / "a", first)


def _more_seeds_rerun_the_open_verdicts(table, out, first):
    """--more-seeds on a finished comparison: every inconclusive verdict (and no other) re-run on its own fresh
    seeds, each family fixed to its chosen setting, judged on those seeds alone; only those runs train, and a
    later call keeps them."""
    from flx.results.store import Store

    open_ = [v.name for v in first.verdicts if v.verdict == "inconclusive" and not v.identical]
    assert open_, [(v.name, v.verdict) for v in first.verdicts]  # the fixture leaves one open: not vacuous
    result = _compare(table, out, more_seeds="4-7")
    more = result.more_seeds
    assert result.trained == 2 * 4 and [v.name for v in more.before] == open_ == [
        c["name"] for c in more.claims
    ]
    assert all(v.n == 4 for v in more.verdicts) and more.page == out / "more_seeds" / "more_seeds.md"
    runs = Store(out / "more_seeds").records()
    assert {(r.seed, r.data_seed) for r in runs} == {(s, s) for s in (4, 5, 6, 7)}
    for r in runs:
        assert {k: getattr(r, k) for k in result.finalists[r.loss]} == result.finalists[r.loss]
    assert "seeds 4-7" in more.page.read_text() and open_[0] in more.page.read_text()
    again = _compare(table, out)
    assert again.trained == 0 and [(v.name, v.mean) for v in again.more_seeds.verdicts] == [
        (v.name, v.mean) for v in more.verdicts
    ]


@pytest.mark.slow
@pytest.mark.parametrize("worse,expected", [("focal", "contradicted"), ("ce", "replicated")])
def test_a_family_made_worse_flips_the_verdict(table, tmp_path, monkeypatch, worse, expected):
    """A fixture loss trained on inverted labels: "focal loss beats cross-entropy" is contradicted when focal is
    the fixture, replicated when CE is."""

    def inverted(logits, targets, reduction="mean", **_):
        return F.binary_cross_entropy_with_logits(logits, 1 - targets, reduction=reduction)

    monkeypatch.setitem(LOSSES, worse, dataclasses.replace(LOSSES[worse], objective=inverted))
    result = _compare(table, tmp_path / "worse")
    verdict = result.verdicts[0]
    assert verdict.name == "focal loss beats cross-entropy" and verdict.verdict == expected
    assert (verdict.high < 0) if expected == "contradicted" else (verdict.low > 0)


@pytest.mark.slow
def test_a_recheck_reruns_only_settled_verdicts_on_fresh_seeds_with_the_chosen_settings(
    table, tmp_path, monkeypatch
):
    """--recheck: a contradicted verdict (focal trained on inverted labels) is re-run on seeds 4-6, each on its own
    split, with each family's chosen setting, in its own store; an inconclusive one is not; a second call trains
    nothing."""
    from flx.results.store import Store

    def inverted(logits, targets, reduction="mean", **_):
        return F.binary_cross_entropy_with_logits(logits, 1 - targets, reduction=reduction)

    monkeypatch.setitem(LOSSES, "focal", dataclasses.replace(LOSSES["focal"], objective=inverted))
    result = _compare(table, tmp_path / "r", recheck="4-6")
    settled = [v.name for v in result.verdicts if v.verdict in ("replicated", "contradicted")]
    recheck = result.recheck
    assert settled and [v.name for v in recheck.verdicts] == settled == [c["name"] for c in recheck.claims]
    assert recheck.verdicts[0].verdict == "contradicted" and recheck.verdicts[0].n == 3
    runs = Store(tmp_path / "r" / "recheck").records()
    assert sorted((r.loss, r.seed, r.data_seed) for r in runs) == [
        (f, s, s) for f in ("ce", "focal") for s in (4, 5, 6)
    ]
    for r in runs:  # each family fixed to the setting its study chose
        assert {k: getattr(r, k) for k in result.finalists[r.loss]} == result.finalists[r.loss]
    spec = (tmp_path / "r" / "recheck" / "spec.toml").read_text()
    assert 'seeds = "4-6"' in spec and spec.count("[[report.claims]]") == len(settled)
    page = recheck.page.read_text()
    assert "seeds 4-6" in page and settled[0] in page
    for again in (_compare(table, tmp_path / "r", recheck="4-6"), _compare(table, tmp_path / "r")):
        assert again.trained == 0 and [(v.name, v.mean) for v in again.recheck.verdicts] == [
            (v.name, v.mean) for v in recheck.verdicts
        ]  # stored: kept by a call without --recheck too
    with sqlite3.connect(
        tmp_path / "r" / "recheck" / "runs.sqlite"
    ) as db:  # as if stopped before its last run
        db.execute("DELETE FROM runs WHERE key = (SELECT key FROM runs ORDER BY created_at DESC LIMIT 1)")
    assert _compare(table, tmp_path / "r").recheck is None  # no verdict on a part of the fresh seeds
    resumed = _compare(table, tmp_path / "r", recheck="4-6")
    assert resumed.trained == 1 and resumed.recheck.verdicts[0].mean == recheck.verdicts[0].mean


def test_compare_refuses_bad_input_in_one_line(table, tmp_path):
    for args, needle in (
        (["--families", "ce"], "--families got 'ce'"),
        (["--families", "ce,hinge"], "--families got 'ce,hinge'"),
        (["--budget", "0"], "--budget got"),
        (["--seeds", "1"], "--seeds got 1; accepted: an integer in [2, 100000]"),
        (["--seeds", "0"], "--seeds got 0; accepted: an integer in [2, 100000]"),
        (
            ["--recheck", "5-9"],
            "--recheck got '5-9'; accepted: a range A-B of two or more fresh seeds, after",
        ),
        (["--recheck", "7"], "--recheck got '7'"),
        (["--recheck", "7-7"], "--recheck got '7-7'"),
        (["--recheck", "x"], "--recheck got 'x'"),
        (["--more-seeds", "4-9"], "--more-seeds got '4-9'; accepted: a range A-B of two or more fresh seeds"),
        (
            ["--recheck", "6-10", "--more-seeds", "10-20"],
            "--more-seeds got '10-20'; accepted: seeds apart from",
        ),
    ):
        result = runner.invoke(
            app, ["compare", str(table), "--label", "label", *args, "--out", str(tmp_path / "x")]
        )
        assert result.exit_code == 2 and needle in result.output, result.output
        assert not (tmp_path / "x").exists()
    result = runner.invoke(app, ["compare", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "DATA got" in result.output


def test_the_focal_heat_map_keeps_each_cells_best_trial_and_count():
    from flx.compare.figures import heat_cells

    trials = [
        {"fields": {"alpha": 0.25, "gamma": 2.0}, "val_ap": 0.6},
        {
            "fields": {"alpha": 0.30, "gamma": 2.5},
            "val_ap": 0.7,
        },  # the same cell: alpha [0.2, 0.35), gamma [2, 3)
        {"fields": {"alpha": 0.95, "gamma": 5.0}, "val_ap": 0.1},  # the upper edges fall in the last cell
    ]
    best, count = heat_cells(trials)
    assert best[2, 1] == 0.7 and count[2, 1] == 2
    assert best[4, 5] == 0.1 and count[4, 5] == 1
    assert count.sum() == 3 and int((count > 0).sum()) == 2


@pytest.mark.slow
def test_trials_are_pruned_on_their_validation_curve_and_resume_alike(table, tmp_path):
    """Optuna's median pruner on the curves flx records: a trial trains a quarter of its steps first (a run whose
    curve is exactly the start of the full run's), a pruned one ends there and is never chosen, and a second
    call replays the same trials and decisions from the store."""
    from flx.compare.run import (
        CompareResult,
        Config,
        _train,
        _tune,
        base_config,
        completed,
        rung_steps,
    )
    from flx.report.figures import val_curve
    from flx.results.store import Store

    base = dataclasses.replace(base_config(str(table), "label", "1"), steps=400, eval_every=50)
    assert (
        rung_steps(base) == 100 and rung_steps(Config(dataset="synthetic")) is None
    )  # epochs: no curve grid
    assert rung_steps(base_config(str(table), "label", "1")) == 500  # a table's 2,000 steps, curve every 100

    def tune(out):
        result = CompareResult(out, ["focal"], 8, 2, rung=rung_steps(base))
        trials = _tune(base, "focal", 8, Store(out), None, result, lambda *a, **k: None)
        return result, trials

    result, trials = tune(tmp_path / "a")
    statuses = [t["status"] for t in trials]
    assert statuses[:3] == ["ok"] * 3 and "pruned" in statuses  # the first 3 (TPE's random start) complete
    # the first 3 train in full; each later one a rung run, and a full run unless pruned
    assert result.trained == 3 + (len(trials) - 3) + (statuses.count("ok") - 3)
    best = max(completed(trials), key=lambda t: t["val_ap"])
    assert best["status"] == "ok"
    full = dataclasses.replace(base, loss="focal", seed=0, **trials[0]["fields"])
    (short,) = _train([dataclasses.replace(full, steps=100)], Store(tmp_path / "a"), None, result)
    (long,) = _train([full], Store(tmp_path / "a"), None, result)
    assert val_curve(short) == val_curve(long)[: len(val_curve(short))] and len(val_curve(short)) == 2
    again, replayed = tune(tmp_path / "a")
    assert again.trained == 0 and replayed == trials


@pytest.mark.slow
def test_compare_runs_end_to_end_on_a_small_image_folder(tmp_path, monkeypatch):
    """An image folder (the in-domain backbone trained once on its pool), two families: verdicts and page."""
    from tests.data.test_yourdata import make_folder

    monkeypatch.setenv("FLX_CACHE_DIR", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "pets", {"cat": 80, "dog": 50})  # 10 dogs to test on: a verdict's least
    result = run_compare(str(folder), families="ce,focal", budget=2, seeds=2, workers=1, out=tmp_path / "out")
    assert {f: len(t) for f, t in result.trials.items()} == {"ce": 2, "focal": 2}
    assert set(result.runs["dataset"]) == {"images"} and (result.runs["status"] == "ok").all()
    page = result.page.read_text()
    assert page.startswith("# flx compare\n\n- **focal loss beats cross-entropy**") and "| baseline: " in page


def test_a_trial_that_fails_at_its_rung_is_not_trained_again_in_full(table, tmp_path, monkeypatch):
    from flx.compare.run import CompareResult, _tune, base_config, rung_steps
    from flx.results.store import Store

    def nan(logits, targets, reduction="mean", alpha=0.25, gamma=2.0):
        return (logits * float("nan")).mean()

    monkeypatch.setitem(LOSSES, "focal", dataclasses.replace(LOSSES["focal"], objective=nan))
    base = dataclasses.replace(base_config(str(table), "label", "1"), steps=400, eval_every=50)
    result = CompareResult(tmp_path, ["focal"], 4, 2, rung=rung_steps(base))
    trials = _tune(base, "focal", 4, Store(tmp_path), None, result, lambda *a, **k: None)
    assert [t["status"] for t in trials] == ["diverged"] * 4 and all(t["val_ap"] == 0 for t in trials)
    assert result.trained == 4  # 3 in full (TPE's random start), the 4th stopped at its rung


@pytest.mark.slow
def test_a_table_as_found_in_the_wild_is_compared_and_the_page_says_what_was_done(tmp_path):
    """Issue 30's table: `;`-separated, an ID column, text columns, blanks, a Yes/No label: compared with no
    preparation by hand; the page and the CLI say what was dropped, encoded and imputed, and the data's split."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 600
    churn = rng.random(n) < 0.2
    pd.DataFrame(
        {
            "customerID": [f"{i:04d}-XYZ" for i in range(n)],
            "contract": np.where(
                churn & (rng.random(n) < 0.7), "Month-to-month", rng.choice(["One year", "Two"], n)
            ),
            "charges": np.where(rng.random(n) < 0.05, np.nan, rng.normal(70, 20, n) + 25 * churn),
            "Churn": np.where(churn, "Yes", "No"),
        }
    ).to_csv(tmp_path / "churn.csv", sep=";", index=False)
    result = runner.invoke(
        app,
        ["compare", str(tmp_path / "churn.csv"), "--label", "Churn", "--positive", "yes", "--families", "ce,focal",
         "--budget", "2", "--seeds", "2", "--workers", "1", "--out", str(tmp_path / "out"), "--set", "steps=200",
         "--set", "eval_every=50"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "compare.md").read_text()
    for text in ("dropped customerID (named like an id)", "one-hot encoded contract", "imputed", "charges ("):
        assert text in page and text in " ".join(result.output.split())
    assert "positive class 'Yes' against 'No'" in page
    assert (
        "| baseline: logistic regression (class-weighted)" in page and "| baseline: gradient boosting" in page
    )
    assert "against the best baseline" in page and "against the best baseline" in result.output


def test_the_best_family_against_the_best_baseline_is_one_paired_sentence():
    from flx.compare.baselines import against_baselines

    runs = pd.DataFrame(
        {"loss": ["ce"] * 3 + ["focal"] * 3, "seed": [1, 2, 3] * 2, "status": ["ok"] * 6,
         "ap": [0.60, 0.62, 0.64, 0.70, 0.71, 0.75]}
    )  # fmt: skip
    rows = [
        {"baseline": "b1", "seed": s, "ap": ap} for s, ap in zip([1, 2, 3], [0.65, 0.66, 0.68], strict=True)
    ]
    rows += [{"baseline": "b2", "seed": s, "ap": 0.5} for s in (1, 2, 3)]
    text = against_baselines(runs, rows, ["ce", "focal"])
    assert text.startswith(
        "The best loss family, focal (test AP 0.720), against the best baseline, b1 (0.663)"
    )
    assert "+0.057 AP [" in text and "over 3 paired seeds" in text
    assert against_baselines(runs, [], ["ce"]).startswith("No baseline")


def test_a_table_too_small_for_a_verdict_is_refused_in_one_line(tmp_path, capsys):
    """Issue 30: a 10-row table got "replicated" (its test split held one positive); now it is refused before
    anything trains, in one line, exit 2, and nothing is written."""
    from flx.cli import main

    pd.DataFrame({"x": range(10), "y": [0, 1] * 5}).to_csv(tmp_path / "tiny.csv", index=False)
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(tmp_path / "tiny.csv"), "--label", "y", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "tiny.csv" in err and "positive" in err and not (tmp_path / "o").exists()


def test_too_few_test_positives_are_refused_and_few_validation_positives_are_a_caution(tmp_path):
    from flx.compare.result import CompareResult
    from flx.compare.run import base_config, split_counts
    from flx.errors import DataError

    rng = __import__("numpy").random.default_rng(0)
    rare = pd.DataFrame({"x": rng.random(300), "y": [1 if i % 50 == 0 else 0 for i in range(300)]})
    rare.to_csv(tmp_path / "rare.csv", index=False)
    with pytest.raises(DataError, match="the test split holds 1 positive"):
        split_counts(base_config(str(tmp_path / "rare.csv"), "y", "1"), None)
    enough = pd.DataFrame({"x": rng.random(600), "y": [1 if i % 6 == 0 else 0 for i in range(600)]})
    enough.to_csv(tmp_path / "enough.csv", index=False)
    counts = split_counts(base_config(str(tmp_path / "enough.csv"), "y", "1"), None)
    assert counts["test"] == (120, 20) and counts["validation"][1] == 10
    caution = CompareResult(tmp_path, [], 1, 2, splits=counts).verdict_lines()
    assert any("validation split holds 10 positives" in line for line in caution)


def test_a_verdict_between_one_model_twice_says_it_measures_nothing(tmp_path):
    """Cell 2 of the v4 map: focal loss's tuning chose gamma 0 at alpha-CE's alpha, so both finalists trained the
    same model and every paired difference was 0; the page says so beside the (inconclusive) verdict."""
    from flx.compare.recheck import verdict_text
    from flx.compare.result import CompareResult
    from flx.report.claims import Verdict

    same = Verdict("FL beats CE", "focal", "balanced_ce", "ap", 5, 5, 0.0, 0.0, 0.0, "inconclusive", p=1.0)
    apart = Verdict(
        "FL beats CE", "focal", "balanced_ce", "ap", 5, 5, 0.0, -0.01, 0.01, "inconclusive", p=1.0
    )
    finalists = {"focal": {"gamma": 0.0, "alpha": 0.75}, "balanced_ce": {"alpha": 0.75}}
    trials = {f: [{"val_ap": 0.5, "status": "ok"}, {"val_ap": 0.6, "status": "ok"}] for f in finalists}
    lines = CompareResult(
        tmp_path, ["focal", "balanced_ce"], 8, 5, trials=trials, finalists=finalists, verdicts=[same]
    )
    caution = [line for line in lines.verdict_lines() if line.startswith("- Caution")]
    assert len(caution) == 1 and "gamma 0, alpha 0.75" in caution[0] and "measures nothing" in caution[0]
    assert verdict_text(same).endswith("(the same model on every seed)")
    assert not apart.identical and "same model" not in verdict_text(apart)


def test_resampled_pairs_widen_the_interval_by_nadeau_and_bengios_correction():
    """Each seed on its own split: the pairs carry the data's variance, and the training sets overlap, so the
    interval's variance is sd^2 (1/n + n_test/n_train) instead of sd^2 / n."""
    import math

    from flx.report.claims import judge

    runs = pd.DataFrame(
        {"loss": ["focal"] * 5 + ["ce"] * 5, "seed": [1, 2, 3, 4, 5] * 2, "data_seed": [1, 2, 3, 4, 5] * 2,
         "status": ["ok"] * 10, "ap": [0.71, 0.69, 0.74, 0.70, 0.72, 0.68, 0.69, 0.70, 0.66, 0.69],
         "val_ap": [0.7] * 10}
    )  # fmt: skip
    claim = {"name": "FL beats CE", "a": {"loss": "focal"}, "b": {"loss": "ce"}, "min_seeds": 5}
    plain, corrected = judge(claim, runs), judge({**claim, "resampled": 0.25}, runs)
    assert plain.n == corrected.n == 5 and plain.mean == pytest.approx(
        corrected.mean
    )  # each side one setting
    widen = (corrected.high - corrected.low) / (plain.high - plain.low)
    assert widen == pytest.approx(math.sqrt(1 + 5 * 0.25))


def test_a_table_flx_splits_is_resampled_per_seed_and_a_given_split_is_not(table, tmp_path, monkeypatch):
    import flx.compare.run as R

    short = R.base_config
    monkeypatch.setattr(R, "base_config", lambda *a: dataclasses.replace(short(*a), steps=100, eval_every=50))
    result = _compare(table, tmp_path / "a", budget=1, seeds=2, prune=False)
    assert result.resampled == pytest.approx(160 / 560)  # 800 rows: 20% test, 70% train
    assert (result.runs["data_seed"] == result.runs["seed"]).all() and set(result.runs["seed"]) == {1, 2}
    assert all(v.n == 2 for v in result.verdicts) and "corrected resampled t" in result.page.read_text()
    given = pd.read_csv(table).assign(part=["test" if i % 5 == 0 else "train" for i in range(800)])
    given.to_csv(tmp_path / "given.csv", index=False)
    split_given = dataclasses.replace(
        R.base_config(str(tmp_path / "given.csv"), "label", "1"), split_column="part"
    )
    assert R.resampled_ratio(split_given, {"test": (160, 16), "train": (640, 64)}) is None


def test_progress_counts_runs_done_of_total_per_family_with_an_eta():
    """Issue 30: a spinner only, no count, no ETA. Now each trial and finalist is a line: runs done of the
    comparison's total, the trial's number in its family's budget, and an ETA from the pace so far."""
    from types import SimpleNamespace

    from flx.cli.compare import _printer

    lines = []
    console = SimpleNamespace(print=lambda text, **_: lines.append(text))
    on_event = _printer(console)
    on_event("plan", families=["ce", "focal"], budget=2, seeds=2, total=8)
    for family in ("ce", "focal"):
        for n in (1, 2):
            on_event("trial", family=family, trial=n, fields={"lr": 0.001}, val_ap=0.5, status="ok")
    on_event("finals", configs=[None] * 4)
    on_event("final", record=SimpleNamespace(loss="ce", seed=1, status="ok", ap=0.61))
    assert lines[0].startswith("[1/8") and "ce trial 1/2: lr 0.001: val AP 0.500 (ok)" in lines[0]
    assert lines[3].startswith("[4/8") and "focal trial 2/2" in lines[3]
    assert lines[4] == "finalists: 4 runs (claims written to spec.toml)"
    assert lines[5].startswith("[5/8") and lines[5].endswith("finalist ce seed 1: test AP 0.610")


def test_a_second_compare_into_a_folder_in_use_is_refused_in_one_line(table, tmp_path):
    """A results folder's spec, studies and page are written by one comparison at a time: a second one (another
    shell, a different comparison) is refused before it trains, and the folder is free again once the first ends."""
    from flx.results.lock import hold
    from flx.results.store import Store

    out = tmp_path / "shared"
    args = [
        "compare",
        str(table),
        "--label",
        "label",
        "--families",
        "ce,focal",
        "--budget",
        "2",
        "--seeds",
        "2",
    ]
    with hold(out, "flx compare"):
        result = runner.invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 2 and f"{out} is in use by flx compare (pid " in result.output, (
            result.output
        )
        assert not Store(out).exists()
        cells = runner.invoke(app, [*args, "--cell", "steps=100", "--out", str(out)])
        assert cells.exit_code == 2 and "is in use by flx compare (pid" in cells.output
    with hold(out, "flx compare"):  # released when the holder ended
        pass


def test_fresh_seed_kinds_pick_their_verdicts_and_refuse_shared_seeds():
    from types import SimpleNamespace as V

    from flx.compare.recheck import MORE_SEEDS, RECHECK, parse_recheck, picked
    from flx.errors import ConfigError

    verdicts = [
        V(name="a", verdict="replicated", identical=False),
        V(name="b", verdict="inconclusive", identical=False),
        V(name="c", verdict="inconclusive", identical=True),  # the same model twice: more seeds cannot help
        V(name="d", verdict="contradicted", identical=False),
        V(name="e", verdict="too few seeds", identical=False),
    ]
    result = V(verdicts=verdicts)
    assert picked(result, RECHECK) == {"a", "d"} and picked(result, MORE_SEEDS) == {"b"}
    assert parse_recheck("11-20", 5, MORE_SEEDS, [6, 7, 8, 9, 10]) == list(range(11, 21))
    with pytest.raises(
        ConfigError, match=r"^--more-seeds got '9-15'; accepted: seeds apart from --recheck's 6-10"
    ):
        parse_recheck("9-15", 5, MORE_SEEDS, [6, 7, 8, 9, 10])
    with pytest.raises(ConfigError, match=r"^--more-seeds got '3-9'; accepted: a range A-B"):
        parse_recheck("3-9", 5, MORE_SEEDS)
