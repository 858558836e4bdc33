"""The multi-class (softmax) focal family: its plain expression and its fused CPU pass as an autograd function.

The fused pass (:func:`flx.losses._fused.softmax_rows`) reads each row of logits once, writes the row's loss and
its closed-form gradient; the forward saves that gradient and the backward hands it to autograd, as
:class:`flx.losses._kernel.SigmoidFocal` does. A backward that needs a graph differentiates the plain expression.
"""

from __future__ import annotations

import numpy as np
import torch

from flx.losses._checks import compute_dtype, kept_rows, result_dtype
from flx.losses._fused import ROWS, softmax_rows
from flx.losses._kernel import batched, fsum, no_autocast, safe_pow
from flx.losses.threads import host_empty, in_threads


def softmax_terms(z: torch.Tensor, t: torch.Tensor):
    """(1 - p_t, log p_t) from log-softmax: 1 - p_t = -expm1(log p_t) keeps its precision as p_t -> 1, and a class
    masked with -inf logits gets probability 0 and gradient 0, as in F.cross_entropy."""
    logp_t = torch.log_softmax(z, dim=1).gather(1, t[:, None]).squeeze(1)
    return -torch.expm1(logp_t), logp_t


def softmax_focal_rows(inputs, targets, weights, gamma, epsilon, ignore_index):
    """(per-row loss, keep): -alpha_t (1 - p_t)^gamma log p_t + epsilon (1 - p_t)^(gamma + 1), 0 where ignored, as
    a plain differentiable expression (the fused pass's reference); ``weights`` None, a number or a (C,) tensor."""
    z, t, keep = kept_rows(inputs.to(compute_dtype(inputs.dtype)), targets, ignore_index)
    q, logp_t = softmax_terms(z, t)
    w = safe_pow(q, gamma)
    loss = -w * logp_t
    if isinstance(weights, torch.Tensor):
        loss = loss * weights[t]
    elif weights is not None:
        loss = loss * weights
    if epsilon:  # the Poly-1 term, not alpha-weighted
        loss = loss + epsilon * q * w
    return torch.where(keep, loss, 0.0), keep


def fused_rows(inputs, targets, weights, gamma, epsilon, ignore_index, scale, elements, want_grad):
    """The fused pass over (N, C, ...) logits: (loss, grad). loss is per element (of targets' shape, in the compute
    dtype) when ``elements``, else the 0-d float64 sum times ``scale``; grad (inputs' shape) is the gradient of
    that loss, or None."""
    cdtype = compute_dtype(inputs.dtype)
    with no_autocast("cpu"):  # the only torch computation here (the rest is numba's)
        z, t, keep = kept_rows(inputs.detach().to(cdtype), targets.detach(), ignore_index)
    z, t, keep = z.contiguous(), t.contiguous(), keep.contiguous()
    m, ncls = z.shape
    rows = host_empty((m,), cdtype)
    grad = host_empty((m, ncls), cdtype) if want_grad else None
    per_class = isinstance(weights, torch.Tensor)
    w_np = weights.detach().to(cdtype).contiguous().numpy() if per_class else np.empty(0, z.numpy().dtype)
    alpha = -1.0 if weights is None or per_class else float(weights)
    chunks = -(-m // ROWS)
    sums = np.zeros(chunks)
    arrays = (z.numpy(), t.numpy(), keep.numpy(), w_np)
    outs = (rows.numpy(), None if grad is None else grad.numpy(), sums)

    in_threads(
        lambda c0, c1: softmax_rows(*arrays, alpha, gamma, epsilon, scale, *outs, c0, c1), chunks, 2, outs[:2]
    )
    if grad is not None and inputs.dim() > 2:  # (N * d..., C) rows back to (N, C, d...)
        grad = grad.view(inputs.shape[0], *inputs.shape[2:], ncls).movedim(-1, 1)
    if elements:
        return rows.view(targets.shape), grad
    return torch.tensor(fsum(sums.tolist()) * scale, dtype=torch.float64), grad


class SoftmaxFocal(torch.autograd.Function):
    """Softmax focal loss (and its Poly-1 form) whose forward also computes the closed-form gradient; see
    :class:`flx.losses._kernel.SigmoidFocal` for how the gradient is handed over. ``scale`` multiplies the sum
    (1 / the kept count for a mean)."""

    @staticmethod
    def forward(inputs, targets, weights, gamma, epsilon, ignore_index, scale, reduction, want_grad):
        elements = reduction == "none"
        loss, grad = fused_rows(
            inputs, targets, weights, gamma, epsilon, ignore_index, scale, elements, want_grad
        )
        return loss.to(result_dtype(inputs)), grad

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, weights, gamma, epsilon, ignore_index, scale, reduction, _ = inputs
        tensor_weights = weights if isinstance(weights, torch.Tensor) else None
        ctx.save_for_backward(x, y, tensor_weights)
        ctx.args = (
            None if tensor_weights is not None else weights,
            gamma,
            epsilon,
            ignore_index,
            scale,
            reduction,
        )
        ctx.dtype = x.dtype
        ctx.set_materialize_grads(False)
        ctx.grad = output[1]
        if output[1] is not None:
            ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad_loss, _):
        none = (None,) * 8
        if grad_loss is None:
            return None, *none
        fast, ctx.grad = ctx.grad, None
        x, y, tensor_weights = ctx.saved_tensors
        number, gamma, epsilon, ignore_index, scale, reduction = ctx.args
        weights = tensor_weights if tensor_weights is not None else number
        if not torch.is_grad_enabled():
            if fast is None:  # a second backward (retain_graph): the same kernel again, so the same bits
                elements = reduction == "none"
                _, fast = fused_rows(x, y, weights, gamma, epsilon, ignore_index, scale, elements, True)
            if reduction == "none":  # one incoming gradient per element: per row of classes
                return (fast * grad_loss.unsqueeze(1).to(fast.dtype)).to(ctx.dtype), *none
            if batched(grad_loss) or not (grad_loss.dim() == 0 and float(grad_loss) == 1.0):
                return (fast * grad_loss.to(fast.dtype)).to(ctx.dtype), *none
            return fast.to(ctx.dtype), *none  # not a view, the input's shape: .grad keeps it without a copy
        with torch.enable_grad():  # a graph of the gradient, or a second backward: the plain expression
            rows, _ = softmax_focal_rows(x, y, weights, gamma, epsilon, ignore_index)
            loss = rows.view(y.shape) if reduction == "none" else rows.sum() * scale
            (gx,) = torch.autograd.grad(
                loss, x, grad_loss.to(loss.dtype), create_graph=torch.is_grad_enabled()
            )
        return gx, *none
