"""flx compare v2: the stored study (reopened with a larger budget), the paper's settings queued first, --set and
--drop, OHEM on a detector, and a compare folder that flx report re-renders."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from flx.cli import app
from flx.compare import run_compare
from flx.errors import ConfigError
from tests.compare.conftest import rare_table

runner = CliRunner()


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "rare.csv"
    return rare_table(path, 600, 6, seed=1, row=range(600), noise=range(600, 0, -1))


def _compare(table, out, **kw):
    options = dict(label="label", positive="1", families="ce,focal", budget=3, seeds=2, workers=1)
    options["sets"] = ["steps=300"]
    return run_compare(str(table), out=out, **{**options, **kw})


@pytest.mark.slow
def test_the_study_is_stored_and_a_larger_budget_trains_only_the_new_trials(table, tmp_path):
    import optuna

    events = []
    first = _compare(table, tmp_path, on_event=lambda kind, **f: events.append((kind, f)))
    assert [t["fields"] for t in first.trials["focal"]][0] == {"lr": 0.001, "gamma": 2.0, "alpha": 0.25}
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.load_study(study_name="focal", storage=storage)  # what optuna-dashboard opens
    assert len(study.trials) == 3 and study.trials[0].params == {"lr": 0.001, "gamma": 2.0, "alpha": 0.25}
    assert [t.user_attrs["key"] for t in study.trials] == [t["key"] for t in first.trials["focal"]]
    events.clear()
    more = _compare(table, tmp_path, budget=5, on_event=lambda kind, **f: events.append((kind, f)))
    fresh = [f for kind, f in events if kind == "trial" and not f["stored"]]
    assert [(f["family"], f["trial"]) for f in fresh] == [("ce", 4), ("ce", 5), ("focal", 4), ("focal", 5)]
    assert more.trials["focal"][:3] == first.trials["focal"]  # the stored trials, as they were
    finals_trained = more.trained - 4
    assert finals_trained in (0, 2, 4)  # only a family whose finalist changed retrains its seeds
    assert len(optuna.load_study(study_name="ce", storage=storage).trials) == 5
    again = _compare(table, tmp_path, budget=5)
    assert again.trained == 0 and again.finalists == more.finalists


def test_an_interrupted_trial_is_closed_and_its_setting_queued_again(tmp_path):
    import optuna

    from flx.compare.study import open_study

    study = open_study(tmp_path, "focal", "abc", optuna.samplers.TPESampler(seed=0), None, [{"alpha": 0.3}])
    trial = study.ask()  # the queued setting, never told: the process was killed
    assert trial.suggest_float("alpha", 0.05, 0.95) == 0.3
    again = open_study(tmp_path, "focal", "abc", optuna.samplers.TPESampler(seed=0), None, [{"alpha": 0.3}])
    states = [t.state for t in again.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert again.ask().suggest_float("alpha", 0.05, 0.95) == 0.3
    more = open_study(
        tmp_path, "focal", "abc", optuna.samplers.TPESampler(seed=0), None, [{"alpha": 0.3}, {"alpha": 0.6}]
    )
    waiting = [
        t.system_attrs["fixed_params"] for t in more.trials if t.state == optuna.trial.TrialState.WAITING
    ]
    # the trial left running (0.3) queued again once, and the new setting; the queue's 0.3 is not repeated
    assert waiting == [{"alpha": 0.3}, {"alpha": 0.6}]
    from types import SimpleNamespace

    from flx.compare.study import finish

    record = SimpleNamespace(val_ap=0.5, key="k")
    assert (
        finish(again, trial, {"alpha": 0.3}, record, "ok")["val_ap"] == 0.5
    )  # closed by the other call: no error
    with pytest.raises(ConfigError, match="holds a comparison of other data"):
        open_study(tmp_path, "focal", "other", optuna.samplers.TPESampler(seed=0), None, [])


def test_set_drop_and_queue_are_checked_before_anything_trains(table, tmp_path):
    from flx.compare.run import base_config
    from flx.compare.space import parse_queue

    config = base_config(str(table), "label", "1", ["steps=50", "hidden=8"], "row, noise")
    assert (config.steps, config.hidden, config.drop) == (50, 8, "row,noise")
    for sets, message in (
        (["lr=0.1"], "--set got lr"),
        (["gamma=2"], "--set got gamma"),
        (["stepz=1"], "stepz"),
    ):
        with pytest.raises(ConfigError, match=message):
            base_config(str(table), "label", "1", sets)
    assert parse_queue(["focal:gamma=1, alpha=0.5"], ["ce", "focal"]) == {
        "focal": [{"gamma": 1.0, "alpha": 0.5}]
    }
    for bad in ("focal", "focal:beta=1", "ohem:ohem_k=128", "focal:gamma=-1"):
        with pytest.raises(ConfigError, match="--queue"):
            parse_queue([bad], ["ce", "focal"])
    result = runner.invoke(app, ["compare", str(table), "--label", "label", "--families", "ce,ohem"])
    assert result.exit_code == 2 and "ohem: detection data" in result.output
    result = runner.invoke(
        app, ["compare", str(table), "--label", "label", "--set", "seed=3", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "--set got seed" in result.output and not (tmp_path / "x").exists()


def test_drop_leaves_columns_out_and_the_record_says_so(table, tmp_path):
    result = runner.invoke(
        app,
        [
            "run",
            "--data",
            str(table),
            "--label",
            "label",
            "--drop",
            "noise",
            "--steps",
            "20",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    from flx.results.store import Store

    (record,) = Store(tmp_path).records()
    assert "noise (--drop)" in record.data_prep and "row (" in record.data_prep  # the row number: ID-like
    bad = runner.invoke(
        app, ["run", "--data", str(table), "--label", "label", "--drop", "nope", "--no-store"]
    )
    assert bad.exit_code == 2 and "--drop 'nope' is not a column" in bad.output
    plan = runner.invoke(
        app,
        [
            "sweep",
            "--data",
            str(table),
            "--label",
            "label",
            "--drop",
            "noise,row",
            "--dry-run",
            "--out",
            str(tmp_path),
        ],
    )
    assert plan.exit_code == 0 and "1 run" in plan.output  # one value, not a grid of two


@pytest.mark.slow
def test_a_detector_compare_with_ohem_runs_and_flx_report_re_renders_its_folder(tmp_path):
    out = tmp_path / "det"
    args = ["compare", "shapes", "--families", "balanced_ce,focal,ohem", "--budget", "2", "--seeds", "2"]
    args += ["--set", "image_size=32", "--set", "steps=20", "--set", "n_images=16", "--set", "hidden=8"]
    result = runner.invoke(app, [*args, "--workers", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "compare.md").read_text()
    assert "focal loss beats OHEM" in page and "the learning rate is the data set's for every family" in page
    assert "ohem: ohem_k 128, ohem_nms 0.5, ohem_ratio none" in page  # Table 1d's best row, tried first
    assert "No baseline" in page and "images (" in page
    assert "2 trained side by side" in page  # a detector's trials use every core (2 workers here)
    spec = (out / "spec.toml").read_text()
    assert "resample = true" in spec and 'ratio = "none"' not in spec
    report = runner.invoke(app, ["report", str(out), "--format", "md,latex", "--no-plots"])
    assert report.exit_code == 0, report.output
    table = (out / "table.md").read_text()
    assert all(f"| {loss} " in table for loss in ("balanced_ce", "focal", "ohem"))
    assert "| 2   |" in table or "| 2 " in table  # both paired seeds in one row per family
    assert "focal loss beats OHEM" in table
    assert r"\resizebox" not in (out / "table.tex").read_text()
    assert "focal loss beats OHEM" in (out / "claims.tex").read_text()


def _result(tmp_path, trials, runs=None):
    from flx.compare.result import CompareResult

    result = CompareResult(tmp_path, ["ce", "focal"], len(trials), 2, runs=runs)
    result.trials = {"ce": [{**t, "fields": {"lr": 0.001}} for t in trials], "focal": trials}
    return result


def _trial(n, alpha, gamma, ap, status="ok"):
    return {
        "trial": n,
        "fields": {"lr": 0.001, "alpha": alpha, "gamma": gamma},
        "val_ap": ap,
        "status": status,
    }


def test_the_focal_figure_is_a_heat_map_only_where_cells_hold_two_trials(tmp_path):
    """One trial per cell: a scatter (a heat map would show single trials as areas); two in a cell: that cell
    only. The colour scale never leaves [0, 1]."""
    import numpy as np

    from flx.compare.figures import colour_range, focal_figure, heat_cells, shown_cells

    assert colour_range([0.2, 0.9]) == (0.2, 0.9) and colour_range([1.0]) == (0.99, 1.0)
    assert colour_range([float("nan")]) == (0.0, 1.0) and colour_range([0.0, 0.0]) == (0.0, 0.01)
    spread = [_trial(1, 0.1, 0.5, 0.3), _trial(2, 0.6, 3.5, 0.5), _trial(3, 0.9, 4.5, 0.4)]
    assert not np.isfinite(shown_cells(*heat_cells(spread))).any()  # one trial per cell: a scatter
    assert focal_figure(_result(tmp_path, spread)).exists()
    paired = [*spread, _trial(4, 0.12, 0.6, 0.35)]
    cells = shown_cells(*heat_cells(paired))
    assert int(np.isfinite(cells).sum()) == 1 and cells[0, 0] == 0.35  # the one cell of two trials
    assert focal_figure(_result(tmp_path, paired)).exists()


def test_the_tuning_plot_shows_the_seed_noise_of_each_finalist(tmp_path):
    from flx.compare.figures import seed_noise, tuning_figure

    runs = pd.DataFrame(
        {
            "loss": ["ce", "ce", "focal", "focal"],
            "status": "ok",
            "val_ap": [0.50, 0.54, 0.6, 0.6],
            "seed": [1, 2, 1, 2],
        }
    )
    result = _result(tmp_path, [_trial(1, 0.25, 2.0, 0.5), _trial(2, 0.5, 1.0, 0.501)], runs)
    assert seed_noise(result, "ce") == pytest.approx(0.0283, abs=1e-4) and seed_noise(result, "focal") == 0
    assert tuning_figure(result).exists()


def test_a_setting_tpe_proposes_again_is_not_a_trial_of_the_budget():
    """TPE on a categorical space proposes settings it has tried (alpha-CE's 9 alphas): such a repeat is closed as
    failed and asked again, so each family's budget holds distinct settings while its space has them."""
    import optuna

    from flx.compare.run import _ask_new

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3)
    )
    alphas = [0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.999]
    seen = [{"alpha": a} for a in alphas[:-1]]
    trial, fields = _ask_new(study, "balanced_ce", True, seen)
    assert fields == {"alpha": 0.999}  # the one left
    study.tell(trial, 0.5)
    assert all(t.user_attrs.get("repeat") for t in study.get_trials(states=(optuna.trial.TrialState.FAIL,)))
    trial, fields = _ask_new(study, "balanced_ce", True, [*seen, fields])  # nothing left: a repeat, at last
    assert fields in [*seen, {"alpha": 0.999}]


