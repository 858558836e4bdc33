"""The fused CPU pass (numba) and its custom operator (issue 33): float32 accuracy over the whole range of logits,
the Poly-1 forms on the kernel, and torch.compile(fullgraph=True) of a model and each loss with no graph break."""

import pytest
import torch
import torch.nn.functional as F

from flx import losses as L
from flx.losses._op import sigmoid_focal_op, softmax_focal_op


def _reference64(x, y, alpha, gamma, epsilon=0.0):
    """alpha_t q^gamma (-log p_t) + epsilon q^(gamma + 1) in float64, q = 1 - p_t = sigmoid(-x_t) for 0/1 y."""
    x, y = x.double(), y.double()
    x_t = (2 * y - 1) * x
    q = torch.sigmoid(-x_t)
    a_t = alpha * y + (1 - alpha) * (1 - y) if alpha >= 0 else torch.ones_like(x)
    return a_t * q**gamma * -F.logsigmoid(x_t) + epsilon * q ** (gamma + 1)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.0])
def test_float32_kernel_keeps_its_relative_precision_from_minus_100_to_100(gamma):
    """float32 computes with the module's own exp and log1p: every element's loss and gradient within 2e-6 of the
    float64 formula relative to itself (where p_t rounds to 1 as well), so no cancellation anywhere."""
    x = torch.linspace(-100, 100, 20_001)
    for label in (0.0, 1.0):
        y = torch.full_like(x, label)
        xg = x.clone().requires_grad_()
        loss = L.sigmoid_focal_loss(xg, y, 0.25, gamma, "none")
        (grad,) = torch.autograd.grad(loss.sum(), xg)
        x64 = x.double().requires_grad_()
        ref = _reference64(x64, y, 0.25, gamma)
        (ref_grad,) = torch.autograd.grad(ref.sum(), x64)
        keep = ref > 1e-30  # float32's normal range
        torch.testing.assert_close(loss.double()[keep], ref.detach()[keep], rtol=2e-6, atol=0)
        keep_g = ref_grad.abs() > 1e-30
        torch.testing.assert_close(grad.double()[keep_g], ref_grad[keep_g], rtol=2e-6, atol=0)


@pytest.mark.parametrize("alpha", [-1.0, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_poly1_binary_forms_run_on_the_kernel_and_match_the_formula(alpha, gamma):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(9000, generator=g, dtype=torch.float64) * 4).requires_grad_()
    y = (torch.rand(9000, generator=g) < 0.2).double()
    for eps in (1.0, -0.2):
        ours = L.poly1_focal_loss(x, y, alpha=None if alpha < 0 else alpha, gamma=gamma, epsilon=eps)
        ref = _reference64(x, y, alpha, gamma, eps).mean()
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
        torch.testing.assert_close(
            torch.autograd.grad(ours, x)[0], torch.autograd.grad(ref, x)[0], rtol=1e-9, atol=1e-300
        )
    ce = L.poly1_cross_entropy(x, y, epsilon=2.0)
    torch.testing.assert_close(ce, _reference64(x, y, -1.0, 0.0, 2.0).mean(), rtol=1e-12, atol=0)


def test_the_operators_pass_torch_library_checks():
    x = torch.randn(50, requires_grad=True)
    y = (torch.rand(50) < 0.3).float()
    z = torch.randn(12, 4, 3, requires_grad=True)
    t = torch.randint(0, 4, (12, 3))
    t[0, 0] = -100
    for elements in (False, True):
        torch.library.opcheck(sigmoid_focal_op, (x, y, 0.25, 2.0, 0.0, 0.02, elements, True))
        for weights, alpha in ((None, -1.0), (None, 0.5), (torch.tensor([0.2, 0.5, 1.0, 2.0]), -1.0)):
            args = (z, t, weights, alpha, 2.0, 0.5, -100, 1.0, elements, True)
            torch.library.opcheck(softmax_focal_op, args)


def _softmax_reference64(z, t, weights, gamma, epsilon, ignore_index=-100):
    """The multi-class loss per element in float64 straight from log-softmax (0 where ignored)."""
    z64 = z.double().movedim(1, -1)
    keep = t != ignore_index
    safe = torch.where(keep, t, 0)
    logp = torch.log_softmax(z64, -1).gather(-1, safe[..., None]).squeeze(-1)
    q = -torch.expm1(logp)
    a_t = (
        weights.double()[safe] if isinstance(weights, torch.Tensor) else (1.0 if weights is None else weights)
    )
    return torch.where(keep, -a_t * q**gamma * logp + epsilon * q ** (gamma + 1), 0.0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_kernel_matches_float64_with_ignored_elements_weights_and_layouts(dtype, tol, gamma):
    g = torch.Generator().manual_seed(11)
    z = (torch.randn(3000, 5, 4, generator=g) * 6).to(dtype).requires_grad_()
    t = torch.randint(0, 5, (3000, 4), generator=g)
    t[::9] = -100
    z.data[:5, 2] = -float("inf")  # a masked class
    t[:5] = torch.where(t[:5] == 2, 0, t[:5])
    for weights, eps in ((None, 0.0), (0.25, 1.0), (torch.tensor([0.1, 0.5, 1.0, 2.0, 0.3]), -0.05)):
        loss = L.poly1_focal_loss(z, t, alpha=weights, gamma=gamma, epsilon=eps, reduction="none")
        ref = _softmax_reference64(z, t, weights, gamma, eps)
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=tol, atol=tol)
        mean = L.poly1_focal_loss(z, t, alpha=weights, gamma=gamma, epsilon=eps)
        ref_mean = ref.sum() / (t != -100).sum()
        torch.testing.assert_close(mean.double(), ref_mean.detach(), rtol=tol, atol=tol)
        (grad,) = torch.autograd.grad(mean, z)
        (ref_grad,) = torch.autograd.grad(ref_mean, z)
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad.double(), ref_grad.double(), rtol=tol, atol=tol)


