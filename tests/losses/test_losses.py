import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import sigmoid_focal_loss as tv_focal

from flx import losses as L
from flx.experiment.registries import LOSSES, get_loss

ALPHAS = [-1, 0.25, 0.5, 0.75]
GAMMAS = [0, 0.5, 1, 2, 5]


def _binary(n=257, dtype=torch.float32, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()
    y = (torch.rand(n, generator=g) < 0.3).to(dtype)
    return x, y


def _ref_focal64(x, y, alpha, gamma):
    """A float64 reference straight from the formula, differentiated by autograd where it is finite."""
    x = x.double()
    y = y.double()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def _stable_focal64(x, y, alpha, gamma):
    """The formula in float64 from log-sigmoid pieces: alpha_t sigmoid(-x_t)^gamma softplus(-x_t)."""
    s = 2 * y.double() - 1
    x_t = s * x.detach().double()
    a_t = (alpha * y + (1 - alpha) * (1 - y)).double() if alpha >= 0 else torch.ones_like(x_t)
    return a_t * torch.sigmoid(-x_t) ** gamma * -F.logsigmoid(x_t)


def _closed_form_grad64(x, y, alpha, gamma):
    """The paper's Appendix B gradient, in float64: y (1-p_t)^g (g p_t log p_t + p_t - 1), times alpha_t,
    with 1 - p_t taken as sigmoid(-x_t) so that the reference itself does not cancel near p_t = 1."""
    x = x.detach().double()
    y = y.double()
    s = 2 * y - 1
    logp_t = F.logsigmoid(s * x)
    p_t = logp_t.exp()
    q = torch.sigmoid(-s * x)
    a_t = (alpha * y + (1 - alpha) * (1 - y)) if alpha >= 0 else torch.ones_like(y)
    return a_t * s * q**gamma * (gamma * p_t * logp_t - q)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", list(itertools.product(ALPHAS, GAMMAS)))
def test_matches_torchvision_value_and_gradient(alpha, gamma, reduction):
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        x, y = _binary(dtype=dtype)
        ours = L.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
        ref = tv_focal(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
        torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
        upstream = (
            torch.rand_like(ours) + 0.5
        )  # a non-unit incoming gradient exercises the backward's scaling
        (g_ours,) = torch.autograd.grad(ours, x, upstream)
        (g_ref,) = torch.autograd.grad(ref, x, upstream)
        torch.testing.assert_close(g_ours, g_ref, rtol=tol, atol=tol)


def test_multidimensional_input_keeps_shape():
    x = torch.randn(2, 3, 5, requires_grad=True)
    y = (torch.rand(2, 3, 5) < 0.5).float()
    out = L.sigmoid_focal_loss(x, y)
    assert out.shape == x.shape
    torch.testing.assert_close(out, tv_focal(x, y))


def test_inputs_over_many_chunks_match_the_float64_formulas():
    """The fused kernel adds its loss per chunk of 4,096 elements (the last one partial): the reduced loss and
    the gradient over several chunks agree with the float64 formulas, soft targets among the hard ones too."""
    x, y = _binary(n=3 * 4096 + 17, dtype=torch.float64)
    for gamma in (2.0, 0.5):
        loss = L.sigmoid_focal_loss(x, y, 0.25, gamma, "sum")
        (grad,) = torch.autograd.grad(loss, x)
        torch.testing.assert_close(loss, _stable_focal64(x, y, 0.25, gamma).sum(), rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, _closed_form_grad64(x, y, 0.25, gamma), rtol=1e-10, atol=1e-300)
    soft = y.clone()
    soft[::7] = 0.3
    loss = L.sigmoid_focal_loss(x, soft, 0.25, 2.0, "sum")
    torch.testing.assert_close(loss, _ref_focal64(x, soft, 0.25, 2.0).sum(), rtol=1e-12, atol=0)


def test_backward_with_retain_graph_accumulates_correctly():
    x, y = _binary(dtype=torch.float64)
    loss = L.sigmoid_focal_loss(x, y, reduction="mean")
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first)


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 1.0, 2.0, 5.0])
def test_saturated_logits_finite_and_match_float64_reference(gamma):
    """Where torchvision gives NaN gradients (gamma < 1, p_t -> 1) flx agrees with the closed form."""
    x = torch.tensor([-1e4, -200.0, -30.0, -5.0, 0.0, 5.0, 30.0, 200.0, 1e4], dtype=torch.float64)
    for y_value in (0.0, 1.0):
        y = torch.full_like(x, y_value)
        xg = x.clone().requires_grad_()
        loss = L.sigmoid_focal_loss(xg, y, alpha=0.25, gamma=gamma)
        (grad,) = torch.autograd.grad(loss.sum(), xg)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        torch.testing.assert_close(grad, _closed_form_grad64(x, y, 0.25, gamma), rtol=1e-9, atol=1e-300)
        torch.testing.assert_close(loss, _stable_focal64(x, y, 0.25, gamma), rtol=1e-9, atol=1e-300)


