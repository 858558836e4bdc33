"""The losses as ``torch.nn.Module`` s, arguments checked when built."""

from __future__ import annotations

import math
import numbers

import torch

from flx.losses._checks import (
    as_number,
    check_alpha,
    check_epsilon,
    check_gamma,
    check_ignore_index,
    check_reduction,
)
from flx.losses.functional import (
    poly1_cross_entropy,
    poly1_focal_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
)


class _LossModule(torch.nn.Module):
    _fn = None
    parse_fields: tuple[str, ...] = ()

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, normalizer=None) -> torch.Tensor:
        """The loss of ``inputs`` (logits) against ``targets``; ``normalizer`` as in the function."""
        kwargs = {name: getattr(self, name) for name in self.parse_fields}
        return type(self)._fn(inputs, targets, normalizer=normalizer, **kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self.parse_fields)


class FocalLoss(_LossModule):
    """:func:`sigmoid_focal_loss` as a module: ``FocalLoss(alpha=0.25, gamma=2.0, reduction="none")``."""

    _fn = staticmethod(sigmoid_focal_loss)
    parse_fields = ("alpha", "gamma", "reduction")

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, reduction: str = "none") -> None:
        super().__init__()
        check_reduction(reduction)
        a = check_alpha(alpha)
        self.alpha, self.gamma, self.reduction = (a if a >= 0 else None), check_gamma(gamma), reduction


class SoftmaxFocalLoss(_LossModule):
    """:func:`softmax_focal_loss` as a module; a per-class ``alpha`` is a buffer (it moves with ``.to()``)."""

    _fn = staticmethod(softmax_focal_loss)
    parse_fields = ("alpha", "gamma", "ignore_index", "reduction")

    def __init__(
        self, alpha=None, gamma: float = 2.0, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.gamma, self.ignore_index = check_gamma(gamma), check_ignore_index(ignore_index)
        self.reduction = reduction
        _set_alpha(self, alpha, negative_off=False)


class Poly1CrossEntropyLoss(_LossModule):
    """:func:`poly1_cross_entropy` as a module."""

    _fn = staticmethod(poly1_cross_entropy)
    parse_fields = ("epsilon", "ignore_index", "reduction")

    def __init__(self, epsilon: float = 1.0, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.epsilon, self.ignore_index = check_epsilon(epsilon), check_ignore_index(ignore_index)
        self.reduction = reduction


class Poly1FocalLoss(_LossModule):
    """:func:`poly1_focal_loss` as a module; a per-class ``alpha`` is a buffer."""

    _fn = staticmethod(poly1_focal_loss)
    parse_fields = ("alpha", "gamma", "epsilon", "ignore_index", "reduction")

    def __init__(
        self,
        alpha=None,
        gamma: float = 2.0,
        epsilon: float = 1.0,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.gamma, self.ignore_index = check_gamma(gamma), check_ignore_index(ignore_index)
        self.reduction = reduction
        _set_alpha(self, alpha)
        self.epsilon = check_epsilon(epsilon, -1.0)  # the bound that depends on alpha is checked per call


def _set_alpha(module: torch.nn.Module, alpha, negative_off: bool = True) -> None:
    """None, one number, or per-class weights (kept as a buffer so that ``.to(device)`` moves them). A negative
    number turns alpha off where ``negative_off`` (the binary losses); elsewhere it is refused here, when the
    module is built, not at its first forward."""
    if (
        alpha is None
        or isinstance(alpha, numbers.Real)
        or (isinstance(alpha, torch.Tensor) and alpha.dim() == 0)
    ):
        module.alpha = (
            None if alpha is None else as_number("alpha", alpha, "None, a number or per-class weights")
        )
        lowest = -math.inf if negative_off else 0.0
        if module.alpha is not None and not (module.alpha == module.alpha and lowest <= module.alpha <= 1):
            raise ValueError(f"alpha got {alpha!r}; accepted: None, a number in [0, 1], or per-class weights")
        return
    weights = torch.as_tensor(alpha, dtype=torch.float32)
    if weights.dim() != 1 or not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(
            f"alpha got {alpha!r}; accepted: None, a number in [0, 1], or per-class weights >= 0"
        )
    module.register_buffer("alpha", weights)
