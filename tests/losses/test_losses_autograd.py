"""flx.losses under every autograd path (second derivatives, torch.func, torch.compile) and its drop-in API:
soft targets, torchvision's argument names, autocast, masked classes, ignore_index, scalars, normalizer, modules."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from flx import losses as L
from flx.losses import _kernel as K

ALPHA4 = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)


def _data(seed=0, n=10):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, generator=g, dtype=torch.float64) * 2).requires_grad_()
    y = (torch.rand(n, generator=g) < 0.4).double()
    z = torch.randn(6, 4, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.tensor([0, 1, 2, 3, 1, -100])
    return x, y, z, t


def _ref_sigmoid(x, y, alpha, gamma):
    """torchvision's formula in float64 (plain autograd; fine away from saturation)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    loss = ce * (1 - (p * y + (1 - p) * (1 - y))) ** gamma
    return loss * (alpha * y + (1 - alpha) * (1 - y)) if alpha >= 0 else loss


def _ref_softmax(z, t, alpha, gamma, epsilon=None):
    keep = t != -100
    logp_t = torch.log_softmax(z, 1).gather(1, t.clamp_min(0)[:, None]).squeeze(1)
    q = 1 - logp_t.exp()
    a = 1.0 if alpha is None else alpha[t.clamp_min(0)]
    loss = -a * q**gamma * logp_t
    if epsilon is not None:
        loss = loss + epsilon * q ** (gamma + 1)
    return (loss * keep).sum() / keep.sum()


def _binary_cases():
    """(name, flx loss of logits, float64 reference of logits) for every binary loss."""
    _, y, _, _ = _data()
    return [
        (
            "sigmoid_focal",
            lambda a: L.sigmoid_focal_loss(a, y, 0.25, 2.0, "sum"),
            lambda a: _ref_sigmoid(a, y, 0.25, 2.0).sum(),
        ),
        (
            "sigmoid_focal_g0.5",
            lambda a: L.sigmoid_focal_loss(a, y, -1, 0.5, "mean"),
            lambda a: _ref_sigmoid(a, y, -1, 0.5).mean(),
        ),
        (
            "poly1_focal",
            lambda a: L.poly1_focal_loss(a, y, 0.25, 2.0, epsilon=1.0),
            lambda a: (
                _ref_sigmoid(a, y, 0.25, 2.0)
                + (1 - (torch.sigmoid(a) * y + torch.sigmoid(-a) * (1 - y))) ** 3
            ).mean(),
        ),
        (
            "poly1_ce",
            lambda a: L.poly1_cross_entropy(a, y, epsilon=2.0),
            lambda a: (
                _ref_sigmoid(a, y, -1, 0.0) + 2 * (1 - (torch.sigmoid(a) * y + torch.sigmoid(-a) * (1 - y)))
            ).mean(),
        ),
    ]


def _multiclass_cases():
    _, _, _, t = _data()
    return [
        (
            "softmax_focal",
            lambda a: L.softmax_focal_loss(a, t, None, 2.0),
            lambda a: _ref_softmax(a, t, None, 2.0),
        ),
        (
            "softmax_focal_alpha",
            lambda a: L.softmax_focal_loss(a, t, ALPHA4, 0.5),
            lambda a: _ref_softmax(a, t, ALPHA4, 0.5),
        ),
        (
            "poly1_focal_mc",
            lambda a: L.poly1_focal_loss(a, t, None, 2.0, 1.0),
            lambda a: _ref_softmax(a, t, None, 2.0, 1.0),
        ),
        (
            "poly1_ce_mc",
            lambda a: L.poly1_cross_entropy(a, t, 1.0),
            lambda a: _ref_softmax(a, t, None, 0.0, 1.0),
        ),
    ]


def _all_cases():
    x, _, z, _ = _data()
    return [(n, f, r, x) for n, f, r in _binary_cases()] + [(n, f, r, z) for n, f, r in _multiclass_cases()]


@pytest.mark.parametrize("case", _all_cases(), ids=lambda c: c[0])
def test_gradgradcheck_and_hessian_match_float64_reference(case):
    name, loss, ref, inp = case
    assert torch.autograd.gradgradcheck(loss, (inp,))
    hessian = torch.autograd.functional.hessian(loss, inp.detach())
    expected = torch.autograd.functional.hessian(ref, inp.detach())
    assert expected.abs().max() > 1e-3  # a Hessian of zeros (once_differentiable) would fail here
    torch.testing.assert_close(hessian, expected, rtol=1e-7, atol=1e-10)