def test_a_field_of_one_family_set_for_the_comparison_reaches_that_familys_runs():
    """--set ohem_norm=objects: the comparison's base is normalised for the default loss, which blanked it."""
    from flx.compare.run import base_config
    from flx.experiment.config import Config

    base = base_config("shapes", None, None, ["ohem_norm=objects"])
    assert Config(**{**base.to_dict(), "loss": "ohem"}).normalized().ohem_norm == "objects"
    assert Config(**{**base.to_dict(), "loss": "focal"}).normalized().ohem_norm is None


def test_the_finalists_spec_keeps_a_field_fixed_for_one_family():
    """The spec written before the finals holds OHEM's fixed ohem_norm in OHEM's grid entry (else `flx report` of
    the folder would plan OHEM runs without it and find them missing), and nobody else's."""
    from flx.compare.result import CompareResult
    from flx.compare.run import base_config

    base = base_config("shapes", None, None, ["ohem_norm=objects"])
    result = CompareResult(__import__("pathlib").Path("x"), ["focal", "ohem"], 8, 2, resampled=0.0)
    result.finalists = {
        "focal": {"gamma": 1.0, "alpha": 0.25},
        "ohem": {"ohem_k": 128, "ohem_nms": 0.5, "ohem_ratio": None},
    }
    spec = result.finals_spec(base, ["focal", "ohem"], "1-2", [], name="compare", description="d")
    focal, ohem = spec["grid"]
    assert ohem["ohem_norm"] == ["objects"] and "ohem_norm" not in focal and focal["gamma"] == [1.0]
    assert "ohem_norm" not in spec["config"] and spec["resample"] is True
    assert result.finalist(base, "ohem", 3).data_seed == 3


