"""Numerically stable classification losses for imbalanced data, all taking logits.

- :func:`sigmoid_focal_loss`: drop-in for ``torchvision.ops.sigmoid_focal_loss`` with an analytic backward.
- :func:`softmax_focal_loss`: the C-class focal loss, also with an analytic backward.
- :func:`poly1_cross_entropy`, :func:`poly1_focal_loss`: PolyLoss (Leng et al., ICLR 2022).
- :func:`ohem_select`: online hard example mining (Shrivastava et al., CVPR 2016).
- :data:`LOSSES` (defined in :mod:`flx.config`, torch-free): the registry (name -> training objective and its
  hyperparameters) that ``flx run``, ``flx sweep`` and ``flx report`` read. A new loss is one entry there,
  naming its objective function.

Conventions: ``alpha`` weights the positive class (``alpha_t = alpha`` for y = 1, ``1 - alpha`` for y = 0) and a
negative ``alpha`` turns the weighting off, as in torchvision. Every computation is done in float32 (or float64
for float64 inputs) from logits through log-sigmoid/softplus forms, whatever the input dtype; the result is cast
back to the input dtype. ``reduction="mean"`` is the mean over all elements (torchvision's meaning);
the paper normalises by the number of positives instead: use ``reduction="sum"`` and divide.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from flx.config import LOSSES, LossSpec, get_loss

__all__ = [
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "poly1_cross_entropy",
    "poly1_focal_loss",
    "ohem_select",
    "LossSpec",
    "LOSSES",
    "get_loss",
]

REDUCTIONS = ("none", "mean", "sum")
# Elements per chunk of the fused CPU kernel: a chunk and its ~6 float32 temporaries stay in L2 cache.
_CHUNK = 1 << 16


# --------------------------------------------------------------------------------------------------------------
# Validation, shared by every loss (scikit-learn style: say what was wrong and what is accepted).
# --------------------------------------------------------------------------------------------------------------
def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction got {reduction!r}; accepted: one of {', '.join(REDUCTIONS)}")


def _check_gamma(gamma: float) -> None:
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma got {gamma!r}; accepted: a number >= 0 (e.g. 0, 0.5, 2)")


def _check_alpha(alpha: float, *, allow_off: bool = True) -> None:
    ok = (
        isinstance(alpha, (int, float))
        and math.isfinite(alpha)
        and (0 <= alpha <= 1 or (allow_off and alpha < 0))
    )
    if not ok:
        off = ", or a negative number to turn alpha-weighting off" if allow_off else ""
        raise ValueError(f"alpha got {alpha!r}; accepted: a number in [0, 1]{off}")


def _check_binary(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape, got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if targets.numel() and not bool(((targets == 0) | (targets == 1)).all()):
        bad = targets[(targets != 0) & (targets != 1)].flatten()[0].item()
        raise ValueError(f"targets must be 0 or 1 for the sigmoid losses, found {bad!r}")


def _check_multiclass(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
    if logits.dim() < 2 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            "softmax losses take logits of shape (N, C, ...) and class indices of shape (N, ...); "
            f"got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"softmax losses need at least 2 classes, got C={num_classes}")
    valid = target[target != ignore_index]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= num_classes):
        bad = valid[(valid < 0) | (valid >= num_classes)][0].item()
        raise ValueError(f"target class {bad} is out of range; classes must lie in [0, {num_classes - 1}]")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------------------------
# Sigmoid focal loss with an analytic backward
# --------------------------------------------------------------------------------------------------------------
def _focal_chunk(x, y, alpha: float, gamma: float, scale: float, loss_out, grad_out):
    """One chunk of the fused kernel, in x's (float32/float64) precision; see _SigmoidFocal for the formulas.

    Writes the loss into ``loss_out`` (or returns it when that is None) and, when ``grad_out`` is given,
    ``scale * dFL/dx`` into it.
    """
    nz = torch.addcmul(x, x, y, value=-2.0)  # -x_t = x (1 - 2y)
    q = torch.sigmoid(nz)  # 1 - p_t, exact even where p_t rounds to 1
    ce = F.softplus(nz)  # -log p_t
    w = q.pow(gamma) if gamma != 0 else None  # (1 - p_t)^gamma; (1 - p_t)^(gamma - 1) is never formed
    if alpha >= 0:  # alpha_t = (1 - alpha) + (2 alpha - 1) y
        alpha_t = torch.rsub(y, 1 - alpha, alpha=1 - 2 * alpha)
        loss = torch.mul(ce if w is None else ce.mul(w), alpha_t, out=loss_out)
    else:
        loss = ce if w is None else torch.mul(ce, w, out=loss_out)
        if loss_out is not None and w is None:
            loss = loss_out.copy_(ce)
    if grad_out is not None:
        # dFL/dx = c (1 - p_t)^gamma (gamma p_t (-log p_t) + (1 - p_t)), c = (1 - alpha) - y, or 1 - 2y with alpha off
        grad = q if gamma == 0 else torch.addcmul(q, torch.rsub(q, 1.0), ce, value=gamma).mul_(w)
        c = (
            torch.rsub(y, (1 - alpha) * scale, alpha=scale)
            if alpha >= 0
            else torch.rsub(y, scale, alpha=2 * scale)
        )
        torch.mul(grad, c, out=grad_out)
    return loss


class _SigmoidFocal(torch.autograd.Function):
    r"""Sigmoid focal loss with a hand-derived backward.

    With x the logit, y in {0, 1}, s = 2y - 1, x_t = s x, p_t = sigmoid(x_t) and q = 1 - p_t = sigmoid(-x_t):

        FL   = -alpha_t q^gamma log p_t
        dp_t/dx_t = p_t q,   d(-log p_t)/dx_t = -q,   d(q^gamma)/dx_t = -gamma q^(gamma-1) p_t q = -gamma p_t q^gamma
        dFL/dx = s dFL/dx_t = -s alpha_t q^gamma (gamma p_t (-log p_t) + q)

    (the paper's Appendix B: y (1 - p_t)^gamma (gamma p_t log p_t + p_t - 1)). The factor q^(gamma - 1), which is
    infinite at p_t = 1 for gamma < 1 and makes autograd return 0 * inf = NaN, cancels analytically and is never
    evaluated. q and -log p_t come from sigmoid(-x_t) and softplus(-x_t), exact for |x| up to 1e4 and beyond.

    The forward walks the input in cache-sized chunks, computing each chunk's loss and, when a gradient is
    needed, its dFL/dx (already divided by N for "mean") in the same pass; it saves only that gradient (one
    tensor the size of the input), no graph of intermediates. The backward scales it by the incoming gradient,
    or hands it on as it is when that is 1 (the usual ``loss.backward()``), so no second full-size pass is made.
    """

    @staticmethod
    def forward(ctx, logits, targets, alpha, gamma, reduction):
        need_grad = ctx.needs_input_grad[0]
        cdtype = _compute_dtype(logits.dtype)
        x_flat = logits.reshape(-1)
        y_flat = targets.reshape(-1)
        n = x_flat.numel()
        chunk = max(n, 1) if logits.device.type != "cpu" else _CHUNK  # on GPUs one launch per op is fastest
        scale = 1.0 / n if (reduction == "mean" and n) else 1.0
        grad = torch.empty(n, dtype=cdtype, device=logits.device) if need_grad else None
        out = torch.empty(n, dtype=cdtype, device=logits.device) if reduction == "none" else None
        total = torch.zeros((), dtype=torch.float64, device=logits.device)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            loss = _focal_chunk(
                x_flat[start:stop].to(cdtype),
                y_flat[start:stop].to(cdtype),
                alpha,
                gamma,
                scale,
                None if out is None else out[start:stop],
                None if grad is None else grad[start:stop],
            )
            if out is None:
                total += loss.sum()
        if reduction == "none":
            result = out.view(logits.shape)
        elif reduction == "mean":
            result = total / n if n else total.new_tensor(float("nan"))
        else:
            result = total
        if need_grad:
            ctx.save_for_backward(grad.view(logits.shape))
        ctx.input_dtype = logits.dtype
        return result.to(logits.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        unit = grad_output.dim() == 0 and grad_output.device.type == "cpu" and grad_output.item() == 1.0
        if not unit:  # (AccumulateGrad copies a tensor that is still saved, so handing it on is safe)
            grad = grad * grad_output
        return grad.to(ctx.input_dtype), None, None, None, None


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    r"""Focal loss of Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017), on binary logits.

        FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)

    where p = sigmoid(logits), p_t = p for y = 1 and 1 - p for y = 0, alpha_t = alpha for y = 1 and 1 - alpha for
    y = 0. gamma = 0 with alpha off is binary cross-entropy. Same signature and semantics as
    ``torchvision.ops.sigmoid_focal_loss``, with a closed-form backward (see ``_SigmoidFocal``) that stays finite
    for gamma < 1 on saturated logits, uses one saved tensor instead of an autograd graph, and runs several
    times faster on the CPU.

    Args:
        logits: float tensor of any shape, the raw scores (float16/bfloat16 are computed in float32).
        targets: tensor of the same shape with 0 (negative) or 1 (positive).
        alpha: weight of the positive class in [0, 1]; the negatives get 1 - alpha. A negative value turns
            the weighting off. Default 0.25, the paper's.
        gamma: focusing parameter >= 0; 0 is (alpha-balanced) cross-entropy. Default 2, the paper's.
        reduction: ``"none"`` (per element), ``"mean"`` (over all elements) or ``"sum"``.

    Returns:
        The loss, of the input's dtype: per element for ``"none"``, else a scalar.
    """
    _check_reduction(reduction)
    _check_gamma(gamma)
    _check_alpha(alpha)
    _check_binary(logits, targets)
    return _SigmoidFocal.apply(logits, targets, float(alpha), float(gamma), reduction)


# --------------------------------------------------------------------------------------------------------------
# Softmax focal loss with an analytic backward
# --------------------------------------------------------------------------------------------------------------
class _SoftmaxFocal(torch.autograd.Function):
    r"""Per-example C-class focal loss L = -a_t (1 - p_t)^gamma log p_t with p = softmax(z), t the target.

    With q = 1 - p_t and r_j = p_j / q for j != t (r_t = 0), i.e. r = the softmax over the non-target classes:

        dL/dz = G (e_t - r),   G = a_t q^gamma (gamma p_t log p_t - q)   (<= 0)

    (from dL/dp_t = a_t (gamma q^(gamma-1) log p_t - q^gamma / p_t) and dp_t/dz_j = p_t (delta_tj - p_j), where
    p_j = r_j q absorbs the q^(gamma-1) that would be infinite for gamma < 1 at p_t = 1).
    Saves logits, targets and the per-example weights; recomputes the softmax in the backward.
    """

    @staticmethod
    def forward(ctx, logits, target, weight, gamma):
        # logits (M, C) in compute dtype, target (M,) long with ignored rows already removed, weight (M,)
        logp = torch.log_softmax(logits, dim=1)
        logp_t = logp.gather(1, target[:, None]).squeeze(1)
        q = -torch.expm1(logp_t)
        loss = -weight * q.pow(gamma) * logp_t
        ctx.save_for_backward(logits, target, weight)
        ctx.gamma = gamma
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        logits, target, weight = ctx.saved_tensors
        gamma = ctx.gamma
        logp_t = torch.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        p_t = logp_t.exp()
        q = -torch.expm1(logp_t)
        g = weight * q.pow(gamma) * (gamma * p_t * logp_t - q) * grad_loss
        others = logits.scatter(1, target[:, None], float("-inf"))
        r = torch.softmax(others, dim=1)
        grad = -r
        grad.scatter_add_(1, target[:, None], torch.ones_like(logp_t)[:, None])
        return grad * g[:, None], None, None, None


def softmax_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float | torch.Tensor | None = None,
    gamma: float = 2.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Multi-class focal loss, FL = -alpha_t (1 - p_t)^gamma log(p_t) with p = softmax(logits).

    The C-class form of Lin et al. (ICCV 2017); with gamma = 0 and alpha None it is ``F.cross_entropy``.

    Args:
        logits: (N, C) or (N, C, d1, ...) float tensor of raw scores.
        target: (N,) or (N, d1, ...) integer class indices in [0, C), or ``ignore_index``.
        alpha: None (no weighting), a float in [0, 1] that scales every class alike, or a length-C tensor of
            per-class weights (alpha_t = alpha[target]), e.g. inverse class frequencies.
        gamma: focusing parameter >= 0.
        ignore_index: target value whose elements contribute neither loss nor gradient.
        reduction: ``"none"`` (per element, 0 where ignored), ``"mean"`` (over non-ignored elements; NaN if
            there are none, like ``F.cross_entropy``) or ``"sum"``.
    """
    _check_reduction(reduction)
    _check_gamma(gamma)
    _check_multiclass(logits, target, ignore_index)
    num_classes = logits.shape[1]
    cdtype = _compute_dtype(logits.dtype)
    # (N, C, d1, ...) -> (M, C) rows; keep the non-ignored ones.
    z = logits.movedim(1, -1).reshape(-1, num_classes)
    t = target.reshape(-1)
    keep = t != ignore_index
    if isinstance(alpha, torch.Tensor):
        if alpha.shape != (num_classes,):
            raise ValueError(f"per-class alpha must have shape ({num_classes},), got {tuple(alpha.shape)}")
        if not bool(torch.isfinite(alpha).all()) or bool((alpha < 0).any()):
            raise ValueError("per-class alpha must hold finite weights >= 0")
        weight = alpha.to(device=logits.device, dtype=cdtype)[t[keep]]
    else:
        if alpha is not None:
            _check_alpha(alpha, allow_off=False)
        weight = torch.full(
            (int(keep.sum()),), 1.0 if alpha is None else float(alpha), dtype=cdtype, device=logits.device
        )
    kept = _SoftmaxFocal.apply(z[keep].to(cdtype), t[keep].long(), weight, float(gamma))
    if reduction == "none":
        full = kept.new_zeros(t.shape).masked_scatter(keep, kept)
        return full.view(target.shape).to(logits.dtype)
    return _reduce(kept, reduction).to(logits.dtype)


