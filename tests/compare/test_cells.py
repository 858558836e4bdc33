"""flx compare --cell: one comparison per cell of a map, each with its own equal budgets and paired seeds, the map
page and figure gathered from them, and bad cells refused before anything trains."""

import dataclasses

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from flx.cli import app
from flx.compare.cells import parse_cells, run_cells
from flx.errors import ConfigError
from tests.compare.conftest import rare_table

runner = CliRunner()
L_SHAPE = ["steps=100,batch_size=32", "steps=200,batch_size=32", "steps=100,batch_size=64"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return rare_table(tmp_path_factory.mktemp("data") / "rare.csv", 500, 6, seed=2)


def _cells(table, out, **kw):
    options = dict(label="label", positive="1", families="ce,focal", budget=2, seeds=2, workers=1)
    return run_cells(str(table), L_SHAPE, out, **{**options, **kw})


@pytest.mark.slow
def test_each_cell_is_a_comparison_of_its_own_and_the_map_gathers_them(table, tmp_path):
    cells, results, page = _cells(table, tmp_path)
    assert [r.out.name for r in results] == [
        "steps-100_batch_size-32",
        "steps-200_batch_size-32",
        "steps-100_batch_size-64",
    ]
    for result in results:
        assert (result.out / "compare.md").exists() and (result.out / "study.db").exists()
        assert {f: len(t) for f, t in result.trials.items()} == {"ce": 2, "focal": 2}  # equal budgets
        assert {r.steps for r in result.runs.itertuples()} == {result.finals_steps}
    text = page.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "steps" not in line]
    assert len(rows) == 3 and all("focal loss beats cross-entropy" in text for _ in rows)
    for result, row in zip(results, rows, strict=True):
        verdict = next(v for v in result.verdicts if v.name == "focal loss beats cross-entropy")
        assert f"{verdict.mean:+.3f} [{verdict.low:+.3f}, {verdict.high:+.3f}]" in row
    figure = Image.open(tmp_path / "regime_map.png")
    assert figure.size[0] > figure.size[1]  # one panel per claim, side by side
    again = _cells(table, tmp_path)[1]
    assert sum(r.trained for r in again) == 0


def test_cells_are_parsed_as_one_or_two_fields_the_same_in_every_cell():
    assert parse_cells(["image_size=64,clutter=8", "image_size=96, clutter=8"]) == [
        ["image_size=64", "clutter=8"],
        ["image_size=96", "clutter=8"],
    ]
    for bad in (["image_size=64", "clutter=8"], ["a=1,b=2,c=3"], ["image_size"], ["image_size=64"] * 2):
        with pytest.raises(ConfigError):
            parse_cells(bad)


@pytest.mark.parametrize(
    "cells, extra, expected",
    [
        (["steps=100", "steps=abc"], [], "--cell steps got 'abc'"),
        (["lr=0.1", "lr=0.2"], [], "--cell got lr"),
        (["steps=100", "batch_size=32"], [], "the same one or two fields"),
        (["steps=100", "steps=200"], ["--set", "steps=50"], "--set steps and --cell steps"),
        (["model=../../x", "model=mlp"], [], "model"),
    ],
)
def test_a_bad_cell_is_refused_in_one_line_before_anything_trains(table, tmp_path, cells, extra, expected):
    out = tmp_path / "out"
    args = ["compare", str(table), "--label", "label", "--positive", "1", "--out", str(out), *extra]
    for cell in cells:
        args += ["--cell", cell]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in result.output
    assert not out.exists()


