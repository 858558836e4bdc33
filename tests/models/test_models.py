"""Your model and your registry entries: torchvision's classifiers by name (with weights files), module:function
paths and flx.register_* decorators, working in spawned sweep workers the same way."""

import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from flx.cli import app
from flx.errors import ConfigError, DataError
from flx.experiment.config import Config
from flx.models.classifiers import build_model, prior_bias
from flx.results.store import Store
from tests.conftest import TINY, subprocess_env
from tests.data.test_yourdata import make_folder

runner = CliRunner()

PLUGIN = textwrap.dedent(
    '''
    import torch
    import flx


    @flx.register_loss("sq_hinge", params={"gamma": 1.0})
    def sq_hinge(logits, targets, reduction="mean", gamma=1.0):
        """squared hinge on -1/+1 targets"""
        loss = torch.clamp(1 - (2 * targets - 1) * logits, min=0) ** (1 + gamma)
        return loss.mean() if reduction == "mean" else loss


    @flx.register_model("wide")
    def wide(input_shape, hidden):
        return torch.nn.Sequential(
            torch.nn.Linear(input_shape[0], 2 * hidden), torch.nn.ReLU(), torch.nn.Linear(2 * hidden, 1)
        )


    def linear(input_shape):
        return torch.nn.Linear(input_shape[0], 1)


    @flx.register_dataset("blobs", params={"ratio": 30.0, "n_samples": 1500})
    def blobs(ratio, n_samples, data_seed):
        g = torch.Generator().manual_seed(data_seed)

        def split():
            y = (torch.rand(n_samples, generator=g) < 1 / (1 + ratio)).float()
            return torch.randn(n_samples, 4, generator=g) + 2 * y[:, None], y

        return split(), split()
    '''
)


def flx_isolated(cwd, *args):
    """flx as its console script runs it: -I keeps the working folder off sys.path (flx adds it itself)."""
    code = "import sys; from flx.cli import main; sys.argv[0] = 'flx'; main()"
    return subprocess.run(
        [sys.executable, "-I", "-c", code, *args], cwd=cwd, capture_output=True, text=True,
        env=subprocess_env(), timeout=600,
    )  # fmt: skip