def test_softmax_kernel_gives_the_same_bits_with_one_to_three_threads():
    z = torch.randn(20_000, 7, requires_grad=True)
    t = torch.randint(0, 7, (20_000,))
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            loss = L.softmax_focal_loss(z, t, alpha=[0.5] * 7)
            results.append((loss.detach(), torch.autograd.grad(loss, z)[0]))
    finally:
        torch.set_num_threads(previous)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def _losses():
    """(name, head width, loss(logits, labels)) for every loss, binary heads with 0/1 labels of their shape."""
    return [
        ("sigmoid_focal", 3, lambda z, t: L.sigmoid_focal_loss(z, t, reduction="mean")),
        (
            "sigmoid_focal_sum_normalised",
            3,
            lambda z, t: L.sigmoid_focal_loss(z, t, reduction="mean", normalizer=7.0),
        ),
        ("FocalLoss", 3, L.FocalLoss(reduction="mean")),
        ("poly1_focal_binary", 3, lambda z, t: L.poly1_focal_loss(z, t, alpha=0.25, epsilon=1.0)),
        ("poly1_ce_binary", 3, lambda z, t: L.poly1_cross_entropy(z, t, epsilon=1.0)),
        ("softmax_focal", 4, lambda z, t: L.softmax_focal_loss(z, t.long())),
        ("poly1_focal_multiclass", 4, lambda z, t: L.poly1_focal_loss(z, t.long(), epsilon=1.0)),
    ]


@pytest.mark.compile
@pytest.mark.parametrize("case", _losses(), ids=lambda c: c[0])
def test_compile_fullgraph_of_a_model_and_each_loss_has_no_graph_break(case):
    """fullgraph=True raises at a graph break; every loss reaches its custom operator (it is in the graph), and
    loss and gradients equal eager mode's."""
    name, width, loss_fn = case
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, width))
    x = torch.randn(64, 5)
    binary = width == 3
    t = (torch.rand(64, 3) < 0.2).float() if binary else torch.randint(0, 4, (64,)).float()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    def step(inp, target):
        return loss_fn(model(inp), target)

    compiled = torch.compile(step, fullgraph=True, backend=backend)
    loss = compiled(x, t)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    eager = step(x, t)
    eager_grads = torch.autograd.grad(eager, list(model.parameters()))
    torch.testing.assert_close(loss, eager)
    for a, b in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)
    assert len(graphs) == 1
    assert ("flx.sigmoid_focal" if binary else "flx.softmax_focal") in graphs[0]


