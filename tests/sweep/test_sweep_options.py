"""Sweep options that behave: a comma list for every config field (named options and --set), and one note per
sweep for loss options that do not apply."""

import math

import pytest
from typer.testing import CliRunner

from flx.cli import app, main
from flx.experiment.config import CONFIG_FIELDS, Config
from flx.experiment.params import PARAMS
from flx.experiment.plan import inapplicable, parse_sets

runner = CliRunner()


def _two_values(name: str) -> list[str]:
    """Two distinct valid values of a field, as typed on a command line."""
    p = PARAMS[name]
    if p.choices is not None:
        return [str(v) for v in p.choices()[:2]]
    if p.text:
        return ["first", "second"]
    low = p.low if math.isfinite(p.low) else -10.0
    high = p.high if math.isfinite(p.high) else low + 100
    if p.kind is int:
        a = math.ceil(low) + (1 if p.open_low else 0)
        return [str(a), str(a + 1)]
    a = low + (high - low) / 4
    return [f"{a:g}", f"{low + (high - low) / 2:g}"]


@pytest.mark.parametrize("name", [f for f in CONFIG_FIELDS if f != "seed" and not PARAMS[f].whole])
def test_every_config_field_takes_a_list_with_set(name):
    values = _two_values(name)
    parsed = parse_sets([f"{name}={','.join(values)}"])
    assert list(parsed) == [name] and len(parsed[name]) == 2
    expected = [PARAMS[name].check(v) for v in values]
    assert parsed[name] == expected


def test_a_list_in_itself_is_one_value_of_a_sweep():
    """--drop a,b leaves two columns out of one run; it is not a grid of two runs."""
    assert parse_sets(["drop=a, b"]) == {"drop": ["a,b"]}