def test_module_function_models_and_registered_entries_train_in_workers(tmp_path):
    (tmp_path / "mylab.py").write_text(PLUGIN)
    out = tmp_path / "runs"
    args = ["--loss", "sq_hinge,focal", "--model", "wide,mylab:linear", *TINY, "--workers", "2"]
    result = flx_isolated(tmp_path, "--plugin", "mylab", "sweep", *args, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on 2 worker(s)" in result.stdout
    runs = Store(out).to_dataframe()
    assert len(runs) == 4 and set(runs["status"]) == {"ok"}, runs[["model", "loss", "status", "error"]]
    assert set(runs["model"]) == {"wide", "mylab:linear"} and set(runs["loss"]) == {"sq_hinge", "focal"}
    assert runs.loc[runs["loss"] == "sq_hinge", "gamma"].tolist() == [1.0, 1.0]  # the registered default
    blobs = flx_isolated(tmp_path, "--plugin", "mylab", "sweep", "--dataset", "blobs", "--workers", "2",
                         "--loss", "ce,sq_hinge", "--epochs", "2", "--out", str(tmp_path / "b"))  # fmt: skip
    assert blobs.returncode == 0, blobs.stdout + blobs.stderr
    assert "registered (mylab.blobs)" in blobs.stdout
    assert set(Store(tmp_path / "b").to_dataframe()["status"]) == {"ok"}
    # without the plugin the names are unknown, with a hint; a module that does not import is one line
    missing = flx_isolated(tmp_path, "sweep", "--loss", "sq_hinge", "--out", str(out))
    assert missing.returncode == 2 and "--loss got 'sq_hinge'" in missing.stderr
    bad = flx_isolated(tmp_path, "--plugin", "nomodule", "sweep", "--out", str(out))
    assert bad.returncode == 2 and "plugin 'nomodule' cannot be imported" in bad.stderr
    assert "Traceback" not in bad.stderr + missing.stderr


def test_bad_model_names_are_refused_before_training(tmp_path):
    cases = [
        (
            ["--model", "resnet81", "--data", str(make_folder(tmp_path / "f", {"a": 5, "b": 5}))],
            "did you mean resnet18",
        ),
        (["--model", "nomodule:build"], "cannot be imported (ModuleNotFoundError"),
        (["--model", "tests.models.test_models:PLUGIN"], "is not a function"),
        (["--model", "a:b:c"], "accepted: module:function"),
        (["--model", "resnet18"], "torchvision's models take images"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["sweep", *args, "--out", str(tmp_path / "runs")])
        assert result.exit_code == 2, result.output
        assert message in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_a_torchvision_model_trains_on_an_image_folder(tmp_path):
    root = make_folder(tmp_path / "pics", {"ok": 30, "defect": 8}, size=16)
    config = Config(data=str(root), model="resnet18", image_size=16, steps=4, eval_every=2).normalized()
    assert config.backbone == "scratch" and config.weights is None  # end to end on the images
    out = tmp_path / "runs"
    result = runner.invoke(app, ["run", "--data", str(root), "--model", "resnet18", "--image-size", "16",
                                 "--steps", "4", "--eval-every", "2", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = Store(out).to_dataframe().iloc[0]
    assert record["status"] == "ok" and record["model"] == "resnet18" and 0 <= record["ap"] <= 1


def test_torchvision_weights_from_a_file_get_a_one_logit_head_at_the_prior(tmp_path, monkeypatch):
    import torchvision

    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)  # ImageNet-shaped: 1000 classes
    model = build_model("resnet18", (3, 16, 16), 64, 0.01, weights=str(path))
    assert model(torch.zeros(3, 3, 16, 16)).shape == (3,)
    assert model.model.fc.out_features == 1 and model.model.fc.bias.item() == pytest.approx(prior_bias(0.01))
    saved = torch.load(path)["layer1.0.conv1.weight"]
    assert torch.equal(model.model.layer1[0].conv1.weight, saved)  # the file's weights, not random ones
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(DataError, match="ImageNet weights for resnet18 are not in the torch hub cache"):
        build_model("resnet18", (3, 16, 16), 64, 0.01, weights="imagenet")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot load it into torchvision's resnet18"):
        build_model("resnet18", (3, 16, 16), 64, 0.01, weights=str(tmp_path / "junk.pt"))


def test_a_model_must_give_one_logit_per_example():
    import flx

    @flx.register_model("two_outputs_for_test")
    def two(input_shape):
        return torch.nn.Linear(input_shape[0], 2)

    with pytest.raises(ValueError, match=r"output of shape \(2, 2\).*one logit per example"):
        build_model("two_outputs_for_test", (4,), 8, 0.01)
    with pytest.raises(ConfigError, match="already a model"):
        flx.register_model("mlp")(two)
    with pytest.raises(ConfigError, match="not config fields"):
        flx.register_loss("x_for_test", params={"temperature": 1.0})


BROKEN = textwrap.dedent(
    '''
    import torch
    import flx


    def two_logits(input_shape):
        return torch.nn.Linear(input_shape[0], 2)


    def not_a_module(input_shape):
        return "a string"


    def raises(input_shape):
        raise RuntimeError("no GPU kernel for this layer")


    @flx.register_loss("always_nan")
    def always_nan(logits, targets, reduction="mean"):
        """a loss that fails every run"""
        raise FloatingPointError("this loss always fails")
    '''
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,message",
    [
        ("broken:two_logits", "output of shape"),
        ("broken:not_a_module", "must return a torch.nn.Module"),
        ("broken:raises", "no GPU kernel for this layer"),
    ],
)
def test_a_model_that_cannot_work_is_refused_before_any_run(tmp_path, model, message):
    """Issue 22, item 6: built once in the parent, on the data, before the sweep starts: one line, exit 2,
    nothing stored."""
    (tmp_path / "broken.py").write_text(BROKEN)
    result = flx_isolated(
        tmp_path, "sweep", "--model", model, *TINY, "--seeds", "2", "--out", str(tmp_path / "r")
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--model {model} cannot be used" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "runs.sqlite").exists() or not Store(tmp_path / "r").records()


@pytest.mark.slow
def test_a_sweep_whose_every_run_fails_exits_non_zero(tmp_path):
    (tmp_path / "broken.py").write_text(BROKEN)
    out = tmp_path / "r"
    result = flx_isolated(tmp_path, "--plugin", "broken", "sweep", "--loss", "always_nan", *TINY, "--seeds", "2",
                          "--workers", "1", "--out", str(out))  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "flx: sweep: every run failed (2 failed)" in result.stderr and "Traceback" not in result.stderr
    assert {r["status"] for r in Store(out).records()} == {"failed"}
