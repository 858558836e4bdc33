"""The loss library's last edge cases (issue 32): infinite logits, tensor hyperparameters, buffers that follow
``.to()``, the Poly-1 epsilon bound everywhere, and targets outside [0, 1]."""

import pytest
import torch
import torchvision
from torch.func import grad as func_grad
from torch.func import vmap

from flx.losses import (
    Poly1FocalLoss,
    SoftmaxFocalLoss,
    poly1_focal_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
)

INF = float("inf")
X = torch.tensor([INF, -INF, INF, -INF, 0.7])
Y = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_infinite_logits_give_their_limits_and_zero_gradient_where_the_loss_is_zero(gamma):
    x = X.clone().requires_grad_()
    loss = sigmoid_focal_loss(x, Y, gamma=gamma, reduction="none")
    loss.sum().backward()
    assert loss[:4].tolist() == [0.0, 0.0, INF, INF] and torch.isfinite(loss[4])
    assert x.grad[:2].tolist() == [0.0, 0.0] and torch.isfinite(x.grad).all()
    assert x.grad[2:4].tolist() == pytest.approx([0.75, -0.25])  # the gradient's limits: 1 - alpha, -alpha
    traced = func_grad(lambda a: sigmoid_focal_loss(a, Y, gamma=gamma, reduction="sum"))(X)
    assert traced[:2].tolist() == [0.0, 0.0] and torch.isfinite(traced).all()
    mapped = vmap(lambda a, b: sigmoid_focal_loss(a, b, gamma=gamma, reduction="none"))(X[None], Y[None])[0]
    assert mapped[:4].tolist() == loss[:4].tolist() and mapped[4] == pytest.approx(float(loss[4]), rel=1e-6)
    soft = sigmoid_focal_loss(X, torch.tensor([1.0, 0.0, 0.5, 0.5, 0.5]), gamma=gamma, reduction="sum")
    assert soft.item() == INF  # a soft target at an infinite logit: inf, not NaN


def test_infinite_logits_give_the_same_values_compiled():
    compiled = torch.compile(sigmoid_focal_loss, fullgraph=True)
    assert compiled(X, Y, reduction="none")[:4].tolist() == [0.0, 0.0, INF, INF]


@pytest.mark.parametrize("name", ["alpha", "gamma"])
def test_a_tensor_hyperparameter_that_requires_grad_is_refused_in_one_line(name):
    value = torch.tensor(0.25 if name == "alpha" else 2.0, requires_grad=True)
    with pytest.raises(
        ValueError, match=f"^{name} got a tensor that requires grad; accepted: .*{name}.detach"
    ):
        sigmoid_focal_loss(torch.randn(4), torch.ones(4), **{name: value})
    assert sigmoid_focal_loss(torch.randn(4), torch.ones(4), **{name: value.detach()}).shape == (4,)


@pytest.mark.parametrize("module", [SoftmaxFocalLoss, Poly1FocalLoss])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_a_per_class_alpha_follows_to(module, dtype):
    loss = module(alpha=[0.2, 0.5, 0.9]).to(dtype)
    assert loss.alpha.dtype == dtype and "alpha" in dict(loss.named_buffers())
    assert module(alpha=[0.2, 0.5, 0.9]).double().alpha.dtype == torch.float64


@pytest.mark.parametrize("alpha", [[0.2, 0.5, 0.9], torch.tensor([0.2, 0.5, 0.9])])
def test_the_poly1_focal_epsilon_bound_holds_eager_and_compiled(alpha):
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="epsilon got -0.5; accepted: a number >= -0.2"):
        poly1_focal_loss(x, y, alpha=alpha, epsilon=-0.5)
    compiled = torch.compile(poly1_focal_loss)
    with pytest.raises(Exception, match="epsilon"):  # refused compiled as well (no value below the bound)
        compiled(x, y, alpha=alpha, epsilon=-0.5)
    assert torch.isfinite(compiled(x, y, alpha=alpha, epsilon=-0.1))


def test_a_target_outside_0_1_gives_one_value_whatever_its_neighbours():
    x = torch.tensor([0.3, -1.0, 2.0])
    expected = torchvision.ops.sigmoid_focal_loss(x, torch.tensor([2.0, 0.0, 1.0]), reduction="none")[0]
    for neighbours in ([0.0, 1.0], [0.5, 1.0], [0.0, 0.0]):
        y = torch.tensor([2.0, *neighbours])
        assert sigmoid_focal_loss(x, y, reduction="none")[0] == pytest.approx(float(expected), rel=1e-6)
    as_integers = sigmoid_focal_loss(x, torch.tensor([2, 0, 1]), reduction="none")[0]
    assert as_integers == pytest.approx(float(expected), rel=1e-6)
    assert softmax_focal_loss(torch.randn(3, 4), torch.tensor([0, 1, 3])).isfinite()
