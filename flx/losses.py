"""Numerically stable classification losses for imbalanced data, all taking logits.

- :func:`sigmoid_focal_loss` / :class:`FocalLoss`: drop-in for ``torchvision.ops.sigmoid_focal_loss`` (same
  argument names, soft targets included), with a fused CPU kernel for the loss and its gradient.
- :func:`softmax_focal_loss` / :class:`SoftmaxFocalLoss`: the C-class focal loss.
- :func:`poly1_cross_entropy`, :func:`poly1_focal_loss` / :class:`Poly1CrossEntropyLoss`,
  :class:`Poly1FocalLoss`: PolyLoss (Leng et al., ICLR 2022).
- :func:`ohem_select`: online hard example mining (Shrivastava et al., CVPR 2016).
- :data:`LOSSES` (defined in :mod:`flx.config`, torch-free): the registry (name -> training objective and its
  hyperparameters) that ``flx run``, ``flx sweep`` and ``flx report`` read. A new loss is one entry there.

Conventions, the same in every loss:

- ``inputs`` are logits, ``targets`` the labels. Binary losses take targets of the inputs' shape with values in
  [0, 1] (0/1, or soft targets for label smoothing and distillation, computed as torchvision does); multi-class
  losses take (N, C, ...) logits and (N, ...) integer class indices, ``ignore_index`` for elements to skip.
- ``alpha`` weights the positive class (alpha_t = alpha for y = 1, 1 - alpha for y = 0) in the binary losses,
  where None or a negative number turns the weighting off, as in torchvision. In the multi-class losses it is
  None (off, the default), one number for every class, or one weight per class.
- ``gamma`` >= 0 and ``epsilon`` are Python numbers; numpy scalars and one-element tensors are accepted too
  (a tensor on a GPU costs a host sync to read; pass a Python number inside ``torch.compile``).
- ``reduction="mean"`` is the mean over the (non-ignored) elements; ``normalizer`` replaces that count with a
  number or 0-d tensor of your own (mmdetection's ``avg_factor``): the paper's normalisation is
  ``normalizer=number_of_positives``; ``F.cross_entropy(weight=)``'s is ``normalizer=alpha[targets].sum()``.
- Losses are computed in float32 (float64 for float64 inputs) whatever the input dtype, and returned in the
  input's dtype, or in float32 under autocast (as torchvision's are).
- Checks on arguments always run. Checks that read the data (targets in [0, 1], class indices in range) cost a
  pass over the targets and, on a GPU, a host sync, so they run only when turned on: ``check_targets(True)``,
  the ``with check_targets():`` context, or ``FLX_CHECK_TARGETS=1`` in the environment. Without them an
  out-of-range class index raises torch's own index error; binary targets outside [0, 1] give meaningless values.

Autograd: every loss has correct first and second derivatives. Under ``torch.compile`` and the ``torch.func``
transforms (``grad``, ``vmap``, ``jacrev``, ...) the losses are plain differentiable expressions, written so
that their derivatives of every order stay finite (no ``(1 - p_t)^(gamma - 1)`` at ``p_t = 1``). In eager mode on
the CPU, :func:`sigmoid_focal_loss` runs a fused kernel that computes the loss and its closed-form gradient in one
pass (see :class:`_SigmoidFocal`); when a graph of the gradient is asked for (``create_graph=True``,
``torch.autograd.functional.hessian``, ``gradgradcheck``) or the targets need a gradient, its backward
differentiates the plain expression instead.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from flx.config import LOSSES, LossSpec, epsilon_bound, get_loss

__all__ = [
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "poly1_cross_entropy",
    "poly1_focal_loss",
    "ohem_select",
    "FocalLoss",
    "SoftmaxFocalLoss",
    "Poly1CrossEntropyLoss",
    "Poly1FocalLoss",
    "check_targets",
    "LossSpec",
    "LOSSES",
    "get_loss",
]

REDUCTIONS = ("none", "mean", "sum")
# Elements per chunk of the fused CPU kernel: a chunk, its inputs and its work buffers (about 2.5 MB) stay in
# cache, and the Python cost of its ~15 ops (~3 us each) is a small part of the chunk's time. Measured on 2 cores
# (10^7 logits, 1 thread): 8192 -> 280 ms, 16384 -> 248 ms, 30720 -> 197 ms, 61440 -> 176 ms.
_CHUNK = 1 << 16


# --------------------------------------------------------------------------------------------------------------
# Validation, shared by every loss (scikit-learn style: say what was wrong and what is accepted).
# --------------------------------------------------------------------------------------------------------------
_CHECK_TARGETS = [os.environ.get("FLX_CHECK_TARGETS", "") not in ("", "0")]


@contextlib.contextmanager
def _restoring(previous: bool):
    try:
        yield
    finally:
        _CHECK_TARGETS[0] = previous


def check_targets(enabled: bool = True):
    """Turn the data checks on targets on (or off): targets in [0, 1] for the binary losses, class indices in
    [0, C) or ``ignore_index`` for the multi-class ones. Off by default, since they read every target (and sync a
    GPU) on every call. Works as a call (``check_targets(True)``, the setting stays) and as a context manager
    (``with check_targets():``, restored on exit)."""
    previous = _CHECK_TARGETS[0]
    _CHECK_TARGETS[0] = bool(enabled)
    return _restoring(previous)


def _number(name: str, value, accepted: str) -> float:
    """A Python float from a Python/numpy number or a one-element tensor; ValueError naming the value otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{name} got {value!r}; accepted: {accepted}")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value)
    if (
        type(value).__module__ == "numpy"
        and getattr(value, "shape", None) == ()
        and value.dtype.kind in "iuf"
    ):
        return float(value)
    raise ValueError(f"{name} got {value!r}; accepted: {accepted}")