def test_torchvision_really_is_nan_there():
    """The premise of the previous test: autograd through (1-p_t)^gamma is NaN for gamma < 1 at p_t = 1."""
    x = torch.tensor([100.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(tv_focal(x, torch.ones(1, dtype=torch.float64), gamma=0.5).sum(), x)
    assert torch.isnan(grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs_finite_and_close_to_float32(dtype):
    x = torch.tensor([-1e4, -60.0, -8.0, -0.5, 0.5, 8.0, 60.0, 1e4]).repeat(2)
    y = torch.tensor([0.0] * 8 + [1.0] * 8)
    if dtype == torch.float16:
        x = x.clamp(-6e4, 6e4)
    xl = x.to(dtype).requires_grad_()
    loss = L.sigmoid_focal_loss(xl, y.to(dtype), gamma=0.5, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), xl)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    ref = _ref_focal64(xl.detach().double(), y.double(), 0.25, 0.5)
    torch.testing.assert_close(loss.double(), ref, rtol=2e-2, atol=1e-2)


def test_gradcheck_every_loss():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, dtype=torch.float64, generator=g).requires_grad_()
    y = (torch.rand(12, generator=g) < 0.4).double()
    z = torch.randn(6, 4, dtype=torch.float64, generator=g).requires_grad_()
    t = torch.randint(0, 4, (6,), generator=g)
    for gamma in (0.0, 0.5, 2.0):
        for reduction in ("none", "mean", "sum"):
            assert torch.autograd.gradcheck(
                lambda a: L.sigmoid_focal_loss(a, y, 0.25, gamma, reduction), (x,)
            )
            assert torch.autograd.gradcheck(
                lambda a: L.softmax_focal_loss(a, t, None, gamma, reduction=reduction), (z,)
            )
        assert torch.autograd.gradcheck(
            lambda a: L.softmax_focal_loss(
                a, t, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), gamma
            ),
            (z,),
        )
        assert torch.autograd.gradcheck(lambda a: L.poly1_focal_loss(a, y, 0.25, gamma, epsilon=1.0), (x,))
        assert torch.autograd.gradcheck(lambda a: L.poly1_focal_loss(a, t, None, gamma, epsilon=-1.0), (z,))
    assert torch.autograd.gradcheck(lambda a: L.poly1_cross_entropy(a, y, epsilon=2.0), (x,))
    assert torch.autograd.gradcheck(lambda a: L.poly1_cross_entropy(a, t, epsilon=2.0), (z,))
    for name, spec in LOSSES.items():
        params = {"ohem_k": 5, "ohem_ratio": 3} if name == "ohem" else {}
        if spec.epoch_weight is not None:  # the weight is a constant taken at the epoch's start: no gradient
            params = {"weight": spec.epoch_weights(x.detach(), y)}
        assert torch.autograd.gradcheck(lambda a, s=spec, p=params: s(a, y, **p), (x,)), name


extreme = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    logits=st.lists(extreme, min_size=1, max_size=32),
    seed=st.integers(0, 2**16),
    gamma=st.floats(min_value=0, max_value=10),
    alpha=st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0]),
)
def test_property_finite_on_extreme_logits(logits, seed, gamma, alpha):
    x = torch.tensor(logits, requires_grad=True)
    y = (torch.rand(len(logits), generator=torch.Generator().manual_seed(seed)) < 0.5).float()
    for loss in (
        L.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="sum"),
        L.poly1_focal_loss(x, y, alpha=alpha, gamma=gamma, epsilon=1.0, reduction="sum"),
        L.poly1_cross_entropy(x, y, epsilon=-1.0, reduction="sum"),
    ):
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    z = torch.stack([x, -x, 0.5 * x], dim=1)
    t = torch.randint(0, 3, (len(logits),), generator=torch.Generator().manual_seed(seed))
    loss = L.softmax_focal_loss(z, t, gamma=gamma, reduction="sum")
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