def test_a_detector_map_records_imbalance_hard_negatives_and_the_ceiling_per_cell(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from flx.compare.map import write_map
    from flx.compare.result import CompareResult
    from flx.report.claims import Verdict

    cells = parse_cells(["image_size=64,clutter=0", "image_size=128,clutter=0", "image_size=64,clutter=24"])
    results = []
    for i, cell in enumerate(cells):
        result = CompareResult(tmp_path / "_".join(cell).replace("=", "-"), ["balanced_ce", "focal"], 9, 5)
        result.out.mkdir()
        result.detection = True
        result.runs = pd.DataFrame(
            [{"loss": f, "seed": s, "status": "ok", "ap": 0.6 + 0.1 * (f == "focal") + s / 100,
              "ap50": 0.8 + i / 100, "imbalance": 500.0 * (1 + i), "hard_negatives": 100.0 * (i + 1) + (f == "focal")}
             for f in ("balanced_ce", "focal") for s in range(1, 6)]
        )  # fmt: skip
        result.verdicts = [
            Verdict("focal loss beats alpha-balanced cross-entropy", "focal", "balanced_ce", "ap", 5, 5,
                    0.1 - i / 10, 0.05 - i / 10, 0.15 - i / 10, ["replicated", "inconclusive", "contradicted"][i],
                    p=0.0625)
        ]  # fmt: skip
        results.append(result)
    from flx.compare.recheck import MORE_SEEDS, Recheck

    fresh = dataclasses.replace(
        results[0].verdicts[0], mean=0.02, low=-0.01, high=0.05, verdict="inconclusive"
    )
    results[0].fresh["recheck"] = Recheck([6, 7, 8, 9, 10], [{}], results[0].verdicts, [fresh])
    more = dataclasses.replace(
        results[1].verdicts[0], n=10, mean=0.01, low=0.004, high=0.016, verdict="replicated"
    )
    results[1].fresh["more_seeds"] = Recheck(
        list(range(11, 21)), [{}], results[1].verdicts, [more], kind=MORE_SEEDS
    )
    squares, text = {}, Axes.text
    monkeypatch.setattr(
        Axes, "text", lambda ax, x, y, s, **kw: squares.setdefault((x, y), s) and text(ax, x, y, s, **kw)
    )
    page = write_map(tmp_path, cells, results).read_text()
    # the figure marks each verdict that fresh seeds re-ran with what they found, below the finalists' verdict
    assert squares[(0, 0)].endswith("replicated\n――\nseeds 6-10:\n+0.020 inconclusive")
    assert squares[(1, 0)].endswith("inconclusive\n――\nseeds 11-20:\n+0.010 replicated")
    assert squares[(0, 1)].endswith("contradicted")
    page, more_section = page.split("## More seeds for the inconclusive verdicts")
    assert (
        "Every inconclusive verdict, re-run" in more_section and "`more_seeds/more_seeds.md`" in more_section
    )
    (row,) = [
        [c.strip() for c in line.split("|")[1:-1]] for line in more_section.splitlines() if "128" in line
    ]
    assert (
        row[0] == "image_size=128, clutter=0"
        and row[2].endswith("inconclusive")
        and row[3:]
        == [
            "11-20",
            "+0.010 [+0.004, +0.016] p 0.062, 0 + 0 failed: replicated",
        ]
    )
    assert "Not re-run yet" not in more_section
    recheck = page.split("## Re-checked on fresh seeds")[1]
    due = "1 verdict(s) in 1 cell(s) re-run. Not re-run yet (--recheck): image_size=64, clutter=24 (1 verdict(s))."
    assert due in recheck
    (row,) = [
        [c.strip() for c in line.split("|")[1:-1]] for line in recheck.splitlines() if "clutter=0 |" in line
    ]
    assert row[:2] == ["image_size=64, clutter=0", "focal loss beats alpha-balanced cross-entropy"]
    assert row[2].endswith("replicated") and row[3:] == [
        "6-10",
        "+0.020 [-0.010, +0.050] p 0.062, 0 + 0 failed: inconclusive",
    ]
    page = page.split("## Re-checked")[0]
    rows = [line for line in page.splitlines() if line.startswith("| ") and "image_size" not in line]
    assert [[c.strip() for c in r.split("|")[1:4]] for r in rows] == [
        ["64", "0", "1:500"],
        ["128", "0", "1:1,000"],
        ["64", "24", "1:1,500"],
    ]
    assert "balanced_ce 300 / focal 301" in rows[2] and "focal: 0.820" in rows[2]
    assert "-0.100 [-0.150, -0.050] p 0.062, 0 + 0 failed: contradicted; detectable ±0.050" in rows[2]
    figure = Image.open(tmp_path / "regime_map.png")  # a 2 x 2 map with one square not run
    assert figure.size[0] > 200 and figure.size[1] > 200


def test_the_makefiles_regime_map_cells_are_valid_detector_configs():
    import re
    from pathlib import Path

    from flx.compare.cells import cell_name
    from flx.compare.run import base_config, is_detection

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text().replace("\\\n", " ")
    cells = parse_cells(re.search(r"^REGIME_CELLS := (.*)$", makefile, re.M).group(1).split())
    assert len(cells) >= 5 and "clutter=0" in {c[1] for c in cells} and len({c[1] for c in cells}) >= 3
    assert len({c[0] for c in cells}) >= 3  # an L: three canvases and three clutter levels
    for cell in cells:
        config = base_config("shapes", None, None, ["steps=2400", "ohem_norm=objects", *cell])
        assert is_detection(config) and cell_name(cell).startswith("image_size-")


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/stat"), reason="needs /proc")
def test_sigterm_stops_a_detector_compare_and_its_kept_trial_workers(tmp_path):
    """A detector's trials train on one pool kept across them: SIGTERM, which may land between runs (in Optuna,
    between batches), must still stop every worker and exit 143 in one line, and a second call resume with no
    run trained twice. (Ctrl-C takes the same path: a KeyboardInterrupt becomes the same exception.)"""
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import flx_cmd, subprocess_env
    from tests.engine.test_engine import _count, _start_sweep_and_wait
    from tests.sweep.test_faults import _alive, _descendants

    out = tmp_path / "det"
    args = ["compare", "shapes", "--families", "balanced_ce,focal", "--budget", "2", "--seeds", "2"]
    args += ["--set", "image_size=32", "--set", "steps=100", "--set", "n_images=16", "--set", "hidden=8"]
    cmd = flx_cmd(*args, "--workers", "2", "--out", str(out))
    proc = _start_sweep_and_wait(cmd, out / "runs.sqlite", at_least=2, stdout=subprocess.PIPE)
    workers = _descendants(proc.pid)
    assert workers, "the trials have worker processes"
    os.kill(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    deadline = time.time() + 10
    while _alive(workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(workers), f"workers outlived the compare: {_alive(workers)}"
    assert proc.returncode == 143, output
    assert "interrupted (SIGTERM)" in output and "Traceback" not in output
    stored, distinct = _count(out / "runs.sqlite")
    again = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _count(out / "runs.sqlite") == (stored + int(again.stdout.split("(")[-1].split()[0]),) * 2


def test_a_map_square_says_when_both_sides_were_the_same_model():
    from flx.compare.map import square_text
    from flx.report.claims import Verdict

    same = Verdict("c", "focal", "balanced_ce", "ap", 5, 5, 0.0, 0.0, 0.0, "inconclusive", p=1.0)
    apart = Verdict("c", "focal", "balanced_ce", "ap", 5, 5, 0.007, -0.002, 0.016, "inconclusive", p=0.06)
    assert square_text(same) == "+0.000\n[+0.000, +0.000]\ninconclusive\n(the same model)"
    assert square_text(apart) == "+0.007\n[-0.002, +0.016]\ninconclusive"