def _finite(value: float) -> bool:
    """math.isfinite that torch.compile can trace when it makes a Python float symbolic (dynamic=True)."""
    return -math.inf < value < math.inf


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction got {reduction!r}; accepted: one of {', '.join(REDUCTIONS)}")


def _check_gamma(gamma) -> float:
    accepted = "a number >= 0 (e.g. 0, 0.5, 2)"
    value = _number("gamma", gamma, accepted)
    if not (_finite(value) and value >= 0):
        raise ValueError(f"gamma got {gamma!r}; accepted: {accepted}")
    return value


def _check_alpha(alpha) -> float:
    """Binary alpha: a number in [0, 1], or None / a negative number for off (returned as -1)."""
    accepted = "a number in [0, 1], or None or a negative number to turn alpha-weighting off"
    if alpha is None:
        return -1.0
    value = _number("alpha", alpha, accepted)
    if not (_finite(value) and value <= 1):
        raise ValueError(f"alpha got {alpha!r}; accepted: {accepted}")
    return value if value >= 0 else -1.0


def _check_class_alpha(alpha, num_classes: int, device, dtype):
    """Multi-class alpha: None, one number in [0, 1], or C weights >= 0. Returns None, a float or a tensor."""
    if alpha is None:
        return None
    accepted = "None, a number in [0, 1], or one weight >= 0 per class"
    if isinstance(alpha, numbers.Real) or (isinstance(alpha, torch.Tensor) and alpha.numel() == 1):
        value = _number("alpha", alpha, accepted)
        if not (_finite(value) and 0 <= value <= 1):
            raise ValueError(f"alpha got {alpha!r}; accepted: {accepted}")
        return value
    weights = torch.as_tensor(alpha, dtype=dtype, device=device)
    if weights.shape != (num_classes,):
        raise ValueError(
            f"alpha got shape {tuple(weights.shape)}; accepted: None, a number, or ({num_classes},) per-class weights"
        )
    if (weights.device.type == "cpu" or _CHECK_TARGETS[0]) and not torch.compiler.is_compiling():
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError(
                f"alpha got {weights.tolist()}; accepted: per-class weights that are finite and >= 0"
            )
    return weights


def _check_normalizer(normalizer, reduction: str):
    """None, a number > 0 or a 0-d tensor (its value is not read), only with reduction "mean"."""
    if normalizer is None:
        return None
    if reduction != "mean":
        raise ValueError(
            f"normalizer is given with reduction {reduction!r}; accepted: reduction='mean' (the loss's sum is "
            "divided by the normalizer)"
        )
    if isinstance(normalizer, torch.Tensor):
        if normalizer.numel() != 1:
            raise ValueError(
                f"normalizer got a tensor of shape {tuple(normalizer.shape)}; accepted: one element"
            )
        return normalizer.reshape(())
    value = _number(
        "normalizer", normalizer, "a number > 0 or a one-element tensor (e.g. the number of positives)"
    )
    if not (_finite(value) and value > 0):
        raise ValueError(
            f"normalizer got {normalizer!r}; accepted: a number > 0 or a one-element tensor "
            "(e.g. max(1, number of positives))"
        )
    return value


def _check_tensors(inputs, targets) -> None:
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ValueError(
            f"inputs and targets must be tensors, got {type(inputs).__name__} and {type(targets).__name__}"
        )


def _check_ignore_index(ignore_index) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise ValueError(f"ignore_index got {ignore_index!r}; accepted: an integer (default -100)")
    return int(ignore_index)