def test_create_graph_gradient_carries_a_graph_for_gradient_penalties():
    x, y, _, _ = _data()
    (g,) = torch.autograd.grad(L.sigmoid_focal_loss(x, y, reduction="sum"), x, create_graph=True)
    assert g.requires_grad
    (gg,) = torch.autograd.grad(g.pow(2).sum(), x)
    (g_ref,) = torch.autograd.grad(_ref_sigmoid(x, y, 0.25, 2.0).sum(), x, create_graph=True)
    (gg_ref,) = torch.autograd.grad(g_ref.pow(2).sum(), x)
    torch.testing.assert_close(gg, gg_ref)


@pytest.mark.parametrize("case", _all_cases(), ids=lambda c: c[0])
def test_torch_func_grad_vmap_jacrev(case):
    name, loss, ref, inp = case
    a = inp.detach()
    torch.testing.assert_close(torch.func.grad(loss)(a), torch.func.grad(ref)(a))
    batch = torch.stack([a, a * 0.5, -a])
    torch.testing.assert_close(torch.func.vmap(loss)(batch), torch.stack([ref(b) for b in batch]))
    torch.testing.assert_close(torch.func.jacrev(torch.func.grad(loss))(a), torch.func.hessian(ref)(a))


def test_vmap_over_elementwise_sigmoid_focal_matches_torchvision():
    x, y, _, _ = _data()
    batch = torch.stack([x.detach(), 2 * x.detach()])
    ours = torch.func.vmap(lambda a: L.sigmoid_focal_loss(a, y, 0.25, 0.5, "none"))(batch)
    torch.testing.assert_close(ours, tv_focal(batch, y.expand(2, -1), 0.25, 0.5, "none"))


def _compile_count(fn, sizes, **kwargs):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager", **kwargs)
    for n in sizes:
        x = torch.randn(n, requires_grad=True)
        y = (torch.rand(n) < 0.3).float()
        loss = compiled(x, y)
        loss.backward()
        torch.testing.assert_close(loss, tv_focal(x, y, 0.25, 2.0, "mean"))
        torch.testing.assert_close(x.grad, torch.autograd.grad(tv_focal(x, y, 0.25, 2.0, "mean"), x)[0])
    return counters["stats"]["unique_graphs"]


def test_compile_fullgraph_does_not_recompile_per_size():
    sizes = [64, 100, 333, 1000, 4096, 10_000, 65_537]

    def fn(x, y):
        return L.sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="mean")

    assert _compile_count(fn, sizes, dynamic=True) == 1
    assert _compile_count(fn, sizes) <= 2  # the first size static, then one dynamic graph, as torchvision


def test_compile_with_inductor_runs_fused_code():
    compiled = torch.compile(
        lambda x, y: L.sigmoid_focal_loss(x, y, reduction="sum"), fullgraph=True, dynamic=True
    )
    x = torch.randn(1000, requires_grad=True)
    y = (torch.rand(1000) < 0.3).float()
    loss = compiled(x, y)
    loss.backward()
    torch.testing.assert_close(loss, tv_focal(x, y, reduction="sum"))


def test_soft_targets_equal_torchvision_with_gradients_for_both():
    g = torch.Generator().manual_seed(5)
    for n in (300, 100_000):  # one chunk, and many chunks mixing hard and soft ones
        x = (torch.randn(n, generator=g, dtype=torch.float64) * 3).requires_grad_()
        y = (torch.rand(n, generator=g) < 0.3).double()
        y[: n // 2] = torch.rand(
            n // 2, generator=g, dtype=torch.float64
        )  # soft (label smoothing, distillation)
        y.requires_grad_()
        for alpha, gamma in ((0.25, 2.0), (-1, 0.5), (0.6, 0.0)):
            ours = L.sigmoid_focal_loss(x, y, alpha, gamma, "mean")
            ref = tv_focal(x, y, alpha, gamma, "mean")
            torch.testing.assert_close(ours, ref)
            for a, b in zip(torch.autograd.grad(ours, (x, y)), torch.autograd.grad(ref, (x, y)), strict=True):
                torch.testing.assert_close(a, b)


def test_backward_when_only_targets_require_grad():
    x, y, _, _ = _data()
    y = y.clone().requires_grad_()
    (gy,) = torch.autograd.grad(L.sigmoid_focal_loss(x.detach(), y, reduction="sum"), y)
    (gy_ref,) = torch.autograd.grad(tv_focal(x.detach(), y, reduction="sum"), y)
    torch.testing.assert_close(gy, gy_ref)