# --------------------------------------------------------------------------------------------------------------
# PolyLoss
# --------------------------------------------------------------------------------------------------------------
def _is_multiclass(logits: torch.Tensor, targets: torch.Tensor) -> bool:
    """Binary (sigmoid) form when shapes match; multi-class (softmax) when targets are (N, ...) indices."""
    return logits.shape != targets.shape and not targets.is_floating_point()


def _one_minus_pt(logits: torch.Tensor, targets: torch.Tensor, multiclass: bool) -> torch.Tensor:
    x = logits.to(_compute_dtype(logits.dtype))
    if multiclass:
        logp_t = torch.log_softmax(x, dim=1).gather(1, targets.long().unsqueeze(1)).squeeze(1)
        return -torch.expm1(logp_t)
    return torch.sigmoid(x * (1 - 2 * targets.to(x.dtype)))


def poly1_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    r"""Poly-1 cross-entropy (Leng et al., "PolyLoss", ICLR 2022): CE + epsilon (1 - p_t).

    Binary when ``logits`` and ``targets`` have the same shape (targets 0/1, sigmoid); multi-class when
    ``logits`` is (N, C, ...) and ``targets`` (N, ...) integer indices (softmax). epsilon = 0 is plain CE; the
    paper found positive epsilon helps classification. Any finite epsilon is accepted (negative ones too).
    """
    _check_reduction(reduction)
    _check_epsilon(epsilon)
    multiclass = _is_multiclass(logits, targets)
    if multiclass:
        _check_multiclass(logits, targets, ignore_index=-100)
        ce = F.cross_entropy(logits.to(_compute_dtype(logits.dtype)), targets.long(), reduction="none")
    else:
        _check_binary(logits, targets)
        x = logits.to(_compute_dtype(logits.dtype))
        ce = F.binary_cross_entropy_with_logits(x, targets.to(x.dtype), reduction="none")
    loss = ce + epsilon * _one_minus_pt(logits, targets, multiclass)
    return _reduce(loss, reduction).to(logits.dtype)


