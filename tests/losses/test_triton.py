"""The Triton kernel (CUDA GPUs) run on the CPU by Triton's interpreter, against the float64 formula; skipped where
Triton is not installed. ``make gpu-check`` runs the CUDA path itself (tests/test_device.py)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flx.losses import _triton
from flx.losses._kernel import fused_pass, sigmoid_focal_elements

pytest.importorskip("triton")


def _inputs(n: int, soft: bool):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g, dtype=torch.float64) * 12
    x[:4] = torch.tensor([math.inf, -math.inf, 80.0, -80.0], dtype=torch.float64)
    y = (torch.rand(n, generator=g) < 0.3).double()
    if soft:
        y[::7] = torch.rand(len(y[::7]), generator=g, dtype=torch.float64)
    return x, y


def _worst(ours, ref, finite) -> float:
    """The largest relative error over the finite elements, near 0 relative to 1e-4 of the largest value (a soft
    target's gradient crosses 0, where any two float32 orders of the same formula differ relatively)."""
    floor = 1e-4 * ref[finite].abs().max()
    return ((ours.double() - ref).abs() / (ref.abs() + floor))[finite].max().item()


def _check(gamma, alpha, epsilon, soft):
    """Loss and gradient against the float64 formula on the same (float32) inputs, no worse than the CPU kernel's
    float32 (2x its error plus 1e-5: with epsilon < 0 both lose digits to cancellation alike), and the sum."""
    x, y = _inputs(3000, soft)  # three blocks, the last one partial
    x, y = x.float().double(), y.float().double()  # the float32 inputs, exactly
    scale = 1 / 3000
    xr = x.clone().requires_grad_()
    ref = sigmoid_focal_elements(xr, y, alpha, gamma, epsilon)
    (ref_grad,) = torch.autograd.grad(ref.sum() * scale, xr)
    x32, y32 = x.float(), y.float()
    out, grad = torch.empty_like(x32), torch.empty_like(x32)
    _triton.triton_pass(x32, y32, alpha, gamma, epsilon, scale, out, grad)
    cpu, cpu_grad = fused_pass(x32, y32, alpha, gamma, epsilon, scale, True, True)
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(out))
    assert _worst(out, ref, finite) <= 2 * _worst(cpu, ref, finite) + 1e-5
    # where the loss is infinite the kernel gives the gradient's limit, as the CPU kernel does; autograd's is 0
    assert _worst(grad, ref_grad, finite) <= 2 * _worst(cpu_grad, ref_grad, finite) + 1e-5
    total, _ = _triton.triton_pass(x32, y32, alpha, gamma, epsilon, scale, None, None)
    assert total.dtype == torch.float64
    torch.testing.assert_close(total, out.double().sum(), rtol=1e-12, atol=0)


def check_all() -> int:
    """Every case; run in a process started with TRITON_INTERPRET=1 (Triton reads it when it is imported)."""
    cases = [(g, *rest) for g in (0.0, 1.0, 2.0, 0.5, 3.5) for rest in CASES]
    for case in cases:
        _check(*case)
    return len(cases)


CASES = [(0.25, 0.0, False), (-1.0, 1.0, True), (0.75, -0.5, True)]  # (alpha, epsilon, soft targets)


def test_the_triton_kernel_matches_the_float64_formula_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    code = "import tests.losses.test_triton as t; print(t.check_all(), 'cases')"
    root = Path(__file__).resolve().parents[2]  # where ``tests`` imports from
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "15 cases"


def test_the_kernel_is_used_only_for_float32_on_cuda(monkeypatch):
    assert not _triton.usable(torch.zeros(2))
    if torch.cuda.is_available():
        assert _triton.usable(torch.zeros(2, device="cuda"))
        assert not _triton.usable(torch.zeros(2, device="cuda", dtype=torch.float64))
        monkeypatch.setenv("FLX_TRITON", "0")
        assert not _triton.usable(torch.zeros(2, device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_on_cuda_the_loss_runs_the_triton_kernel_and_matches_the_cpu(monkeypatch, reduction):
    from flx import losses as L
    from flx.losses import _kernel

    calls = []
    monkeypatch.setattr(_kernel, "triton_pass", lambda *a: calls.append(1) or _triton.triton_pass(*a))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300_000, generator=g) * 6, (torch.rand(300_000, generator=g) < 0.01).float()
    results = {}
    for device, triton in (("cpu", "1"), ("cuda", "1"), ("cuda", "0")):
        monkeypatch.setenv("FLX_TRITON", triton)
        xd = x.to(device).requires_grad_()
        loss = L.sigmoid_focal_loss(xd, y.to(device), alpha=0.25, gamma=2.0, reduction=reduction)
        (grad,) = torch.autograd.grad(loss.sum(), xd)
        results[device, triton] = loss.detach().cpu(), grad.cpu()
    assert calls, "the CUDA pass did not run the Triton kernel"
    for key in (("cuda", "1"), ("cuda", "0")):
        for ours, ref in zip(results[key], results["cpu", "1"], strict=True):
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)


def test_a_first_launch_that_fails_falls_back_with_one_warning(monkeypatch):
    """Without a C compiler (say) Triton cannot build the kernel: the loss warns once and uses torch operations."""

    def broken():
        raise RuntimeError("Failed to find C compiler")

    monkeypatch.setattr(_triton, "_kernel", broken)
    monkeypatch.setattr(_triton, "_STATE", {"launched": False, "broken": False})
    x = torch.zeros(10)
    with pytest.warns(UserWarning, match="Triton kernel did not run.*C compiler.*using torch operations"):
        assert _triton.triton_pass(x, x, 0.25, 2.0, 0.0, 1.0, None, None) is None
    assert _triton._STATE["broken"]
    monkeypatch.setattr(_triton, "_STATE", {"launched": True, "broken": False})
    with pytest.raises(RuntimeError, match="C compiler"):  # after a launch that worked, an error is an error
        _triton.triton_pass(x, x, 0.25, 2.0, 0.0, 1.0, None, None)
