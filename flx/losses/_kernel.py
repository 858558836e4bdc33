"""The sigmoid focal loss's elementwise terms and its fused CPU kernel: loss and closed-form gradient in one
pass over chunks of the input, one chunk range per thread, with per-thread reused work buffers.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from flx.losses._checks import compute_dtype, ordered_sum, result_dtype

# Elements per chunk of the fused CPU kernel: a chunk, its inputs and its work buffers (about 2.5 MB) stay in
# cache, and the Python cost of its ~15 ops (~3 us each) is a small part of the chunk's time. Measured on 2 cores
# (10^7 logits, 1 thread): 8192 -> 280 ms, 16384 -> 248 ms, 30720 -> 197 ms, 61440 -> 176 ms.
_CHUNK = 1 << 16


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


def sigmoid_focal_elements(x: torch.Tensor, y: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Per-element sigmoid focal loss alpha_t (1 - p_t)^gamma (-log p_t), in x's (compute) dtype."""
    q, ce = binary_terms(x, y)
    loss = safe_pow(q, gamma) * ce
    if alpha >= 0:
        loss = loss * ((1 - alpha) + (2 * alpha - 1) * y)  # alpha_t = alpha y + (1 - alpha)(1 - y)
    return loss


def _batched(t: torch.Tensor) -> bool:
    """Whether ``t`` is vmapped (torch.func's or autograd's own batched gradients): in-place ops cannot take it."""
    functorch = torch._C._functorch
    return functorch.is_functorch_wrapped_tensor(t) or functorch.is_legacy_batchedtensor(t)


_LOCAL = threading.local()


_POOL: list = [None, 0]  # [executor, its size]


def _reset_pool() -> None:  # a forked child has no worker threads; its copy of the executor must not be used
    _POOL[0], _POOL[1] = None, 0


os.register_at_fork(after_in_child=_reset_pool)


def _executor(workers: int) -> ThreadPoolExecutor:
    if _POOL[0] is None or _POOL[1] != workers:
        if _POOL[0] is not None:
            _POOL[0].shutdown(wait=False)
        _POOL[0], _POOL[1] = ThreadPoolExecutor(workers, thread_name_prefix="flx-loss"), workers
    return _POOL[0]


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


def _hard_chunk(x, y, alpha, gamma, scale, out, grad, ws):
    r"""One chunk with targets in {0, 1}; returns (sum of w l, sum of y w l) as 0-d tensors (the
    loss sum is their alpha-weighted combination), or None when ``out`` takes the elements.

    With z = -x_t = x (1 - 2y), q = 1 - p_t = sigmoid(z), l = -log p_t = softplus(z), w = q^gamma:

        FL = alpha_t w l,   dFL/dx = c w (q + gamma l p_t),   c = (1 - alpha) - y  (1 - 2y with alpha off)

    (the paper's Appendix B; the q^(gamma - 1) of the chain rule cancels and is never formed). z is x (1 - 2y),
    never x - 2 x y, which is inf - inf at an infinite logit: there the loss is 0 with gradient 0, or infinite with
    the gradient's limit c (l p_t -> 0).
    """
    z, q, w, t = ws[:4]
    torch.mul(y, -2.0, out=z).add_(1.0).mul_(x)
    torch.sigmoid(z, out=q)
    torch._C._nn.softplus(z, 1, 20, out=z)  # z now holds l
    weighted = gamma != 0
    if weighted:
        torch.pow(q, gamma, out=w)
        torch.mul(z, w, out=t)  # w l
    le = t if weighted else z
    total = _chunk_loss(le, y, alpha, out, ws[6])
    if grad is not None:
        torch.addcmul(z, z, q, value=-1.0, out=t)  # l p_t = l - l q
        # inf * 0 at z = +inf: its limit 0
        torch.nan_to_num(t, nan=0.0, posinf=math.inf, neginf=-math.inf, out=t)
        inner = torch.add(q, t, alpha=gamma, out=t) if weighted else q
        if weighted:
            inner.mul_(w)
        if alpha >= 0:
            torch.mul(inner, (1 - alpha) * scale, out=grad).addcmul_(inner, y, value=-scale)
        else:
            torch.mul(inner, scale, out=grad).addcmul_(inner, y, value=-2 * scale)
    return total


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
        # an infinite logit (inf - inf above): the gradient's limit; read on the CPU only (a device has no host
        # sync to spare, as for the 0/1 check)
        if _on_host(x.device) and not bool(torch.isfinite(grad).all()):
            torch.where(torch.isinf(x), _grad_limits(x, y, alpha, gamma) * scale, grad, out=grad)
    return total