@settings(max_examples=100, deadline=None)
@given(
    logits=st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=32), seed=st.integers(0, 2**16)
)
def test_property_gamma0_alpha_off_is_bce(logits, seed):
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(len(logits), generator=torch.Generator().manual_seed(seed)) < 0.5).double()
    ours = L.sigmoid_focal_loss(x, y, alpha=-1, gamma=0, reduction="none")
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    torch.testing.assert_close(ours, bce)
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), x)[0], torch.autograd.grad(bce.sum(), x)[0])


def test_modulation_is_per_example_not_on_batch_mean():
    """The widely copied mistake: (1 - exp(-mean_ce))**gamma * mean_ce. flx modulates each example's CE."""
    x = torch.tensor([6.0, 5.0, 4.0, -3.0], dtype=torch.float64)  # three easy examples and one hard one
    y = torch.ones(4, dtype=torch.float64)
    gamma = 2.0
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    per_example = ((1 - torch.exp(-ce)) ** gamma * ce).mean()
    mean_ce = ce.mean()
    on_batch_mean = (1 - torch.exp(-mean_ce)) ** gamma * mean_ce
    ours = L.sigmoid_focal_loss(x, y, alpha=-1, gamma=gamma, reduction="mean")
    assert not math.isclose(per_example.item(), on_batch_mean.item(), rel_tol=0.05)
    torch.testing.assert_close(ours, per_example)


def test_softmax_focal_matches_cross_entropy_and_formula():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(20, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, 5, (20,), generator=g)
    t[3] = -100
    torch.testing.assert_close(L.softmax_focal_loss(z, t, gamma=0), F.cross_entropy(z, t))
    logp_t = torch.log_softmax(z, 1).gather(1, t.clamp_min(0)[:, None]).squeeze(1)
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2], dtype=torch.float64)
    manual = -alpha[t.clamp_min(0)] * (1 - logp_t.exp()) ** 2 * logp_t
    manual[3] = 0
    torch.testing.assert_close(L.softmax_focal_loss(z, t, alpha=alpha, gamma=2, reduction="none"), manual)
    torch.testing.assert_close(
        L.softmax_focal_loss(z, t, alpha=0.5, gamma=2, reduction="sum"),
        0.5 * L.softmax_focal_loss(z, t, gamma=2, reduction="sum"),
    )
    # (N, C, d) layout: the class axis is dim 1
    z3 = torch.randn(4, 3, 6, dtype=torch.float64, generator=g)
    t3 = torch.randint(0, 3, (4, 6), generator=g)
    torch.testing.assert_close(
        L.softmax_focal_loss(z3, t3, gamma=0, reduction="none"), F.cross_entropy(z3, t3, reduction="none")
    )