def test_returned_gradient_is_fresh_and_backward_is_repeatable():
    x, y, _, _ = _data(n=50_000)
    loss = L.sigmoid_focal_loss(x, y, reduction="mean")
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    expected = first.clone()
    first.zero_()  # an in-place edit of what autograd returned
    (second,) = torch.autograd.grad(loss, x)
    assert torch.equal(second, expected)


def test_torchvision_argument_names_work():
    x, y, _, _ = _data()
    torch.testing.assert_close(
        L.sigmoid_focal_loss(inputs=x, targets=y, alpha=0.25, gamma=2, reduction="sum"),
        tv_focal(inputs=x, targets=y, alpha=0.25, gamma=2, reduction="sum"),
    )


@pytest.mark.parametrize("fn", ["sigmoid", "softmax"])
def test_bf16_autocast_returns_float32_like_torchvision(fn):
    x = torch.randn(64, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inputs = torch.nn.Linear(4, 4)(x).requires_grad_()  # a bf16 activation, as in a mixed-precision model
        assert inputs.dtype == torch.bfloat16
        if fn == "sigmoid":
            y = (torch.rand(64, 4) < 0.3).bfloat16()
            loss = L.sigmoid_focal_loss(inputs, y, reduction="mean")
            assert tv_focal(inputs, y, reduction="mean").dtype == torch.float32
        else:
            loss = L.softmax_focal_loss(inputs, torch.randint(0, 4, (64,)))
    assert loss.dtype == torch.float32
    (grad,) = torch.autograd.grad(loss, inputs)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad).all()
    # without autocast the input's dtype comes back, as torchvision's
    assert L.sigmoid_focal_loss(inputs.detach(), (inputs.detach() > 0).bfloat16()).dtype == torch.bfloat16


def test_masked_classes_give_finite_gradients_like_cross_entropy():
    inf = float("-inf")
    z = torch.tensor([[3.0, inf, inf], [1.0, 2.0, inf], [0.5, inf, 0.1]], requires_grad=True)
    t = torch.tensor([0, 1, 2])
    for loss_fn in (
        lambda a: L.softmax_focal_loss(a, t, gamma=0.0),
        lambda a: L.poly1_cross_entropy(a, t, epsilon=0.0),
    ):
        (g,) = torch.autograd.grad(loss_fn(z), z)
        (g_ref,) = torch.autograd.grad(F.cross_entropy(z, t), z)
        torch.testing.assert_close(g, g_ref)
    for gamma in (0.5, 2.0):  # the first row is all masked but its target: p_t = 1
        (g,) = torch.autograd.grad(L.softmax_focal_loss(z, t, gamma=gamma), z)
        assert torch.isfinite(g).all() and (g[:, :][torch.isinf(z)] == 0).all()


def test_poly1_ignore_index_matches_cross_entropy():
    _, _, z, t = _data()
    torch.testing.assert_close(L.poly1_cross_entropy(z, t, epsilon=0.0), F.cross_entropy(z, t))
    t2 = t.clone()
    t2[t2 == -100] = 7
    torch.testing.assert_close(
        L.poly1_cross_entropy(z, t2, epsilon=1.0, ignore_index=7), L.poly1_cross_entropy(z, t, 1.0)
    )
    per = L.poly1_cross_entropy(z, t, epsilon=1.0, reduction="none")
    assert per[-1] == 0 and per.shape == t.shape


def test_multiclass_defaults_agree():
    _, _, z, t = _data()
    torch.testing.assert_close(L.poly1_focal_loss(z, t, epsilon=0.0), L.softmax_focal_loss(z, t))


@pytest.mark.parametrize(
    "make", [np.float32, np.float64, lambda v: torch.tensor(v), lambda v: torch.tensor([v])]
)
def test_numpy_and_tensor_scalars_are_numbers(make):
    x, y, z, t = _data()
    torch.testing.assert_close(
        L.sigmoid_focal_loss(x, y, alpha=make(0.25), gamma=make(2.0), reduction="sum"),
        L.sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="sum"),
    )
    torch.testing.assert_close(
        L.poly1_cross_entropy(z, t, epsilon=make(1.0)), L.poly1_cross_entropy(z, t, 1.0)
    )
    alpha = make(0.5)
    if (
        isinstance(alpha, torch.Tensor) and alpha.dim() == 1
    ):  # multi-class: per class, as a list is (issue 22)
        with pytest.raises(ValueError, match="per-class weights"):
            L.softmax_focal_loss(z, t, alpha=alpha)
        return
    torch.testing.assert_close(L.softmax_focal_loss(z, t, alpha=alpha), L.softmax_focal_loss(z, t, alpha=0.5))


