"""The sigmoid focal loss's plain expression and its fused pass as an autograd function: on the CPU the numba
kernel of :mod:`flx.losses._fused` (one contiguous range of chunks per thread), on an accelerator the same
formulas as torch operations over large chunks with reused work buffers.
"""

from __future__ import annotations

import contextlib
import math
import threading

import numpy as np
import torch
import torch.nn.functional as F

from flx.losses._checks import compute_dtype, ordered_sum, result_dtype
from flx.losses._fused import focal_chunks
from flx.losses._triton import triton_pass
from flx.losses._triton import usable as triton_usable
from flx.losses.threads import CHUNK, LEAST, host_empty, in_threads


def safe_pow(q: torch.Tensor, gamma: float) -> torch.Tensor:
    """q^gamma for q in [0, 1] whose derivatives of first and second order are finite everywhere.

    Below q = sqrt(tiny) (1e-19 in float32) it is 0: there the loss it multiplies, -log p_t ~ q, is below 1e-19 as
    well, so nothing visible changes, and autograd never forms q^(gamma - 1) or q^(gamma - 2) at q ~ 0 (infinite for
    gamma < 1 or < 2, and 0 * inf = NaN); the discarded branch is evaluated at 1, the classic double-where.
    """
    if gamma == 0:
        return torch.ones_like(q)
    floor = math.sqrt(torch.finfo(q.dtype).tiny)
    big = q > floor
    return torch.where(big, torch.where(big, q, 1.0).pow(gamma), 0.0)


def binary_terms(x: torch.Tensor, y: torch.Tensor):
    """(1 - p_t, -log p_t) with p = sigmoid(x), p_t = p y + (1 - p)(1 - y), exact at y = 0 and y = 1.

    ``lerp`` returns its end points exactly, so for hard targets 1 - p_t is sigmoid(-x_t) and -log p_t is
    softplus(-x_t), with full relative precision even where p_t rounds to 1; for soft targets they are
    torchvision's p + y - 2 p y and BCE-with-logits.
    """
    inf = torch.isinf(x)  # an infinite logit takes its limits below, never inf - inf (traceable: no branch)
    xf = torch.where(inf, 0.0, x)
    q = torch.lerp(torch.sigmoid(xf), torch.sigmoid(-xf), y)
    ce = torch.lerp(F.softplus(xf), F.softplus(-xf), y)
    q_limit = torch.where(x > 0, 1 - y, y)  # x = +inf: p = 1 and p_t = y; x = -inf: p_t = 1 - y
    ce_limit = torch.where(q_limit > 0, math.inf, 0.0)
    return torch.where(inf, q_limit, q), torch.where(inf, ce_limit, ce)


def sigmoid_focal_elements(
    x: torch.Tensor, y: torch.Tensor, alpha: float, gamma: float, epsilon: float = 0.0
) -> torch.Tensor:
    """Per-element sigmoid focal loss alpha_t (1 - p_t)^gamma (-log p_t), plus the Poly-1 term
    epsilon (1 - p_t)^(gamma + 1) unless epsilon is 0, in x's (compute) dtype: the plain expression, the fused
    kernel's reference."""
    q, ce = binary_terms(x, y)
    w = safe_pow(q, gamma)
    loss = w * ce
    if alpha >= 0:
        loss = loss * ((1 - alpha) + (2 * alpha - 1) * y)  # alpha_t = alpha y + (1 - alpha)(1 - y)
    if epsilon != 0:
        loss = loss + epsilon * q * w
    return loss


def batched(t: torch.Tensor) -> bool:
    """Whether ``t`` is vmapped (torch.func's or autograd's own batched gradients): in-place ops cannot take it."""
    functorch = torch._C._functorch
    return functorch.is_functorch_wrapped_tensor(t) or functorch.is_legacy_batchedtensor(t)


_LOCAL = threading.local()