def test_an_interrupted_trial_is_tried_again_before_the_settings_queued_behind_it(tmp_path):
    """A call stopped while queued trials train leaves them running; the next call closes them as failed and
    queues them again. They must come back first, before the queued settings that were waiting behind them: else
    a queue longer than the budget (OHEM's 10 Table 1d points, budget 8) trades the interrupted points for the
    last ones, which were put last to be cut (in the v4 map's 96 px cell OHEM so tried B 256 and 512 with 1:3,
    identical runs, instead of B 128 with NMS 0.7 and with 1:3)."""
    import optuna

    from flx.compare.space import paper_trials, suggest
    from flx.compare.study import open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    queued = paper_trials("ohem", True)

    def study():
        sampler = optuna.samplers.TPESampler(seed=0, constant_liar=True)
        return open_study(tmp_path, "ohem", "base", sampler, optuna.pruners.NopPruner(), queued)

    first = study()
    for _ in range(2):
        trial = first.ask()
        suggest(trial, "ohem", True)
        first.tell(trial, 0.5)
    running = [first.ask() for _ in range(2)]  # queued points 3 and 4 train side by side, and the call stops
    for trial in running:
        suggest(trial, "ohem", True)
    again = study()
    order = []
    for _ in range(8):
        trial = again.ask()
        order.append(suggest(trial, "ohem", True))
        again.tell(trial, 0.5)
    assert order == queued[2:10]
    assert len(again.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 10