def _check_binary(inputs: torch.Tensor, targets: torch.Tensor) -> None:
    _check_tensors(inputs, targets)
    if inputs.shape != targets.shape:
        raise ValueError(
            f"inputs and targets must have the same shape, got {tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    if not inputs.is_floating_point():
        raise ValueError(f"inputs must be a floating-point tensor of logits, got dtype {inputs.dtype}")
    if targets.is_complex():
        raise ValueError(f"targets must be real numbers in [0, 1], got dtype {targets.dtype}")
    if _CHECK_TARGETS[0] and targets.numel():
        bad = (targets < 0) | (targets > 1) | torch.isnan(targets.float())
        if bool(bad.any()):
            raise ValueError(
                f"targets must lie in [0, 1] for the binary losses, found {targets[bad][0].item()!r}"
            )


def _check_multiclass(inputs: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> None:
    _check_tensors(inputs, targets)
    _check_ignore_index(ignore_index)
    if inputs.dim() < 2 or targets.shape != inputs.shape[:1] + inputs.shape[2:]:
        raise ValueError(
            "multi-class losses take inputs of shape (N, C, ...) and class indices of shape (N, ...); "
            f"got {tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    if not inputs.is_floating_point():
        raise ValueError(f"inputs must be a floating-point tensor of logits, got dtype {inputs.dtype}")
    if targets.is_floating_point() or targets.dtype == torch.bool or targets.is_complex():
        raise ValueError(f"targets must hold integer class indices, got dtype {targets.dtype}")
    num_classes = inputs.shape[1]
    if num_classes < 2:
        raise ValueError(f"multi-class losses need at least 2 classes, got C={num_classes}")
    if _CHECK_TARGETS[0]:
        valid = targets[targets != ignore_index]
        bad = valid[(valid < 0) | (valid >= num_classes)]
        if bad.numel():
            raise ValueError(
                f"target class {bad[0].item()} is out of range; classes must lie in [0, {num_classes - 1}] "
                f"or be ignore_index ({ignore_index})"
            )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _result_dtype(inputs: torch.Tensor) -> torch.dtype:
    """The input's dtype, or the computation's (float32) under autocast, as torchvision's losses return."""
    try:
        autocast = torch.is_autocast_enabled(inputs.device.type)
    except (RuntimeError, TypeError):  # a device type autocast does not know
        autocast = False
    return _compute_dtype(inputs.dtype) if autocast else inputs.dtype


def _reduce(loss: torch.Tensor, reduction: str, normalizer=None, keep: torch.Tensor | None = None):
    """Sum, mean (over ``keep`` when given) or per element; ``normalizer`` replaces the mean's count."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if normalizer is not None:
        return total / normalizer
    count = loss.numel() if keep is None else keep.sum()
    return total / count


def _transformed(*tensors: torch.Tensor) -> bool:
    """True under torch.compile, inside a torch.func transform, or for tensor subclasses: places where the
    fused eager kernel (threads, out= buffers, Python floats from tensors) cannot run."""
    if torch.compiler.is_compiling():
        return True
    for t in tensors:
        if type(t) not in (
            torch.Tensor,
            torch.nn.Parameter,
        ) or torch._C._functorch.is_functorch_wrapped_tensor(t):
            return True
    return False


# --------------------------------------------------------------------------------------------------------------
# Plain differentiable forms: what torch.compile, torch.func and higher-order gradients see
# --------------------------------------------------------------------------------------------------------------
def _safe_pow(q: torch.Tensor, gamma: float) -> torch.Tensor:
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


def _binary_terms(x: torch.Tensor, y: torch.Tensor):
    """(1 - p_t, -log p_t) with p = sigmoid(x), p_t = p y + (1 - p)(1 - y), exact at y = 0 and y = 1.

    ``lerp`` returns its end points exactly, so for hard targets 1 - p_t is sigmoid(-x_t) and -log p_t is
    softplus(-x_t), with full relative precision even where p_t rounds to 1; for soft targets they are
    torchvision's p + y - 2 p y and BCE-with-logits.
    """
    q = torch.lerp(torch.sigmoid(x), torch.sigmoid(-x), y)
    ce = torch.lerp(F.softplus(x), F.softplus(-x), y)
    return q, ce


def _sigmoid_focal_elements(x: torch.Tensor, y: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Per-element sigmoid focal loss alpha_t (1 - p_t)^gamma (-log p_t), in x's (compute) dtype."""
    q, ce = _binary_terms(x, y)
    loss = _safe_pow(q, gamma) * ce
    if alpha >= 0:
        loss = loss * ((1 - alpha) + (2 * alpha - 1) * y)  # alpha_t = alpha y + (1 - alpha)(1 - y)
    return loss


# --------------------------------------------------------------------------------------------------------------
# The fused CPU kernel: loss and closed-form gradient in one pass over cache-sized chunks
# --------------------------------------------------------------------------------------------------------------
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


def _chunk_loss(le, y, alpha, out):
    """A chunk's loss from its unweighted terms ``le`` = w l: alpha_t le into ``out`` (then None), or the pair
    (sum le, sum y le), whose combination (1 - alpha) sum + (2 alpha - 1) dot is sum alpha_t le."""
    if out is not None:
        if alpha >= 0:  # alpha_t = (1 - alpha) + (2 alpha - 1) y
            torch.mul(le, 1 - alpha, out=out).addcmul_(le, y, value=2 * alpha - 1)
        else:
            out.copy_(le)
        return None
    return le.sum(), (torch.dot(y, le) if alpha >= 0 else None)


def _hard_chunk(x, y, alpha, gamma, scale, out, grad, ws):
    r"""One chunk with targets in {0, 1}; returns (sum of w l, sum of y w l) as 0-d tensors (the
    loss sum is their alpha-weighted combination), or None when ``out`` takes the elements.

    With z = -x_t = x (1 - 2y), q = 1 - p_t = sigmoid(z), l = -log p_t = softplus(z), w = q^gamma:

        FL = alpha_t w l,   dFL/dx = c w (q + gamma l p_t),   c = (1 - alpha) - y  (1 - 2y with alpha off)

    (the paper's Appendix B; the q^(gamma - 1) of the chain rule cancels and is never formed).
    """
    z, q, w, t = ws[:4]
    torch.addcmul(x, x, y, value=-2.0, out=z)
    torch.sigmoid(z, out=q)
    torch._C._nn.softplus(z, 1, 20, out=z)  # z now holds l
    weighted = gamma != 0
    if weighted:
        torch.pow(q, gamma, out=w)
        torch.mul(z, w, out=t)  # w l
    le = t if weighted else z
    total = _chunk_loss(le, y, alpha, out)
    if grad is not None:
        torch.addcmul(z, z, q, value=-1.0, out=t)  # l p_t = l - l q
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
    p, m, q, w, t, u = ws
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
    total = _chunk_loss(le, y, alpha, out)
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


def _is_hard(y: torch.Tensor) -> bool:
    """Whether a CPU chunk of targets in [0, 1] is all 0/1: sum y^2 = sum y holds exactly then, and only then."""
    return float(torch.dot(y, y)) == float(y.sum())


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
    hard_dtype = not y.is_floating_point()
    y = y.to(x.dtype)
    chunk = _CHUNK if host else _DEVICE_CHUNK
    starts = list(range(0, n, chunk))
    a_pos, a_neg = (1 - alpha, 2 * alpha - 1) if alpha >= 0 else (1.0, 0.0)

    def work(first: int, last: int):
        full = _workspace(6, min(chunk, n), x.dtype, x.device)
        sums = []
        for i in range(first, last):
            a, b = starts[i], min(starts[i] + chunk, n)
            ws = full if b - a == full[0].numel() else [r[: b - a] for r in full]
            xc, yc = x[a:b], y[a:b]
            # a device has no host sync to spare for the check, so it always takes the general formulas
            hard = host and (hard_dtype or _is_hard(yc))
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
        return out, grad
    if host:
        return torch.tensor(math.fsum(sums), dtype=torch.float64), grad
    return (torch.stack(sums).sum() if sums else torch.zeros((), dtype=torch.float64, device=x.device)), grad


class _SigmoidFocal(torch.autograd.Function):
    r"""Sigmoid focal loss whose forward also computes the closed-form gradient (see :func:`_hard_chunk`).

    The forward saves that gradient (one tensor of the input's shape, no graph of intermediates) and the backward
    hands it to autograd, scaled in place by the incoming gradient unless that is 1. The buffer is given away, not
    kept, so autograd receives a fresh tensor that nothing else holds, and stores it as ``.grad`` without a copy.
    A second backward (``retain_graph=True``) runs the same kernel again, so it gives the same bits. A backward
    that needs a graph (``create_graph=True``: Hessians, gradient penalties, ``gradgradcheck``) and gradients for
    the targets differentiate the plain expression (:func:`_sigmoid_focal_elements`) on the saved inputs
    instead, so derivatives of every order are autograd's.
    """

    @staticmethod
    def forward(inputs, targets, alpha, gamma, scale, reduction, want_grad):
        cdtype = _compute_dtype(inputs.dtype)
        x = inputs.detach().reshape(-1).to(cdtype).contiguous()
        y = targets.detach().reshape(-1).contiguous()
        with _no_autocast(inputs.device.type):
            loss, grad = _fused(x, y, alpha, gamma, scale, reduction == "none", want_grad, inputs.shape)
        if reduction == "mean":
            loss = loss * scale
        return loss.to(_result_dtype(inputs)), grad

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
                flat = x.detach().reshape(-1).to(_compute_dtype(x.dtype)).contiguous()
                with _no_autocast(x.device.type):
                    y_flat = y.detach().reshape(-1).contiguous()
                    _, fast = _fused(flat, y_flat, alpha, gamma, scale, False, True, ctx.shape)
            unit = grad_loss.dim() == 0 and grad_loss.device.type == "cpu" and float(grad_loss) == 1.0
            if not unit:
                fast.mul_(grad_loss.to(fast.dtype))
            # ``fast`` has the input's shape and is not a view, so AccumulateGrad can keep it without a copy
            return fast.to(ctx.dtype), None, None, None, None, None, None
        x, y = ctx.saved_tensors
        wanted = [t for t, need in ((x, need_x), (y, need_y)) if need]
        with torch.enable_grad():
            cdtype = _compute_dtype(x.dtype)
            elements = _sigmoid_focal_elements(x.to(cdtype), y.to(cdtype), alpha, gamma)
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


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Focal loss of Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017), on binary logits.

        FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)

    where p = sigmoid(inputs), p_t = p y + (1 - p)(1 - y) and alpha_t = alpha y + (1 - alpha)(1 - y). With gamma = 0
    and alpha off it is binary cross-entropy. The same arguments, defaults and values as
    ``torchvision.ops.sigmoid_focal_loss``, soft targets included. Unlike torchvision's it stays finite with finite
    gradients for gamma < 1 on saturated logits, returns float32 under autocast and float16/bfloat16 inputs, and,
    in eager mode on the CPU, computes loss and gradient in one fused pass (several times faster and leaner).

    Args:
        inputs: float tensor of any shape, the logits.
        targets: tensor of the same shape: 0 (negative) or 1 (positive), or soft targets in [0, 1]. Bool and
            integer tensors are taken as 0/1. Values are checked only with :func:`check_targets` on.
        alpha: weight in [0, 1] of the positives (the negatives get 1 - alpha); None or a negative number turns
            the weighting off. Default 0.25, the paper's.
        gamma: focusing parameter >= 0; 0 is (alpha-balanced) cross-entropy. Default 2, the paper's.
        reduction: ``"none"`` (per element), ``"mean"`` (over all elements) or ``"sum"``.
        normalizer: with ``reduction="mean"``, divide the sum by this number or 0-d tensor instead of the number
            of elements; the paper divides by the number of positive anchors (use ``max(1, num_pos)``).

    Returns:
        The loss: per element for ``"none"``, else a scalar; in the input's dtype (float32 under autocast).
    """
    _check_reduction(reduction)
    gamma = _check_gamma(gamma)
    alpha = _check_alpha(alpha)
    normalizer = _check_normalizer(normalizer, reduction)
    _check_binary(inputs, targets)
    if _transformed(inputs, targets):
        cdtype = _compute_dtype(inputs.dtype)
        elements = _sigmoid_focal_elements(inputs.to(cdtype), targets.to(cdtype), alpha, gamma)
        return _reduce(elements, reduction, normalizer).to(_result_dtype(inputs))
    tensor_norm = isinstance(normalizer, torch.Tensor)  # divided after the kernel, so its value is never read
    n = inputs.numel()
    scale = 1.0  # folded into the kernel's gradient: 1 / (normalizer or the number of elements) for "mean"
    if reduction == "mean" and not tensor_norm:
        scale = 1.0 / normalizer if normalizer is not None else 1.0 / max(n, 1)
    grad_on = torch.is_grad_enabled() and (inputs.requires_grad or targets.requires_grad)
    loss, _ = _SigmoidFocal.apply(
        inputs,
        targets,
        alpha,
        gamma,
        scale,
        "sum" if tensor_norm else reduction,
        grad_on and inputs.requires_grad,
    )
    if reduction == "mean" and n == 0 and not tensor_norm and normalizer is None:
        return loss * float("nan")  # the mean of nothing, as torch's
    return loss / normalizer if tensor_norm else loss


# --------------------------------------------------------------------------------------------------------------
# Softmax focal loss
# --------------------------------------------------------------------------------------------------------------
def _rows(inputs: torch.Tensor, targets: torch.Tensor, ignore_index: int):
    """(N, C, d1, ...) logits and (N, d1, ...) indices -> (M, C) rows, (M,) safe indices, (M,) keep mask."""
    num_classes = inputs.shape[1]
    z = inputs.movedim(1, -1).reshape(-1, num_classes)
    t = targets.reshape(-1)
    keep = t != ignore_index
    return z, torch.where(keep, t, 0).long(), keep


def _softmax_terms(z: torch.Tensor, t: torch.Tensor):
    """(1 - p_t, log p_t) from log-softmax: 1 - p_t = -expm1(log p_t) keeps its precision as p_t -> 1, and a class
    masked with -inf logits gets probability 0 and gradient 0, as in F.cross_entropy."""
    logp_t = torch.log_softmax(z, dim=1).gather(1, t[:, None]).squeeze(1)
    return -torch.expm1(logp_t), logp_t


def _multiclass_focal(inputs, targets, weights, gamma, epsilon, ignore_index, reduction, normalizer):
    """-alpha_t (1 - p_t)^gamma log p_t (+ epsilon (1 - p_t)^(gamma + 1) unless epsilon is None) over the
    non-ignored elements, reduced; ``weights`` is None, a number or per-class weights (checked)."""
    z, t, keep = _rows(inputs.to(_compute_dtype(inputs.dtype)), targets, ignore_index)
    q, logp_t = _softmax_terms(z, t)
    w = _safe_pow(q, gamma)
    loss = -w * logp_t
    if isinstance(weights, torch.Tensor):
        loss = loss * weights[t]
    elif weights is not None:
        loss = loss * weights
    if epsilon is not None:  # the Poly-1 term, not alpha-weighted
        loss = loss + epsilon * q * w
    loss = torch.where(keep, loss, 0.0)
    if reduction == "none":
        return loss.view(targets.shape).to(_result_dtype(inputs))
    return _reduce(loss, reduction, normalizer, keep).to(_result_dtype(inputs))


def softmax_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | torch.Tensor | None = None,
    gamma: float = 2.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Multi-class focal loss, FL = -alpha_t (1 - p_t)^gamma log(p_t) with p = softmax(inputs).

    The C-class form of Lin et al. (ICCV 2017); with gamma = 0 and alpha None it is ``F.cross_entropy``.

    Args:
        inputs: (N, C) or (N, C, d1, ...) float tensor of logits; -inf masks a class out.
        targets: (N,) or (N, d1, ...) integer class indices in [0, C), or ``ignore_index``.
        alpha: None (no weighting, the default), one number in [0, 1] for every class, or C per-class weights
            >= 0 (alpha_t = alpha[target]), e.g. inverse class frequencies.
        gamma: focusing parameter >= 0.
        ignore_index: target value whose elements contribute neither loss nor gradient.
        reduction: ``"none"`` (per element, 0 where ignored), ``"mean"`` or ``"sum"``. ``"mean"`` divides by the
            number of non-ignored elements (NaN if there are none, like ``F.cross_entropy``), also with per-class
            alpha, where ``F.cross_entropy(weight=)`` divides by the sum of the weights: pass
            ``normalizer=alpha[targets].sum()`` for that.
        normalizer: with ``reduction="mean"``, divide the sum by this number or 0-d tensor instead.
    """
    _check_reduction(reduction)
    gamma = _check_gamma(gamma)
    normalizer = _check_normalizer(normalizer, reduction)
    _check_multiclass(inputs, targets, ignore_index)
    cdtype = _compute_dtype(inputs.dtype)
    weights = _check_class_alpha(alpha, inputs.shape[1], inputs.device, cdtype)
    return _multiclass_focal(inputs, targets, weights, gamma, None, ignore_index, reduction, normalizer)


# --------------------------------------------------------------------------------------------------------------
# PolyLoss
# --------------------------------------------------------------------------------------------------------------
def _is_multiclass(inputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """Binary (sigmoid) form when shapes match; multi-class (softmax) when targets are (N, ...) indices."""
    return inputs.shape != targets.shape and not targets.is_floating_point()


def _check_epsilon(epsilon, bound: float = -1.0) -> float:
    """epsilon must be finite and at least ``bound``, the smallest epsilon for which the Poly-1 loss is a loss
    (:func:`flx.config.epsilon_bound`): -1 without alpha, -min(alpha_t) with it. Below it the "loss" falls as a
    prediction gets more wrong."""
    value = _number("epsilon", epsilon, "a finite number (e.g. -1, 0, 1, 2)")
    if not _finite(value):
        raise ValueError(f"epsilon got {epsilon!r}; accepted: a finite number (e.g. -1, 0, 1, 2)")
    if value < bound:
        raise ValueError(
            f"epsilon got {value:g}; accepted: a number >= {bound:g} (below it the loss falls as a prediction "
            "gets more wrong: epsilon >= -min(alpha_t) with alpha, >= -1 without)"
        )
    return value


def poly1_cross_entropy(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    epsilon: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Poly-1 cross-entropy (Leng et al., "PolyLoss", ICLR 2022): CE + epsilon (1 - p_t).

    Binary when ``inputs`` and ``targets`` have the same shape (targets in [0, 1], sigmoid); multi-class when
    ``inputs`` is (N, C, ...) and ``targets`` (N, ...) integer indices (softmax). epsilon = 0 is plain CE; the
    paper found positive epsilon helps classification. Any finite epsilon >= -1 is accepted.

    Args:
        inputs, targets: as in :func:`sigmoid_focal_loss` (binary) or :func:`softmax_focal_loss` (multi-class).
        epsilon: the weight of the first polynomial term, >= -1.
        ignore_index: multi-class only: target value whose elements contribute neither loss nor gradient.
        reduction, normalizer: as in :func:`softmax_focal_loss`.
    """
    return _poly1_loss(inputs, targets, None, 0.0, epsilon, ignore_index, reduction, normalizer, focal=False)


def poly1_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | torch.Tensor | None = None,
    gamma: float = 2.0,
    epsilon: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Poly-1 focal loss (Leng et al., ICLR 2022): FL + epsilon (1 - p_t)^(gamma + 1).

    Binary (sigmoid, as :func:`sigmoid_focal_loss`) or multi-class (softmax, as :func:`softmax_focal_loss`), told
    apart by the shapes as in :func:`poly1_cross_entropy`. As in the paper's and most public implementations the
    epsilon term is *not* alpha-weighted, so it is a loss only for epsilon >= -alpha_t of every example:
    -min(alpha, 1 - alpha) binary, -min(alpha) multi-class, -1 without alpha (smaller epsilon raises ValueError).

    Args:
        alpha: None (no weighting, the default in both forms, as in :func:`softmax_focal_loss`); binary: a number
            in [0, 1] (pass 0.25 for the focal-loss paper's setting); multi-class: a number or C weights.
        gamma, epsilon, ignore_index, reduction, normalizer: as in :func:`poly1_cross_entropy` and the focal
            losses.
    """
    return _poly1_loss(
        inputs, targets, alpha, gamma, epsilon, ignore_index, reduction, normalizer, focal=True
    )


def _poly1_loss(inputs, targets, alpha, gamma, epsilon, ignore_index, reduction, normalizer, focal):
    _check_reduction(reduction)
    gamma = _check_gamma(gamma)
    normalizer = _check_normalizer(normalizer, reduction)
    _check_tensors(inputs, targets)
    cdtype = _compute_dtype(inputs.dtype)
    if _is_multiclass(inputs, targets):
        _check_multiclass(inputs, targets, ignore_index)
        weights = _check_class_alpha(alpha, inputs.shape[1], inputs.device, cdtype) if focal else None
        if isinstance(weights, torch.Tensor):  # multi-class alpha_t is alpha[target]
            bound = -float(weights.min()) if weights.device.type == "cpu" else -1.0
        else:
            bound = -1.0 if weights is None else -weights
        epsilon = _check_epsilon(epsilon, bound)
        return _multiclass_focal(
            inputs, targets, weights, gamma, epsilon, ignore_index, reduction, normalizer
        )
    _check_binary(inputs, targets)
    a = _check_alpha(alpha) if focal else -1.0
    epsilon = _check_epsilon(epsilon, epsilon_bound(a if a >= 0 else None))
    x, y = inputs.to(cdtype), targets.to(cdtype)
    if focal:
        fl = sigmoid_focal_loss(inputs, targets, alpha=a, gamma=gamma, reduction="none").to(cdtype)
        q, _ = _binary_terms(x, y)
        loss = fl + epsilon * q * _safe_pow(q, gamma)
    else:
        q, ce = _binary_terms(x, y)
        loss = ce + epsilon * q
    return _reduce(loss, reduction, normalizer).to(_result_dtype(inputs))


# --------------------------------------------------------------------------------------------------------------
# nn.Module wrappers: the arguments are checked once, when the module is made
# --------------------------------------------------------------------------------------------------------------
class _LossModule(torch.nn.Module):
    _fn = None
    _fields: tuple[str, ...] = ()

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, normalizer=None) -> torch.Tensor:
        """The loss of ``inputs`` (logits) against ``targets``; ``normalizer`` as in the function."""
        kwargs = {name: getattr(self, name) for name in self._fields}
        return type(self)._fn(inputs, targets, normalizer=normalizer, **kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)


class FocalLoss(_LossModule):
    """:func:`sigmoid_focal_loss` as a module: ``FocalLoss(alpha=0.25, gamma=2.0, reduction="none")``."""

    _fn = staticmethod(sigmoid_focal_loss)
    _fields = ("alpha", "gamma", "reduction")

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, reduction: str = "none") -> None:
        super().__init__()
        _check_reduction(reduction)
        a = _check_alpha(alpha)
        self.alpha, self.gamma, self.reduction = (a if a >= 0 else None), _check_gamma(gamma), reduction


class SoftmaxFocalLoss(_LossModule):
    """:func:`softmax_focal_loss` as a module; a per-class ``alpha`` is a buffer (it moves with ``.to()``)."""

    _fn = staticmethod(softmax_focal_loss)
    _fields = ("alpha", "gamma", "ignore_index", "reduction")

    def __init__(
        self, alpha=None, gamma: float = 2.0, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.gamma, self.ignore_index = _check_gamma(gamma), _check_ignore_index(ignore_index)
        self.reduction = reduction
        _set_alpha(self, alpha)


class Poly1CrossEntropyLoss(_LossModule):
    """:func:`poly1_cross_entropy` as a module."""

    _fn = staticmethod(poly1_cross_entropy)
    _fields = ("epsilon", "ignore_index", "reduction")

    def __init__(self, epsilon: float = 1.0, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.epsilon, self.ignore_index = _check_epsilon(epsilon), _check_ignore_index(ignore_index)
        self.reduction = reduction


class Poly1FocalLoss(_LossModule):
    """:func:`poly1_focal_loss` as a module; a per-class ``alpha`` is a buffer."""

    _fn = staticmethod(poly1_focal_loss)
    _fields = ("alpha", "gamma", "epsilon", "ignore_index", "reduction")

    def __init__(
        self,
        alpha=None,
        gamma: float = 2.0,
        epsilon: float = 1.0,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.gamma, self.ignore_index = _check_gamma(gamma), _check_ignore_index(ignore_index)
        self.reduction = reduction
        _set_alpha(self, alpha)
        self.epsilon = _check_epsilon(epsilon, -1.0)  # the bound that depends on alpha is checked per call


def _set_alpha(module: torch.nn.Module, alpha) -> None:
    """None, one number, or per-class weights (kept as a buffer so that ``.to(device)`` moves them)."""
    if (
        alpha is None
        or isinstance(alpha, numbers.Real)
        or (isinstance(alpha, torch.Tensor) and alpha.dim() == 0)
    ):
        module.alpha = (
            None if alpha is None else _number("alpha", alpha, "None, a number or per-class weights")
        )
        if module.alpha is not None and not (math.isfinite(module.alpha) and module.alpha <= 1):
            raise ValueError(f"alpha got {alpha!r}; accepted: None, a number in [0, 1], or per-class weights")
        return
    weights = torch.as_tensor(alpha, dtype=torch.float32)
    if weights.dim() != 1 or not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(
            f"alpha got {alpha!r}; accepted: None, a number in [0, 1], or per-class weights >= 0"
        )
    module.register_buffer("alpha", weights)


# --------------------------------------------------------------------------------------------------------------
# OHEM
# --------------------------------------------------------------------------------------------------------------
def ohem_select(
    losses: torch.Tensor,
    k: int,
    targets: torch.Tensor | None = None,
    neg_pos_ratio: float | None = None,
) -> torch.Tensor:
    """Indices of the hardest examples of a batch: online hard example mining (Shrivastava et al., 2016).

    Args:
        losses: (N,) per-example losses (their values only are used; no gradient flows through selection).
        k: how many to keep at most (the "OHEM batch size": 128, 256, 512 in the focal-loss paper).
        targets: (N,) 0/1 labels; required with ``neg_pos_ratio``.
        neg_pos_ratio: if given (3 for the paper's "OHEM 1:3"), keep the hardest positives (at most k) and then at
            most ``neg_pos_ratio`` negatives per kept positive (counting at least one positive, so a batch with
            no positive still trains on its ``neg_pos_ratio`` hardest negatives), within k in total.

    Returns:
        A long tensor of indices into ``losses``, hardest first.
    """
    if losses.dim() != 1:
        raise ValueError(f"losses must be 1-D (one per example), got shape {tuple(losses.shape)}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k got {k!r}; accepted: an integer >= 1")
    losses = losses.detach()
    if neg_pos_ratio is None:
        return torch.topk(losses, min(k, losses.numel())).indices
    if targets is None or targets.shape != losses.shape:
        raise ValueError("ohem_select with neg_pos_ratio needs targets of the same shape as losses")
    if not (math.isfinite(neg_pos_ratio) and neg_pos_ratio > 0):
        raise ValueError(f"neg_pos_ratio got {neg_pos_ratio!r}; accepted: a number > 0 (e.g. 3), or None")
    pos_idx = torch.nonzero(targets.detach() > 0.5).squeeze(1)
    neg_idx = torch.nonzero(targets.detach() <= 0.5).squeeze(1)
    n_pos = min(pos_idx.numel(), k)
    top_pos = pos_idx[torch.topk(losses[pos_idx], n_pos).indices]
    n_neg = min(neg_idx.numel(), k - n_pos, int(neg_pos_ratio * max(n_pos, 1)))
    top_neg = neg_idx[torch.topk(losses[neg_idx], n_neg).indices]
    chosen = torch.cat([top_pos, top_neg])
    return chosen[torch.argsort(losses[chosen], descending=True, stable=True)]


# --------------------------------------------------------------------------------------------------------------
# Training objectives: what the registry (flx.config.LOSSES) names, (logits, targets, **hyperparameters) -> scalar
# --------------------------------------------------------------------------------------------------------------
def _ce(logits, targets, reduction="mean"):
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction=reduction)


def _balanced_ce(logits, targets, alpha, reduction="mean"):
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=0.0, reduction=reduction)


def _focal(logits, targets, alpha, gamma, reduction="mean"):
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction=reduction)


def focal_weight(logits, targets, alpha, gamma):
    """The cats-vs-dogs experiment's per-example weight alpha (1 - p_t)^gamma, detached: the same alpha for
    both classes (not alpha_t), computed from the given predictions (there: once per epoch, in numpy)."""
    with torch.no_grad():
        nz = logits.float() * (1 - 2 * targets.float())  # -x_t
        return float(alpha) * torch.sigmoid(nz).pow(float(gamma))  # 1 - p_t = sigmoid(-x_t)


def _focal_detached(logits, targets, alpha, gamma, reduction="mean", weight=None):
    """Cross-entropy weighted per example by :func:`focal_weight`: by ``weight`` (taken at the epoch's start)
    when given, else by the weight of the current predictions, detached. No gradient flows through the
    weight, so its gradient is the weight times CE's gradient, unlike the focal loss's."""
    if weight is None:
        weight = focal_weight(logits, targets, alpha, gamma)
    ce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return _reduce(ce * weight.to(ce.dtype), reduction)


def _poly1(logits, targets, epsilon, reduction="mean"):
    return poly1_cross_entropy(logits, targets, epsilon=epsilon, reduction=reduction)


def _poly1_focal(logits, targets, alpha, gamma, epsilon, reduction="mean"):
    return poly1_focal_loss(logits, targets, alpha=alpha, gamma=gamma, epsilon=epsilon, reduction=reduction)


def _ohem(logits, targets, ohem_k, ohem_ratio, reduction="mean"):
    """CE on the ohem_k hardest examples of the batch; per element ("none"): plain CE, what OHEM ranks by."""
    per_example = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    if reduction == "none":
        return per_example
    keep = ohem_select(per_example, int(ohem_k), targets, neg_pos_ratio=ohem_ratio)
    return per_example[keep].mean()