def poly1_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    epsilon: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Poly-1 focal loss (Leng et al., ICLR 2022): FL + epsilon (1 - p_t)^(gamma + 1).

    Binary (sigmoid, alpha as in :func:`sigmoid_focal_loss`) or multi-class (softmax, alpha as in
    :func:`softmax_focal_loss`, None for off), told apart by the shapes as in :func:`poly1_cross_entropy`.
    As in the paper's and most public implementations, the epsilon term is *not* alpha-weighted, so it is a
    loss only for epsilon >= -alpha_t of every example: -min(alpha, 1 - alpha) binary, -min(alpha) multi-class,
    -1 without alpha (smaller epsilon raises ValueError).
    """
    _check_reduction(reduction)
    multiclass = _is_multiclass(logits, targets)
    if multiclass:
        weights = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float64).reshape(-1).tolist()
        _check_epsilon(epsilon)  # finite and >= -1
        if weights is not None and epsilon < -min(weights):
            raise ValueError(
                f"epsilon got {epsilon:g}; accepted: a number >= {-min(weights):g} (-min(alpha))"
            )
    else:
        _check_epsilon(epsilon, alpha, focal=True)
    if multiclass:
        fl = softmax_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
    else:
        fl = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
    fl = fl.to(_compute_dtype(logits.dtype))
    loss = fl + epsilon * _one_minus_pt(logits, targets, multiclass).pow(gamma + 1)
    return _reduce(loss, reduction).to(logits.dtype)


def _check_epsilon(epsilon: float, alpha: float | None = None, focal: bool = False) -> None:
    """epsilon must be finite and at least :func:`flx.config.epsilon_bound` (-1 for Poly-1 CE; -min(alpha,
    1 - alpha) for Poly-1 FL with alpha): below it the "loss" falls as a prediction gets more wrong."""
    from flx.config import epsilon_bound

    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon)):
        raise ValueError(f"epsilon got {epsilon!r}; accepted: a finite number (e.g. -1, 0, 1, 2)")
    alphas = alpha if isinstance(alpha, (list, tuple)) else [alpha]
    bound = max(epsilon_bound(a if focal else None) for a in alphas)
    if epsilon < bound:
        raise ValueError(
            f"epsilon got {epsilon:g}; accepted: a number >= {bound:g} (below it the loss falls as a prediction "
            "gets more wrong: epsilon >= -min(alpha, 1 - alpha) for Poly-1 FL, >= -1 without alpha)"
        )


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