@pytest.mark.compile
def test_compiled_with_inductor_calls_the_kernel_and_matches_eager():
    compiled = torch.compile(lambda x, y: L.sigmoid_focal_loss(x, y, reduction="mean"), fullgraph=True)
    x = (torch.randn(100_000) * 3).requires_grad_()
    y = (torch.rand(100_000) < 0.01).float()
    loss = compiled(x, y)
    loss.backward()
    eager_x = x.detach().clone().requires_grad_()
    eager = L.sigmoid_focal_loss(eager_x, y, reduction="mean")
    eager.backward()
    assert torch.equal(loss, eager) and torch.equal(x.grad, eager_x.grad)  # the same kernel: the same bits


def test_the_bench_floor_splits_like_the_kernel_and_computes_its_formula():
    """The floor times the same thread split as flx's kernels (one chunk size, one helper), and what it writes is
    y log1p(exp(-|x|)) at every thread count, whatever the length (a partial last chunk included)."""
    from flx.bench import floor
    from flx.losses import _fused

    assert floor.CHUNK == _fused.CHUNK
    x, y = torch.randn(70_001) * 8, (torch.rand(70_001) < 0.3).float()
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            xg = x.clone().requires_grad_()
            (grad,) = torch.autograd.grad(floor.floor_loss(xg, y), xg)
            torch.testing.assert_close(grad, y * torch.log1p(torch.exp(-x.abs())), rtol=1e-6, atol=1e-7)
    finally:
        torch.set_num_threads(previous)


def test_kernel_and_floor_are_compiled_for_the_widest_vectors_and_focal_skips_the_poly_terms_exactly():
    """The binary kernel and the bench's floor both call ``wide_vectors`` (so the floor is timed as the kernel is
    compiled), which puts LLVM's request for the widest vector registers on the function that calls it; and
    focal loss's kernel, which leaves out the Poly-1 terms, gives the bits of the Poly-1 kernel run with
    epsilon = 0, loss, gradient and sums, infinite logits included."""
    import numba
    import numpy as np

    from flx.losses import _fused, vecmath

    def calls_it(njitted):
        return "wide_vectors" in njitted.py_func.__code__.co_names

    assert calls_it(vecmath.floor_chunks) and calls_it(_fused._chunks)

    @numba.njit(nogil=True, error_model="numpy")  # not cached, so its IR can be read
    def probe(a):
        vecmath.wide_vectors()
        for i in range(a.size):
            a[i] = a[i] * np.float32(2)

    probe(np.ones(64, np.float32))
    assert '"prefer-vector-width"="512"' in next(iter(probe.inspect_llvm().values()))

    x = (np.random.default_rng(0).standard_normal(20_000) * 6).astype(np.float32)
    x[:3] = (np.inf, -np.inf, 0.0)
    y = (np.random.default_rng(1).random(20_000) < 0.3).astype(np.float32)
    chunks = -(-x.size // _fused.CHUNK)
    results = []
    for poly in (False, True):
        out, grad, sums = np.empty_like(x), np.empty_like(x), np.zeros(chunks)
        f32 = np.float32
        _fused._make(2, True, poly)(
            x, y, f32(0.25), f32(0.75), f32(2), f32(0), f32(1e-3), out, grad, sums, 0, chunks, True
        )
        results.append((out, grad, sums))
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b, equal_nan=True)


def test_large_outputs_are_reused_only_once_nothing_holds_them():
    """A gradient of 32 MB or more comes from a kept buffer once the previous one is gone (no fresh page faults),
    never while any tensor over it lives: two gradients held side by side stay distinct and keep their values."""
    from flx.losses import threads

    threads.empty_cache()
    n = 9_000_000  # 36 MB of float32
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, generator=g), (torch.rand(n, generator=g) < 0.01).float()

    def grad_of(scale):
        xg = (x * scale).requires_grad_()
        L.sigmoid_focal_loss(xg, y, reduction="sum").backward()
        return xg.grad

    first = grad_of(1.0)
    kept = first.clone()
    second = grad_of(2.0)  # first is still held: a buffer of its own
    assert first.data_ptr() != second.data_ptr() and torch.equal(first, kept)
    view, address = second[10:], second.data_ptr()
    del second
    third = grad_of(3.0)
    assert third.data_ptr() != address  # a view still holds the second one
    del view
    fourth = grad_of(1.0)
    assert fourth.data_ptr() == address and torch.equal(fourth, kept)  # reused, and rewritten whole
    assert torch.equal(first, kept)
    threads.empty_cache()
    assert not threads._FREE