def test_softmax_focal_gamma_below_one_saturated_is_finite():
    z = torch.tensor([[1e4, 0.0, -1e4], [0.0, 50.0, 0.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1])
    loss = L.softmax_focal_loss(z, t, gamma=0.5, reduction="sum")
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.isfinite(grad).all() and torch.isfinite(loss)


def test_poly1_formulas():
    x, y = _binary(dtype=torch.float64)
    x = x.detach()
    p_t = torch.where(y == 1, torch.sigmoid(x), 1 - torch.sigmoid(x))
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    torch.testing.assert_close(
        L.poly1_cross_entropy(x, y, epsilon=2.0, reduction="none"), bce + 2.0 * (1 - p_t)
    )
    fl = tv_focal(x, y, 0.25, 2.0)
    torch.testing.assert_close(
        L.poly1_focal_loss(x, y, 0.25, 2.0, epsilon=-0.2, reduction="none"), fl - 0.2 * (1 - p_t) ** 3
    )
    torch.testing.assert_close(L.poly1_cross_entropy(x, y, epsilon=0.0), bce.mean())
    z = torch.randn(9, 4, dtype=torch.float64)
    t = torch.randint(0, 4, (9,))
    pt = torch.softmax(z, 1).gather(1, t[:, None]).squeeze(1)
    torch.testing.assert_close(
        L.poly1_cross_entropy(z, t, epsilon=1.0, reduction="none"),
        F.cross_entropy(z, t, reduction="none") + (1 - pt),
    )


def test_ohem_select():
    losses = torch.tensor([0.1, 5.0, 0.3, 4.0, 2.0, 0.2, 3.0])
    assert L.ohem_select(losses, 3).tolist() == [1, 3, 6]
    assert L.ohem_select(losses, 100).numel() == 7
    targets = torch.tensor([1, 0, 0, 0, 1, 0, 0])
    # 2 positives (idx 4 then 0), then at most 1 negative per positive: the two hardest negatives (1, 3)
    assert L.ohem_select(losses, 6, targets, neg_pos_ratio=1).tolist() == [1, 3, 4, 0]
    # k caps the total; positives come first within k
    assert sorted(L.ohem_select(losses, 3, targets, neg_pos_ratio=3).tolist()) == [0, 1, 4]
    # no positive: still trains on the neg_pos_ratio hardest negatives
    assert L.ohem_select(losses, 5, torch.zeros(7), neg_pos_ratio=3).tolist() == [1, 3, 6]


def _checked(fn, *args):
    with L.check_targets():
        return fn(*args)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x, y: L.sigmoid_focal_loss(x, y, gamma=-0.5), r"gamma got -0.5; accepted: a number >= 0"),
        (
            lambda x, y: L.sigmoid_focal_loss(x, y, alpha=1.5),
            r"alpha got 1.5; accepted: a number in \[0, 1\]",
        ),
        (
            lambda x, y: L.sigmoid_focal_loss(x, y, reduction="avg"),
            r"reduction got 'avg'; accepted: one of none, mean, sum",
        ),
        (lambda x, y: L.sigmoid_focal_loss(x, y[:3]), r"same shape"),
        (lambda x, y: _checked(L.sigmoid_focal_loss, x, y * 2), r"targets must lie in \[0, 1\].*2"),
        (
            lambda x, y: _checked(L.softmax_focal_loss, x[:, None].expand(-1, 3), torch.full((len(x),), 7)),
            r"class 7.*\[0, 2\]",
        ),
        (lambda x, y: L.sigmoid_focal_loss(x, y, gamma=np.float32(-1)), r"gamma got np.float32\(-1.0\)"),
        (lambda x, y: L.sigmoid_focal_loss(x, y, alpha=True), r"alpha got True"),
        (lambda x, y: L.sigmoid_focal_loss(x, y, reduction="sum", normalizer=4), r"normalizer is given with"),
        (lambda x, y: L.sigmoid_focal_loss(x, y, reduction="mean", normalizer=0), r"normalizer got 0"),
        (
            lambda x, y: L.softmax_focal_loss(x[:, None].expand(-1, 3), y.long(), alpha=[1, 2]),
            r"alpha got shape",
        ),
        (
            lambda x, y: L.poly1_focal_loss(x, y, alpha=0.25, epsilon=-0.5),
            r"epsilon got -0.5; accepted: a number >= -0.25",
        ),
        (lambda x, y: L.FocalLoss(gamma=-1), r"gamma got -1"),
        (
            lambda x, y: L.SoftmaxFocalLoss(ignore_index="none"),
            r"ignore_index got 'none'; accepted: an integer",
        ),
        (lambda x, y: L.poly1_cross_entropy(x.tolist(), y), r"inputs and targets must be tensors, got list"),
        (lambda x, y: L.SoftmaxFocalLoss(alpha=[0.5, -1.0]), r"alpha got \[0.5, -1.0\]"),
        (lambda x, y: L.softmax_focal_loss(x[:, None].expand(-1, 3), y), r"integer class indices"),
        (lambda x, y: L.softmax_focal_loss(x[:, None].expand(-1, 3), y.long(), alpha=2.0), r"alpha got 2.0"),
        (lambda x, y: L.poly1_cross_entropy(x, y, epsilon=math.inf), r"epsilon got inf"),
        (lambda x, y: L.ohem_select(x, 0), r"k got 0"),
        (lambda x, y: L.ohem_select(x, 3, neg_pos_ratio=3), r"needs targets"),
        (lambda x, y: get_loss("hinge"), r"loss got 'hinge'; accepted: one of ce, balanced_ce"),
    ],
)
def test_invalid_arguments_raise_value_error(call, match):
    x, y = _binary(n=8)
    with pytest.raises(ValueError, match=match):
        call(x.detach(), y)


