"""``flx::sigmoid_focal`` and ``flx::softmax_focal``: the fused CPU passes as ``torch.library`` custom operators,
so that ``torch.compile`` (``fullgraph=True`` included) calls them as opaque kernels instead of tracing the
losses' formulas.

The operator returns the loss (per element, or its float64 sum) and the gradient it computed on the way
(``scale * dloss/dx``; an empty tensor when not wanted). Its fake implementation gives those shapes and dtypes
without running anything, and its backward is that saved gradient times the incoming one: the compiled graph's
backward is one multiplication. The eager path is :class:`flx.losses._kernel.SigmoidFocal` (same kernel, plus
second derivatives and vmap, which a compiled graph does not need from it).
"""

from __future__ import annotations

import torch

from flx.losses._checks import compute_dtype
from flx.losses._kernel import fused_pass
from flx.losses._softmax import fused_rows


@torch.library.custom_op("flx::sigmoid_focal", mutates_args=(), device_types="cpu")
def sigmoid_focal_op(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    gamma: float,
    epsilon: float,
    scale: float,
    elements: bool,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, gradient): the loss per element in the compute dtype when ``elements``, else its 0-d float64 sum
    times ``scale`` (1 / the count for a mean); the gradient of that loss, in the compute dtype, or an empty tensor
    unless ``want_grad``."""
    loss, grad = fused_pass(inputs, targets, alpha, gamma, epsilon, scale, elements, want_grad)
    return loss, (grad if grad is not None else loss.new_empty(0, dtype=compute_dtype(inputs.dtype)))


@sigmoid_focal_op.register_fake
def _fake(inputs, targets, alpha, gamma, epsilon, scale, elements, want_grad):
    cdtype = compute_dtype(inputs.dtype)
    loss = (
        inputs.new_empty(inputs.shape, dtype=cdtype)
        if elements
        else inputs.new_empty((), dtype=torch.float64)
    )
    grad = inputs.new_empty(inputs.shape if want_grad else (0,), dtype=cdtype)
    return loss, grad


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.dtype = inputs[0].dtype


def _backward(ctx, grad_loss, _):
    (grad,) = ctx.saved_tensors
    return (grad * grad_loss.to(grad.dtype)).to(ctx.dtype), None, None, None, None, None, None, None


sigmoid_focal_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("flx::softmax_focal", mutates_args=(), device_types="cpu")
def softmax_focal_op(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None,
    alpha: float,
    gamma: float,
    epsilon: float,
    ignore_index: int,
    scale: float,
    elements: bool,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, gradient) of the multi-class focal family: per element (targets' shape, 0 where ignored) when
    ``elements``, else the float64 sum times ``scale``; per-class ``weights`` or one ``alpha`` (negative: none)."""
    chosen = weights if weights is not None else (None if alpha < 0 else alpha)
    loss, grad = fused_rows(inputs, targets, chosen, gamma, epsilon, ignore_index, scale, elements, want_grad)
    cdtype = compute_dtype(inputs.dtype)
    return loss, (grad.contiguous() if grad is not None else inputs.new_empty(0, dtype=cdtype))


@softmax_focal_op.register_fake
def _fake_softmax(inputs, targets, weights, alpha, gamma, epsilon, ignore_index, scale, elements, want_grad):
    cdtype = compute_dtype(inputs.dtype)
    loss = (
        inputs.new_empty(targets.shape, dtype=cdtype)
        if elements
        else inputs.new_empty((), dtype=torch.float64)
    )
    return loss, inputs.new_empty(inputs.shape if want_grad else (0,), dtype=cdtype)


def _backward_softmax(ctx, grad_loss, _):
    (grad,) = ctx.saved_tensors
    incoming = grad_loss.to(grad.dtype)
    if ctx.elements:  # one incoming gradient per element: per row of classes
        incoming = incoming.unsqueeze(1)
    return (grad * incoming).to(ctx.dtype), *(None,) * 9


def _setup_softmax(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.dtype, ctx.elements = inputs[0].dtype, inputs[8]


softmax_focal_op.register_autograd(_backward_softmax, setup_context=_setup_softmax)
