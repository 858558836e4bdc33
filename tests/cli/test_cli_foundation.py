import math
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from flx.cli import app
from flx.losses.anatomy import focal_term, loss_anatomy

runner = CliRunner()


def test_anatomy_numbers_against_hand_computation():
    ce, fl2 = loss_anatomy([0, 2], easy_count=100_000, hard_count=100, easy_p_t=0.9, hard_p_t=0.1)
    assert ce.easy_total == pytest.approx(100_000 * -math.log(0.9))  # 10,536
    assert ce.hard_total == pytest.approx(100 * -math.log(0.1))  # 230
    assert round(ce.easy_over_hard) == 46
    assert fl2.easy_total == pytest.approx(100_000 * 0.1**2 * -math.log(0.9))  # 105
    assert fl2.hard_total == pytest.approx(100 * 0.9**2 * -math.log(0.1))  # 187
    assert fl2.easy_over_hard < 1  # the balance flips
    assert focal_term(0.9, 2) == pytest.approx(focal_term(0.9, 0) / 100)  # "100x less loss" at p_t = 0.9


def test_anatomy_cli_prints_table():
    result = runner.invoke(app, ["anatomy", "--gamma", "0,2"])
    assert result.exit_code == 0, result.output
    assert "10,536.1" in result.output and "230.3" in result.output
    assert "105.4" in result.output and "186.5" in result.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["anatomy", "--gamma", "-1"], "--gamma got -1; accepted: a number in [0, inf]"),
        (["anatomy", "--gamma", "1,,2"], "--gamma got '1,,2'"),
        (["anatomy", "--gamma", "two"], "--gamma got 'two'; accepted: a number in [0, inf]"),
        (["anatomy", "--easy-pt", "1.5"], "--easy-pt got 1.5; accepted: a number in (0, 1)"),
        (["bench", "losses", "--sizes", "0"], "--sizes got 0; accepted: a number in [1, 1e+09]"),
        (["compare", "shapes", "--seeds", "0"], "--seeds got 0; accepted: an integer in [2, 100000]"),
        (
            ["compare", "shapes", "--recheck", "5-9"],
            "--recheck got '5-9'; accepted: a range A-B of two or more",
        ),
        (
            ["compare", "shapes", "--mlflow", "bogus://x"],
            "MLflow tracking URI 'bogus://x': unknown scheme 'bogus'",
        ),
        (["sweep", "--mlflow", "bogus://x", "--dry-run"], "MLflow tracking URI 'bogus://x': unknown scheme"),
        (
            ["runs", "results/table1d", "--where", "loss==ohem"],
            "--where got 'loss==ohem'; accepted: FIELD=VALUE",
        ),
    ],
)
def test_bad_input_one_line_exit_2(args, needle):
    proc = subprocess.run([sys.executable, "-m", "flx", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flx: error: {needle}")
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unknown_option_is_one_line_too():
    proc = subprocess.run([sys.executable, "-m", "flx", "anatomy", "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_help_and_version_do_not_import_torch():
    code = "import sys; from flx.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().endswith("False")
    t0 = time.perf_counter()
    version = subprocess.run([sys.executable, "-m", "flx", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("flx ") and version.returncode == 0
    assert time.perf_counter() - t0 < 5  # generous: the 0.5 s goal is measured in the README, not asserted


def test_bench_runs_small():
    result = runner.invoke(
        app, ["bench", "losses", "--sizes", "1000", "--min-run-time", "0.01", "--no-memory", "--no-busy"]
    )
    assert result.exit_code == 0, result.output
    for column in (
        "flx_comp",
        "tv_comp",
        "floor",
        "bce",
        "vs tv_comp",
        "comp vs tv_comp",
        "/ floor",
        "2 thr",
    ):
        assert column in result.output


def test_bench_times_each_condition_at_its_thread_count():
    """torch's benchmark Timer runs at 1 thread unless told: the timed calls must see the condition's count."""
    import torch

    from flx.bench import losses

    seen = []

    def fn(x, y, alpha, gamma, reduction):
        seen.append(torch.get_num_threads())
        return x.sum()

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        losses._time(fn, 100, 0.01)
    finally:
        torch.set_num_threads(previous)
    assert len(seen) > 1 and set(seen) == {2}