def test_registry_hyperparameters():
    assert set(LOSSES) == {"ce", "balanced_ce", "focal", "focal_detached", "poly1", "poly1_focal", "ohem"}
    assert LOSSES["focal"].params == {"alpha": 0.25, "gamma": 2.0}
    assert LOSSES["ce"].params == {}
    x, y = _binary(dtype=torch.float64)
    torch.testing.assert_close(get_loss("focal")(x, y, gamma=1.0), tv_focal(x, y, 0.25, 1.0, "mean"))
    with pytest.raises(ValueError, match="takes no hyperparameters"):
        get_loss("ce")(x, y, gamma=2.0)


def test_a_near_hard_soft_target_in_a_chunk_of_ones_takes_the_soft_formulas():
    """Issue 22, item 1: y = 0.9999 among 65,536 ones was taken as 1 (the hard formulas): loss 5.2e-10 and a
    gradient of the wrong sign, where torchvision gives 5.0018e-4 and +2.50e-5."""
    from torchvision.ops import sigmoid_focal_loss as tv

    x = torch.full((65536,), 20.0, requires_grad=True)
    y = torch.ones(65536)
    y[0] = 0.9999
    loss = L.sigmoid_focal_loss(x, y, reduction="none")
    loss.sum().backward()
    xr = x.detach()[:1].double().requires_grad_()
    ref = tv(xr, y[:1].double(), reduction="none")
    ref.sum().backward()
    assert float(loss[0]) == pytest.approx(float(ref[0]), rel=1e-4)
    assert float(x.grad[0]) == pytest.approx(float(xr.grad[0]), rel=1e-3) and float(x.grad[0]) > 0


def test_small_argument_cases_of_issue_22_item_5():
    """A one-element tensor alpha is per class (as a list is), not a scalar; SoftmaxFocalLoss refuses a negative
    alpha when built; -inf is "negative: off" like any negative alpha; ohem_select takes numpy integers."""
    import numpy as np

    x, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"alpha got shape \(1,\)"):
        L.softmax_focal_loss(x, t, alpha=torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"alpha got \[0.5\]|alpha got shape \(1,\)"):
        L.softmax_focal_loss(x, t, alpha=[0.5])
    assert torch.equal(
        L.softmax_focal_loss(x, t, alpha=torch.tensor(0.5)), L.softmax_focal_loss(x, t, alpha=0.5)
    )
    with pytest.raises(ValueError, match="alpha got -0.5"):
        L.SoftmaxFocalLoss(alpha=-0.5)
    z, y = torch.randn(6), (torch.rand(6) < 0.5).float()
    off = L.sigmoid_focal_loss(z, y, alpha=None)
    assert torch.equal(L.sigmoid_focal_loss(z, y, alpha=-float("inf")), off)
    assert torch.equal(L.FocalLoss(alpha=-float("inf"))(z, y), off)
    assert L.ohem_select(torch.tensor([0.1, 0.9, 0.5]), k=np.int64(2)).tolist() == [1, 2]


def test_reduced_losses_are_the_same_bits_with_one_and_two_threads():
    """Issue 22, item 3: reduced values differed by one ulp between 1 and 2 threads (torch adds a long vector
    with one partial sum per thread); the fused kernel and the plain expressions now add in a fixed order."""
    g = torch.Generator().manual_seed(7)
    n = 200_000
    x, y, soft = (
        torch.randn(n, generator=g) * 3,
        (torch.rand(n, generator=g) < 0.1).float(),
        torch.rand(n, generator=g),
    )
    xm, tm = torch.randn(n // 10, 10, generator=g), torch.randint(0, 10, (n // 10,), generator=g)
    cases = [
        lambda: L.sigmoid_focal_loss(x, y, reduction="sum"),
        lambda: L.sigmoid_focal_loss(x, soft, reduction="mean"),
        lambda: L.sigmoid_focal_loss(x, y, alpha=None),
        lambda: L.poly1_cross_entropy(x, y),
        lambda: L.poly1_focal_loss(x, y),
        lambda: L.softmax_focal_loss(xm, tm),
    ]
    previous = torch.get_num_threads()
    try:
        for case in cases:
            torch.set_num_threads(1)
            one = case()
            torch.set_num_threads(2)
            assert torch.equal(one, case())
    finally:
        torch.set_num_threads(previous)