def test_named_options_take_lists_too(tmp_path):
    result = runner.invoke(
        app,
        [
            "sweep", "--dry-run", "--out", str(tmp_path), "--n-samples", "1000,2000", "--lr", "0.1,0.01",
            "--batch-size", "64,128", "--optimizer", "sgd,adam", "--set", "data_seed=0,1", "--loss", "ce",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "32 runs planned" in result.output


def test_note_for_loss_options_that_do_not_apply():
    ce = Config(loss="ce").normalized()
    focal = Config(loss="focal").normalized()
    assert inapplicable([ce], ["gamma", "lr"]) == "--gamma does not apply to ce and is ignored"
    assert inapplicable([ce, focal], ["gamma"]) == "--gamma applies to focal only, not ce"
    assert inapplicable([focal], ["gamma", "alpha"]) is None
    assert inapplicable([ce, focal], ["lr", "dataset"]) is None
    # issue 22, item 11: options a data set does not use get the same note as a loss's
    shapes = Config(dataset="shapes").normalized()
    assert inapplicable([shapes], ["epochs"]) == "--epochs does not apply to shapes and is ignored"
    assert inapplicable([ce], ["steps", "n_samples"]) == "--steps does not apply to synthetic and is ignored"
    assert inapplicable([ce, shapes], ["lr"]) is None
    assert inapplicable([ce, shapes], ["n_images"]) == "--n-images applies to shapes only, not synthetic"


def test_sweep_prints_the_note_once(tmp_path):
    result = runner.invoke(
        app,
        [
            "sweep",
            "--dry-run",
            "--out",
            str(tmp_path),
            "--n-samples",
            "1000",
            "--loss",
            "ce",
            "--gamma",
            "0,2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("note: --gamma does not apply to ce and is ignored") == 1
    assert "1 runs planned" in result.output or "1 run planned" in result.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sweep", "--dry-run", "--set", "bogus=1"], "--set got field 'bogus'; accepted: one of dataset"),
        (["sweep", "--dry-run", "--set", "lr"], "--set got 'lr'; accepted: FIELD=VALUE"),
        (["sweep", "--dry-run", "--set", "lr=abc"], "--set lr got 'abc'; accepted: a number"),
        (["sweep", "--dry-run", "--set", "lr=0.1", "--set", "lr=0.2"], "--set gives lr twice"),
        (
            ["sweep", "--dry-run", "--lr", "0.1", "--set", "lr=0.2"],
            "lr given both as an option and with --set",
        ),
        (["sweep", "--dry-run", "--set", "seed=1"], "--set got field 'seed'"),
        (["run", "--set", "lr=0.1,0.2"], "--set lr got '0.1,0.2'; accepted: one value"),
    ],
)
def test_bad_set_is_one_line_exit_2(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("flx: error: ") and needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "command", [["run"], ["sweep"], ["report"], ["runs"], ["migrate"], ["anatomy"], ["bench", "losses"]]
)
def test_help_shows_flags_as_flags_and_one_style_of_defaults(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = capsys.readouterr().out
    assert "--help" in text and "<bool>" not in text and "[default:" not in text
    flat = " ".join(text.split())
    if command == ["run"]:
        assert "--store / --no-store" in flat and "(default: focal)" in flat


@pytest.mark.parametrize(
    "command", [["sweep"], ["run"], ["compare"], ["runs"], ["report"], ["bench", "detection"]]
)
def test_help_shows_what_each_option_takes(command, capsys):
    """Each option's real type (INT, FLOAT, PATH, a choice), never the text it is parsed as; config fields in
    panels."""
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = capsys.readouterr().out
    options = text[text.index("Options:") :]
    assert "<str>" not in options and "<int" not in options and "<list" not in options
    if command == ["sweep"]:
        assert "--workers INT" in text and "--gamma FLOAT,..." in text and "--out PATH" in text
        assert [t for t in ("Sweep:", "Data:", "Model:", "Loss:", "Training:") if t in text] == [
            "Sweep:",
            "Data:",
            "Model:",
            "Loss:",
            "Training:",
        ]
    if command == ["compare"]:
        assert "--budget INT" in text and "--seeds N|A-B" in text


def test_shell_completion_can_be_installed(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--install-completion" in capsys.readouterr().out


def test_seeds_take_a_range_for_fresh_seeds(tmp_path):
    """--seeds 5-9 plans seeds 5..9 (a re-check of a verdict on fresh seeds); a spec takes "5-9" too; a range
    that runs backwards or text is one line, exit 2."""
    from flx.experiment.params import check_seeds, seed_list
    from flx.experiment.plan import plan
    from flx.experiment.spec import validate_spec

    assert seed_list(check_seeds("5-9")) == [5, 6, 7, 8, 9] and seed_list(check_seeds(3)) == [0, 1, 2]
    spec = validate_spec({"seeds": "5-6", "grid": [{"loss": ["ce", "focal"]}]})
    assert sorted({c.seed for c in plan(spec)}) == [5, 6]
    result = runner.invoke(app, ["sweep", "--seeds", "5-7", "--dry-run", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0 and "3 runs planned" in result.output, result.output
    for bad in ("9-5", "x", "0"):
        result = runner.invoke(app, ["sweep", "--seeds", bad, "--dry-run", "--out", str(tmp_path / "r")])
        assert result.exit_code == 2 and "--seeds got" in result.output and bad in result.output


def test_one_options_object_from_the_command_line_to_the_executors():
    """`flx sweep`'s options become one SweepOptions (checked before torch), which sweep() and run_sweep() take;
    each executor in one map knows its slots and start-up, so the sweep itself names none of them."""
    import ast
    import inspect

    import flx.sweep.run
    from flx.errors import ConfigError
    from flx.sweep import SweepOptions
    from flx.sweep.executors import EXECUTORS

    options = SweepOptions.parse(workers="2", device="cpu", per_gpu=None, out="runs/x")
    assert (options.workers, options.device, options.per_gpu, options.out) == (2, "cpu", 1, "runs/x")
    with pytest.raises(ConfigError, match="--workers got"):
        SweepOptions.parse(workers="many")
    with pytest.raises(ConfigError, match="--ray-address is for --executor ray"):
        SweepOptions(ray_address="auto")
    with pytest.raises(ConfigError, match="--executor got 'slurm'"):
        SweepOptions(executor="slurm")
    assert set(EXECUTORS) == {"local", "ray"}
    assert all(hasattr(e, m) for e in EXECUTORS.values() for m in ("slots", "copies", "start"))
    code = ast.parse(inspect.getsource(flx.sweep.run))
    names = {n.id for n in ast.walk(code) if isinstance(n, ast.Name)} | {
        n.value for n in ast.walk(code) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert not {"ray", "RayExecutor", "backend"} & names


def test_runs_trained_in_this_process_load_their_data_once(tmp_path, monkeypatch):
    """A sweep whose runs train in this process (one worker, or flx compare's trials) keeps the data it checked
    for them: the data set is loaded once for the sweep, not once to check and again per run."""
    import flx.data.load as L
    from flx.experiment.config import Config
    from flx.results.store import Store
    from flx.sweep import run_sweep

    calls, real = [], L.get_dataset

    class Counting:
        def __init__(self, spec):
            self.spec = spec

        def __getattr__(self, name):
            return getattr(self.spec, name)

        def load(self, **kwargs):
            calls.append(1)
            return self.spec.load(**kwargs)

    monkeypatch.setattr(L, "get_dataset", lambda name: Counting(real(name)))
    L.load.cache_clear()
    small = {"n_samples": 3000, "ratio": 20.0, "dim": 4, "epochs": 1, "batch_size": 256}
    configs = [Config(loss=loss, **small).normalized() for loss in ("ce", "focal")]
    done = run_sweep(configs, Store(tmp_path), workers=1)
    assert done.counts["ok"] == 2 and len(calls) == 1