def _grad_limits(x, y, alpha, gamma) -> torch.Tensor:
    """dFL/dx as x -> +inf (alpha_t (1 - y)^(gamma + 1)) and -inf (-alpha_t y^(gamma + 1)): 0 where the loss is 0."""
    base = torch.where(x > 0, 1 - y, y)
    a_t = (1 - alpha) + (2 * alpha - 1) * y if alpha >= 0 else torch.ones_like(y)
    return torch.where(x > 0, 1.0, -1.0) * a_t * base.pow(gamma) * base


def _is_hard(y: torch.Tensor) -> bool:
    """Whether a CPU chunk of targets is all 0/1: exactly when clamping to [0, 1] and rounding leave every target as
    it is (a target outside [0, 1], such as 2, makes its chunk take the general formulas, so its value never
    depends on its neighbours). A float32 ``dot(y, y) == sum(y)`` test, used before, lost y = 0.9999 among 65,536
    ones to rounding and took it as 1."""
    return torch.equal(y, y.clamp(0.0, 1.0).round_())


def _on_host(device: torch.device) -> bool:
    """Whether the kernel runs the CPU way (threads, per-chunk 0/1 check, sums read as Python floats)."""
    return device.type == "cpu"


_DEVICE_CHUNK = 1 << 22  # elements per launch on accelerators: bounds the work buffers at 6 x 16 MB


