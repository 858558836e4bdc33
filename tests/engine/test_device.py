"""--device: runs train where they are told, records say where, GPUs are shared out one worker each by default.
These tests run on the CPU; the CUDA paths are the same code with another torch.device."""

import pytest
import torch
from typer.testing import CliRunner

from flx.cli import app
from flx.engine.device import resolve_device
from flx.engine.run import run
from flx.experiment.config import Config
from flx.results.store import Store
from flx.sweep.executors import device_slots
from tests.conftest import TINY

runner = CliRunner()


def test_an_explicit_cpu_device_trains_in_workers_and_is_recorded(tmp_path):
    out = tmp_path / "runs"
    args = ["sweep", "--loss", "ce,focal", *TINY, "--device", "cpu", "--workers", "2", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 worker(s), device cpu" in result.output
    runs = Store(out).to_dataframe()
    assert set(runs["status"]) == {"ok"} and set(runs["device"]) == {"cpu"}


def test_device_values_are_checked_before_anything_runs(tmp_path):
    cases = [(["--device", "gpu"], "--device got 'gpu'; accepted: auto, cpu, cuda, cuda:N or mps")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "torch finds 0 CUDA device(s) here"))
    cases.append((["--device", "cuda:64"], "CUDA device(s) here; accepted:"))
    for args, message in cases:
        for command in ("run", "sweep"):
            result = runner.invoke(app, [command, *args, *TINY, "--out", str(tmp_path / "runs")])
            assert result.exit_code == 2, result.output
            assert message in result.output
    assert not (tmp_path / "runs").exists()


def test_auto_is_a_device_torch_has():
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == "cpu"


def test_gpus_get_per_gpu_workers_each_in_turn(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_slots("cuda", None) == ["cuda:0", "cuda:1"]  # one worker per GPU by default
    assert device_slots("cuda", None, per_gpu=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert device_slots("cuda", 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert device_slots("cuda:1", None, per_gpu=3) == ["cuda:1"] * 3
    assert (
        device_slots("cpu", None, cores=4) == ["cpu"] * 4 and device_slots("cpu", 2, cores=4) == ["cpu"] * 2
    )


def test_the_same_run_on_the_cpu_gives_the_same_metrics():
    config = Config(loss="focal", n_samples=3000, ratio=20, dim=4, epochs=2, batch_size=256)
    first, second = run(config, device="cpu"), run(config, device="cpu")
    assert first["ap"] == second["ap"] and first["device"] == "cpu"
    assert first.artefacts == second.artefacts


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_on_cuda_matches_the_cpu_closely():
    config = Config(loss="focal", n_samples=3000, ratio=20, dim=4, epochs=2, batch_size=256)
    cpu, gpu = run(config, device="cpu"), run(config, device="cuda")
    assert gpu["device"] == "cuda" and gpu["status"] == "ok"
    assert abs(cpu["ap"] - gpu["ap"]) < 0.02


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@CUDA
@pytest.mark.parametrize("loss,extra", [("focal", {}), ("ohem", {"ohem_k": 128, "ohem_nms": 0.5})])
def test_detection_losses_on_cuda_match_the_cpu(loss, extra):
    from flx.data.shapes import render
    from flx.engine.detection import assignment, batch_of
    from flx.models.retinanet import build_detector

    split = render(8, 48, seed=0)
    config = Config(dataset="shapes", loss=loss, **extra).normalized()
    torch.manual_seed(0)
    model = build_detector(config).train()
    matches = assignment(split, model.anchors_for(48))
    idx, flip = torch.arange(8), torch.tensor([0, 1] * 4, dtype=torch.bool)
    losses = {}
    for device in ("cpu", "cuda"):
        model.to(device)
        images, matched, boxes = batch_of(split, idx, flip, matches, device)
        out = model.batch_loss(model.inputs(images), matched, boxes)
        losses[device] = [float(out[k].detach()) for k in ("classification", "bbox_regression")]
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-3)


@CUDA
def test_a_short_detection_run_on_cuda():
    config = Config(
        dataset="shapes", n_images=64, steps=30, eval_every=15, loss="ohem", ohem_k=128, ohem_nms=0.5
    )
    record = run(config.normalized(), device="cuda")
    assert record["status"] == "ok" and record["device"] == "cuda" and record["anchors_per_image"] == 6480