def _workspace(rows: int, n: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """This thread's reusable work buffers, ``rows`` vectors of length n: fresh per-chunk temporaries would each be
    a page-faulting allocation, and indexing one (rows, n) tensor per chunk costs more Python than the op."""
    key = (dtype, device, rows)
    cache = getattr(_LOCAL, "buffers", None)
    if cache is None:
        cache = _LOCAL.buffers = {}
    ws = cache.get(key)
    if ws is None or ws[0].numel() < n:
        ws = cache[key] = list(torch.empty((rows, n), dtype=dtype, device=device).unbind(0))
    return ws


def _chunk_loss(le, y, alpha, out, spare):
    """A chunk's loss from its unweighted terms ``le`` = w l: alpha_t le into ``out`` (then None), or the pair
    (sum le, sum y le), whose combination (1 - alpha) sum + (2 alpha - 1) dot is sum alpha_t le; both added in an
    order independent of the thread count (``spare``: a work buffer for y le)."""
    if out is not None:
        if alpha >= 0:  # alpha_t = (1 - alpha) + (2 alpha - 1) y
            torch.mul(le, 1 - alpha, out=out).addcmul_(le, y, value=2 * alpha - 1)
        else:
            out.copy_(le)
        return None
    return ordered_sum(le), (ordered_sum(torch.mul(y, le, out=spare)) if alpha >= 0 else None)


def _soft_chunk(x, y, alpha, gamma, scale, out, grad, ws):
    r"""One chunk with targets anywhere in [0, 1] (torchvision's soft-target formulas), exact at 0 and 1.

    With p = sigmoid(x), m = 1 - p = sigmoid(-x), q = lerp(p, m, y), l = relu(x) - x y + softplus(-|x|) (= BCE),
    w = q^gamma, D = d log q / dx = (1 - 2y) p m / q:

        FL = alpha_t w l,   dFL/dx = alpha_t w (gamma l D + p - y)
    """
    p, m, q, w, t, u = ws[:6]
    torch.sigmoid(x, out=p)
    torch.neg(x, out=t)
    torch.sigmoid(t, out=m)
    torch.lerp(p, m, y, out=q)
    torch.minimum(p, m, out=t)  # sigmoid(-|x|)
    torch.log1p(t.neg_(), out=t)  # -softplus(-|x|)
    torch.clamp_min(x, 0.0, out=u).addcmul_(x, y, value=-1.0).sub_(t)  # u = l
    weighted = gamma != 0
    if weighted:
        torch.pow(q, gamma, out=w)
    le = torch.mul(u, w, out=t) if weighted else u
    total = _chunk_loss(le, y, alpha, out, ws[6])
    if grad is not None:
        if weighted:  # u <- gamma l D
            torch.mul(p, m, out=t).div_(q.clamp_min_(torch.finfo(q.dtype).tiny))  # p m / q
            torch.mul(y, -2.0, out=q).add_(1.0)  # q <- 1 - 2y (q is no longer needed)
            u.mul_(t).mul_(q)
            torch.sub(p, y, out=t).add_(u, alpha=gamma).mul_(w)  # t <- w (gamma l D + p - y)
        else:
            torch.sub(p, y, out=t)
        if alpha >= 0:
            torch.mul(t, (1 - alpha) * scale, out=grad).addcmul_(t, y, value=(2 * alpha - 1) * scale)
        else:
            torch.mul(t, scale, out=grad)
    return total


def _on_host(device: torch.device) -> bool:
    """Whether the kernel runs the CPU way (numba, threads, sums read as Python floats)."""
    return device.type == "cpu"


_DEVICE_CHUNK = 1 << 22  # elements per launch on accelerators: bounds the work buffers at 6 x 16 MB


def fused_pass(inputs, targets, alpha, gamma, epsilon, scale, want_elements, want_grad):
    """Runs the kernel over ``inputs`` and ``targets`` (any shape, autocast off, in the compute dtype). Returns
    (loss, grad): loss is the per-element tensor (of the inputs' shape) when ``want_elements``, else the 0-d
    float64 sum times ``scale``, added in an order that does not depend on the thread count; grad, of the inputs'
    shape, is ``scale * dloss/dx``, or None. ``epsilon`` (the Poly-1 term) is the CPU's only: the caller passes 0
    on a device."""
    cdtype = compute_dtype(inputs.dtype)
    x = inputs.detach().reshape(-1).to(cdtype).contiguous()
    y = targets.detach().reshape(-1).to(cdtype).contiguous()
    with no_autocast(inputs.device.type):
        loss, grad = _pass(x, y, alpha, gamma, epsilon, scale, want_elements, want_grad, inputs.shape)
    return (loss if want_elements else loss * scale), grad


def _pass(x, y, alpha, gamma, epsilon, scale, want_elements, want_grad, shape):
    if not _on_host(x.device):
        out = torch.empty(shape, dtype=x.dtype, device=x.device) if want_elements else None
        grad = torch.empty(shape, dtype=x.dtype, device=x.device) if want_grad else None
        if triton_usable(x):
            flat = [None if t is None else t.view(-1) for t in (out, grad)]
            done = triton_pass(x, y, alpha, gamma, epsilon, scale, *flat)
            if done is not None:
                return (out if want_elements else done[0]), grad
        return _fused_device(x, y, alpha, gamma, scale, out, grad)
    out = host_empty(shape, x.dtype) if want_elements else None
    grad = host_empty(shape, x.dtype) if want_grad else None
    arrays = x.numpy(), y.numpy()
    chunks = -(-x.numel() // CHUNK)
    sums = np.zeros(chunks)
    out_np = None if out is None else out.view(-1).numpy()
    grad_np = None if grad is None else grad.view(-1).numpy()
    in_threads(
        lambda c0, c1: focal_chunks(*arrays, alpha, gamma, epsilon, scale, out_np, grad_np, sums, c0, c1),
        chunks,
        LEAST,
        (out_np, grad_np),
    )
    if want_elements:
        return out, grad
    return torch.tensor(fsum(sums.tolist()), dtype=torch.float64), grad


def _fused_device(x, y, alpha, gamma, scale, out, grad):
    """The accelerator's way: torch ops over chunks of ``_DEVICE_CHUNK`` with the general formulas, one stream,
    no host sync; the sum stays a device tensor."""
    n = x.numel()
    out_flat = None if out is None else out.view(-1)
    grad_flat = None if grad is None else grad.view(-1)
    a_pos, a_neg = (1 - alpha, 2 * alpha - 1) if alpha >= 0 else (1.0, 0.0)
    full = _workspace(7, min(_DEVICE_CHUNK, n), x.dtype, x.device)
    sums = []
    for a in range(0, n, _DEVICE_CHUNK):
        b = min(a + _DEVICE_CHUNK, n)
        ws = full if b - a == full[0].numel() else [r[: b - a] for r in full]
        total = _soft_chunk(
            x[a:b],
            y[a:b],
            alpha,
            gamma,
            scale,
            None if out is None else out_flat[a:b],
            None if grad is None else grad_flat[a:b],
            ws,
        )
        if total is not None:
            s, d = total
            sums.append(s.double() * a_pos + (d.double() * a_neg if d is not None else 0.0))
    if out is not None:
        return out, grad
    return (torch.stack(sums).sum() if sums else torch.zeros((), dtype=torch.float64, device=x.device)), grad


def fsum(values: list) -> float:
    """math.fsum, or nan where it refuses (inf + -inf)."""
    try:
        return math.fsum(values)
    except ValueError:
        return math.nan


class SigmoidFocal(torch.autograd.Function):
    r"""Sigmoid focal loss (and its Poly-1 form) whose forward also computes the closed-form gradient (see
    :mod:`flx.losses._fused`).

    The forward saves that gradient (one tensor of the input's shape, no graph of intermediates) and the backward
    hands it to autograd, scaled in place by the incoming gradient unless that is 1. The buffer is given away, not
    kept, so autograd receives a fresh tensor that nothing else holds, and stores it as ``.grad`` without a copy.
    A second backward (``retain_graph=True``) runs the same kernel again, so it gives the same bits. A backward
    that needs a graph (``create_graph=True``: Hessians, gradient penalties, ``gradgradcheck``) and gradients for
    the targets differentiate the plain expression (:func:`sigmoid_focal_elements`) on the saved inputs
    instead, so derivatives of every order are autograd's.
    """

    @staticmethod
    def forward(inputs, targets, alpha, gamma, epsilon, scale, reduction, want_grad):
        # scale is 1 unless the reduction is "mean"
        loss, grad = fused_pass(inputs, targets, alpha, gamma, epsilon, scale, reduction == "none", want_grad)
        return loss.to(result_dtype(inputs)), grad

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, alpha, gamma, epsilon, scale, reduction, _ = inputs
        ctx.save_for_backward(x, y)
        ctx.args = (alpha, gamma, epsilon, scale, reduction)
        ctx.dtype = x.dtype
        ctx.set_materialize_grads(False)  # else autograd passes a zero tensor the input's size for output[1]
        ctx.grad = output[1]
        if output[1] is not None:
            ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad_loss, _):
        none = (None,) * 6  # for alpha, gamma, epsilon, scale, reduction, want_grad
        if grad_loss is None:
            return None, None, *none
        alpha, gamma, epsilon, scale, reduction = ctx.args
        fast, ctx.grad = ctx.grad, None
        need_x, need_y = ctx.needs_input_grad[:2]
        if need_x and not need_y and not torch.is_grad_enabled():
            if fast is None:  # a second backward (retain_graph): the same kernel again, so the same bits
                _, fast = fused_pass(*ctx.saved_tensors, alpha, gamma, epsilon, scale, False, True)
            if batched(grad_loss):  # vmapped: is_grads_batched, jacobian(vectorize=True), torch.func
                return (fast * grad_loss.to(fast.dtype)).to(ctx.dtype), None, *none
            unit = grad_loss.dim() == 0 and grad_loss.device.type == "cpu" and float(grad_loss) == 1.0
            if not unit:
                fast.mul_(grad_loss.to(fast.dtype))
            # ``fast`` has the input's shape and is not a view, so AccumulateGrad can keep it without a copy
            return fast.to(ctx.dtype), None, *none
        x, y = ctx.saved_tensors
        wanted = [t for t, need in ((x, need_x), (y, need_y)) if need]
        with torch.enable_grad():
            cdtype = compute_dtype(x.dtype)
            elements = sigmoid_focal_elements(x.to(cdtype), y.to(cdtype), alpha, gamma, epsilon)
            loss = (
                elements if reduction == "none" else elements.sum() * (scale if reduction == "mean" else 1.0)
            )
            grads = torch.autograd.grad(
                loss,
                wanted,
                grad_loss.to(loss.dtype),
                create_graph=torch.is_grad_enabled(),
                allow_unused=True,
            )
        it = iter(grads)
        gx = next(it) if need_x else None
        gy = next(it) if need_y else None
        return gx, gy, *none


@contextlib.contextmanager
def no_autocast(device_type: str):
    try:
        ctx = torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type autocast does not support
        ctx = contextlib.nullcontext()
    with ctx:
        yield