def _fused(x, y, alpha, gamma, scale, want_elements, want_grad, shape):
    """Runs the kernel over x, y (flat, contiguous, detached; x in the compute dtype). Returns (loss, grad): loss is
    the per-element tensor (of ``shape``) when ``want_elements`` else a 0-d float64 sum, added in chunk order so
    that it does not depend on thread timing; grad, of ``shape``, is ``scale * dFL/dx``, or None."""
    n = x.numel()
    out = torch.empty(shape, dtype=x.dtype, device=x.device) if want_elements else None
    grad = torch.empty(shape, dtype=x.dtype, device=x.device) if want_grad else None
    out_flat = None if out is None else out.view(-1)
    grad_flat = None if grad is None else grad.view(-1)
    host = _on_host(x.device)
    y = y.to(x.dtype)
    chunk = _CHUNK if host else _DEVICE_CHUNK
    starts = list(range(0, n, chunk))
    a_pos, a_neg = (1 - alpha, 2 * alpha - 1) if alpha >= 0 else (1.0, 0.0)

    def work(first: int, last: int):
        full = _workspace(7, min(chunk, n), x.dtype, x.device)
        sums = []
        for i in range(first, last):
            a, b = starts[i], min(starts[i] + chunk, n)
            ws = full if b - a == full[0].numel() else [r[: b - a] for r in full]
            xc, yc = x[a:b], y[a:b]
            # a device has no host sync to spare for the check, so it always takes the general formulas
            hard = host and _is_hard(yc)  # integer targets too: a 2 among them is not 0/1
            total = (_hard_chunk if hard else _soft_chunk)(
                xc,
                yc,
                alpha,
                gamma,
                scale,
                None if out is None else out_flat[a:b],
                None if grad is None else grad_flat[a:b],
                ws,
            )
            if total is None:
                continue
            s, d = total
            if host:  # no sync on the CPU: Python floats, added exactly (fsum) in chunk order
                sums.append(float(s) * a_pos + (float(d) * a_neg if d is not None else 0.0))
            else:
                sums.append(s.double() * a_pos + (d.double() * a_neg if d is not None else 0.0))
        return sums

    workers = min(torch.get_num_threads(), len(starts) // 4) if host else 1
    if workers <= 1:
        sums = work(0, len(starts))
    else:  # one contiguous range of chunks per thread: one join per call, not one barrier per op
        bounds = [round(k * len(starts) / workers) for k in range(workers + 1)]
        futures = [_executor(workers).submit(work, bounds[k], bounds[k + 1]) for k in range(workers)]
        sums = [s for f in futures for s in f.result()]
    if want_elements:
        if host and not bool(torch.isfinite(out).all()):  # an infinite logit: its limit, not inf - inf
            out = torch.where(
                torch.isnan(out) & ~torch.isnan(x.view(shape)), _limits(x, y, alpha, gamma, shape), out
            )
        return out, grad
    if host:
        total = _fsum(sums)
        if not math.isfinite(total):  # an infinite logit: the sums' alpha_t combination is inf - inf
            total = float(_limits(x, y, alpha, gamma, (n,)).double().sum())
        return torch.tensor(total, dtype=torch.float64), grad
    return (torch.stack(sums).sum() if sums else torch.zeros((), dtype=torch.float64, device=x.device)), grad


def _limits(x, y, alpha, gamma, shape) -> torch.Tensor:
    """Per-element loss where an infinite logit gets its limit (inf on the wrong side, 0 on the right one, soft
    targets too): :func:`sigmoid_focal_elements`, slower than the chunks' formulas; used only when they gave a
    non-finite result."""
    return sigmoid_focal_elements(x, y, alpha, gamma).view(shape)


def _fsum(values: list) -> float:
    """math.fsum, or nan where it refuses (inf + -inf)."""
    try:
        return math.fsum(values)
    except ValueError:
        return math.nan


class SigmoidFocal(torch.autograd.Function):
    r"""Sigmoid focal loss whose forward also computes the closed-form gradient (see :func:`_hard_chunk`).

    The forward saves that gradient (one tensor of the input's shape, no graph of intermediates) and the backward
    hands it to autograd, scaled in place by the incoming gradient unless that is 1. The buffer is given away, not
    kept, so autograd receives a fresh tensor that nothing else holds, and stores it as ``.grad`` without a copy.
    A second backward (``retain_graph=True``) runs the same kernel again, so it gives the same bits. A backward
    that needs a graph (``create_graph=True``: Hessians, gradient penalties, ``gradgradcheck``) and gradients for
    the targets differentiate the plain expression (:func:`sigmoid_focal_elements`) on the saved inputs
    instead, so derivatives of every order are autograd's.
    """

    @staticmethod
    def forward(inputs, targets, alpha, gamma, scale, reduction, want_grad):
        cdtype = compute_dtype(inputs.dtype)
        x = inputs.detach().reshape(-1).to(cdtype).contiguous()
        y = targets.detach().reshape(-1).contiguous()
        with _no_autocast(inputs.device.type):
            loss, grad = _fused(x, y, alpha, gamma, scale, reduction == "none", want_grad, inputs.shape)
        if reduction == "mean":
            loss = loss * scale
        return loss.to(result_dtype(inputs)), grad

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, alpha, gamma, scale, reduction, _ = inputs
        ctx.save_for_backward(x, y)
        ctx.args = (alpha, gamma, scale, reduction)
        ctx.shape, ctx.dtype = x.shape, x.dtype
        ctx.set_materialize_grads(False)  # else autograd passes a zero tensor the input's size for output[1]
        ctx.grad = output[1]
        if output[1] is not None:
            ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad_loss, _):
        if grad_loss is None:
            return None, None, None, None, None, None, None
        alpha, gamma, scale, reduction = ctx.args
        fast, ctx.grad = ctx.grad, None
        need_x, need_y = ctx.needs_input_grad[:2]
        if need_x and not need_y and not torch.is_grad_enabled():
            if fast is None:  # a second backward (retain_graph): the same kernel again, so the same bits
                x, y = ctx.saved_tensors
                flat = x.detach().reshape(-1).to(compute_dtype(x.dtype)).contiguous()
                with _no_autocast(x.device.type):
                    y_flat = y.detach().reshape(-1).contiguous()
                    _, fast = _fused(flat, y_flat, alpha, gamma, scale, False, True, ctx.shape)
            if _batched(grad_loss):  # vmapped: is_grads_batched, jacobian(vectorize=True), torch.func
                return (fast * grad_loss.to(fast.dtype)).to(ctx.dtype), None, None, None, None, None, None
            unit = grad_loss.dim() == 0 and grad_loss.device.type == "cpu" and float(grad_loss) == 1.0
            if not unit:
                fast.mul_(grad_loss.to(fast.dtype))
            # ``fast`` has the input's shape and is not a view, so AccumulateGrad can keep it without a copy
            return fast.to(ctx.dtype), None, None, None, None, None, None
        x, y = ctx.saved_tensors
        wanted = [t for t, need in ((x, need_x), (y, need_y)) if need]
        with torch.enable_grad():
            cdtype = compute_dtype(x.dtype)
            elements = sigmoid_focal_elements(x.to(cdtype), y.to(cdtype), alpha, gamma)
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
        return gx, gy, None, None, None, None, None


@contextlib.contextmanager
def _no_autocast(device_type: str):
    try:
        ctx = torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type autocast does not support
        ctx = contextlib.nullcontext()
    with ctx:
        yield