def test_normalizer_gives_the_papers_and_cross_entropys_normalisations():
    x, y, z, t = _data()
    num_pos = y.sum()
    expected = L.sigmoid_focal_loss(x, y, reduction="sum") / num_pos
    torch.testing.assert_close(L.sigmoid_focal_loss(x, y, reduction="mean", normalizer=num_pos), expected)
    torch.testing.assert_close(
        L.sigmoid_focal_loss(x, y, reduction="mean", normalizer=float(num_pos)), expected
    )
    (g,) = torch.autograd.grad(L.sigmoid_focal_loss(x, y, reduction="mean", normalizer=num_pos), x)
    torch.testing.assert_close(g, torch.autograd.grad(expected, x)[0])
    # "mean" with per-class alpha divides by the number of elements; F.cross_entropy(weight=) by the weights' sum
    keep = t != -100
    ce_weighted = F.cross_entropy(z, t, weight=ALPHA4)
    assert not torch.allclose(L.softmax_focal_loss(z, t, alpha=ALPHA4, gamma=0.0), ce_weighted)
    norm = ALPHA4[t[keep]].sum()
    torch.testing.assert_close(
        L.softmax_focal_loss(z, t, alpha=ALPHA4, gamma=0.0, normalizer=norm), ce_weighted
    )


def test_module_wrappers_equal_the_functions():
    x, y, z, t = _data()
    pairs = [
        (
            L.FocalLoss(alpha=0.5, gamma=1.0, reduction="mean")(x, y),
            L.sigmoid_focal_loss(x, y, 0.5, 1.0, "mean"),
        ),
        (L.FocalLoss(alpha=None)(x, y), L.sigmoid_focal_loss(x, y, alpha=-1)),
        (L.SoftmaxFocalLoss(alpha=ALPHA4, gamma=0.5)(z, t), L.softmax_focal_loss(z, t, ALPHA4, 0.5)),
        (L.Poly1CrossEntropyLoss(epsilon=2.0)(z, t), L.poly1_cross_entropy(z, t, 2.0)),
        (L.Poly1FocalLoss(alpha=0.25, epsilon=0.5)(x, y), L.poly1_focal_loss(x, y, 0.25, epsilon=0.5)),
        (
            L.FocalLoss(reduction="mean")(x, y, normalizer=3.0),
            L.sigmoid_focal_loss(x, y, reduction="sum") / 3.0,
        ),
    ]
    for got, expected in pairs:
        torch.testing.assert_close(got, expected)
    module = L.SoftmaxFocalLoss(alpha=[0.1, 0.2, 0.3, 0.4])
    assert "alpha" in dict(module.named_buffers())  # moves with .to(device)


def test_target_checks_are_opt_in():
    x, y, z, _ = _data()
    L.sigmoid_focal_loss(x, y * 3)  # no data read by default
    with L.check_targets():
        with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\]"):
            L.sigmoid_focal_loss(x, y * 3)
        with pytest.raises(ValueError, match=r"target class 9 is out of range"):
            L.softmax_focal_loss(z, torch.tensor([0, 1, 2, 3, 9, 1]))
    L.sigmoid_focal_loss(x, y * 3)  # restored on exit


def test_thread_count_does_not_change_a_bit():
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(200_001, generator=g) * 4).requires_grad_()
    y = (torch.rand(200_001, generator=g) < 0.02).float()
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            loss = L.sigmoid_focal_loss(x, y, reduction="mean")
            results.append((loss.detach(), torch.autograd.grad(loss, x)[0]))
    finally:
        torch.set_num_threads(previous)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def test_accelerator_path_matches_torchvision(monkeypatch):
    """The path a GPU takes (general soft-target formulas, no host reads, sums kept as tensors, big chunks), run
    here on the CPU by declaring the CPU not a host."""
    monkeypatch.setattr(K, "_on_host", lambda device: False)
    monkeypatch.setattr(K, "_DEVICE_CHUNK", 1000)
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(4321, generator=g) * 5).requires_grad_()
    y = (torch.rand(4321, generator=g) < 0.1).float()
    y[:100] = 0.3
    for alpha, gamma, reduction in ((0.25, 2.0, "mean"), (-1, 1.5, "sum"), (0.5, 0.0, "none")):
        ours = L.sigmoid_focal_loss(x, y, alpha, gamma, reduction)
        ref = tv_focal(x, y, alpha, gamma, reduction)
        torch.testing.assert_close(ours, ref)
        up = torch.rand_like(ref) + 0.5
        torch.testing.assert_close(torch.autograd.grad(ours, x, up)[0], torch.autograd.grad(ref, x, up)[0])
    saturated = torch.tensor(
        [-1e4, -100.0, 100.0, 1e4], requires_grad=True
    )  # gamma < 1: torchvision is NaN here
    (grad,) = torch.autograd.grad(
        L.sigmoid_focal_loss(saturated, torch.tensor([0.0, 1, 0, 1]), 0.25, 0.5, "sum"), saturated
    )
    assert torch.isfinite(grad).all()


def test_backward_allocates_nothing_the_size_of_the_input():
    """The kernel's gradient is handed to autograd as .grad: no zero tensor for the kernel's second output, no
    copy, no second pass (peak extra memory = the gradient)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    n = 100_000
    sized = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            fresh = isinstance(out, torch.Tensor) and out.untyped_storage().data_ptr() not in inputs
            if (
                fresh and out.numel() == n
            ):  # a new tensor of the input's size (aliases such as detach are not)
                sized.append(str(func))
            return out

    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, generator=g).requires_grad_()
    y = (torch.rand(n, generator=g) < 0.1).float()
    loss = L.sigmoid_focal_loss(x, y, reduction="mean")
    with Record():
        loss.backward()
    assert sized == [], sized
    torch.testing.assert_close(x.grad, torch.autograd.grad(tv_focal(x, y, reduction="mean"), x)[0])


def test_poly1_focal_with_per_class_alpha_compiles_with_a_dynamic_graph():
    """Issue 22, item 2: the epsilon bound read float(weights.min()) while compiling ("Could not guard on
    data-dependent expression"); under torch.compile it checks the bound without alpha instead."""
    x, t = torch.randn(8, 3), torch.randint(0, 3, (8,))
    eager = L.poly1_focal_loss(x, t, alpha=[0.2, 0.3, 0.5], epsilon=0.1)
    compiled = torch.compile(
        lambda x, t: L.poly1_focal_loss(x, t, alpha=[0.2, 0.3, 0.5], epsilon=0.1),
        fullgraph=True,
        dynamic=True,
    )
    torch.testing.assert_close(compiled(x, t), eager)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_batched_gradients_vectorized_jacobian_and_forward_ad_match_the_reference(reduction):
    """is_grads_batched and jacobian(vectorize=True) vmap the fused kernel's backward; forward-mode AD takes
    the composite path (issue 22, item 4). Each against the float64 reference's Jacobian."""
    import torch.autograd.forward_ad as fa

    x, y, _, _ = _data(3)
    reduce = {"none": lambda e: e, "sum": torch.sum, "mean": torch.mean}[reduction]
    f = lambda v: L.sigmoid_focal_loss(v, y, alpha=0.25, gamma=2.0, reduction=reduction)  # noqa: E731
    expected = torch.autograd.functional.jacobian(lambda v: reduce(_ref_sigmoid(v, y, 0.25, 2.0)), x.detach())
    out = f(x)
    basis = torch.eye(out.numel(), dtype=torch.float64).reshape(-1, *out.shape)
    (batched,) = torch.autograd.grad(out, x, basis, is_grads_batched=True)
    assert torch.allclose(batched.reshape(expected.shape), expected)
    assert torch.allclose(torch.autograd.functional.jacobian(f, x, vectorize=True), expected)
    tangent = torch.randn(len(x), dtype=torch.float64)
    with fa.dual_level():
        jvp = fa.unpack_dual(f(fa.make_dual(x.detach(), tangent))).tangent
    assert torch.allclose(jvp, (expected.reshape(-1, len(x)) @ tangent).reshape(jvp.shape))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_an_infinite_logit_gives_the_limit_not_nan(reduction):
    """+inf on the wrong side (y = 0) or -inf for y = 1: the loss is inf, as torchvision's is for +inf, y = 0;
    on the right side it is 0, where torchvision gives NaN (issue 22, item 5)."""
    inf = float("inf")
    x = torch.tensor([inf, -inf, inf, -inf, 1.0])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    out = L.sigmoid_focal_loss(x, y, reduction=reduction)
    if reduction == "none":
        assert out[:2].isinf().all() and (out[:2] > 0).all() and (out[2:4] == 0).all()
        assert out[4] == pytest.approx(float(tv_focal(x[4:], y[4:], reduction="none")[0]))
        assert float(tv_focal(x[:1], y[:1], reduction="none")[0]) == inf
    else:
        assert float(out) == inf
        assert float(L.sigmoid_focal_loss(x[2:], y[2:], reduction=reduction)) < 1  # the finite element only
