"""The losses as functions: sigmoid and softmax focal loss, Poly-1 cross-entropy and focal loss, and online
hard example mining. The conventions they share are in :mod:`flx.losses`.
"""

from __future__ import annotations

import math
import numbers

import torch

from flx.losses._checks import (
    check_alpha,
    check_binary,
    check_class_alpha,
    check_epsilon,
    check_gamma,
    check_multiclass,
    check_normalizer,
    check_reduction,
    check_tensors,
    compute_dtype,
    is_multiclass,
    reduce_loss,
    result_dtype,
    transformed,
)
from flx.losses._kernel import SigmoidFocal, sigmoid_focal_elements
from flx.losses._softmax import SoftmaxFocal, softmax_focal_rows
from flx.losses.bounds import epsilon_bound


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
    check_reduction(reduction)
    gamma = check_gamma(gamma)
    alpha = check_alpha(alpha)
    normalizer = check_normalizer(normalizer, reduction)
    check_binary(inputs, targets)
    return _binary_loss(inputs, targets, alpha, gamma, 0.0, reduction, normalizer)


def _kernel_runs(inputs, targets, on_device: bool) -> bool:
    """Whether a fused kernel computes the loss: on the CPU in eager mode and compiled (as its custom operator),
    on a device in eager mode where it has a device path (``on_device``); never under torch.func transforms,
    forward-mode AD or for tensor subclasses, which take the plain expression."""
    cpu = inputs.device.type == "cpu"
    if transformed(inputs, targets):
        return cpu and torch.compiler.is_compiling() and torch.autograd.forward_ad._current_level < 0
    return cpu or on_device


def _binary_loss(inputs, targets, alpha, gamma, epsilon, reduction, normalizer):
    """alpha_t (1 - p_t)^gamma (-log p_t) + epsilon (1 - p_t)^(gamma + 1), reduced (arguments checked): the fused
    kernel in eager mode and, through the ``flx::sigmoid_focal`` operator, under ``torch.compile`` on the CPU;
    the plain expression under torch.func transforms, forward-mode AD, for targets that need a gradient, and
    for the Poly-1 term on a device."""
    fused = not targets.requires_grad and _kernel_runs(inputs, targets, on_device=epsilon == 0)
    if not fused:
        cdtype = compute_dtype(inputs.dtype)
        elements = sigmoid_focal_elements(inputs.to(cdtype), targets.to(cdtype), alpha, gamma, epsilon)
        return reduce_loss(elements, reduction, normalizer).to(result_dtype(inputs))
    tensor_norm = isinstance(normalizer, torch.Tensor)  # divided after the kernel, so its value is never read
    n = inputs.numel()
    scale = 1.0  # folded into the kernel's gradient: 1 / (normalizer or the number of elements) for "mean"
    if reduction == "mean" and not tensor_norm:
        scale = 1.0 / normalizer if normalizer is not None else 1.0 / max(n, 1)
    kernel_reduction = "sum" if tensor_norm else reduction
    want_grad = torch.is_grad_enabled() and inputs.requires_grad
    if torch.compiler.is_compiling():
        from flx.losses._op import sigmoid_focal_op

        # a mean over the elements divides after the operator: 1 / n as a number would fix the graph to one size
        count = reduction == "mean" and normalizer is None
        loss, _ = sigmoid_focal_op(
            inputs,
            targets,
            alpha,
            gamma,
            epsilon,
            1.0 if count else scale,
            kernel_reduction == "none",
            want_grad,
        )
        loss = (loss / n if count else loss).to(result_dtype(inputs))
    else:
        loss, _ = SigmoidFocal.apply(
            inputs, targets, alpha, gamma, epsilon, scale, kernel_reduction, want_grad
        )
    if reduction == "mean" and n == 0 and not tensor_norm and normalizer is None:
        return loss * float("nan")  # the mean of nothing, as torch's
    return loss / normalizer if tensor_norm else loss


def _multiclass_focal(inputs, targets, weights, gamma, epsilon, ignore_index, reduction, normalizer):
    """-alpha_t (1 - p_t)^gamma log p_t (+ epsilon (1 - p_t)^(gamma + 1) unless epsilon is None) over the
    non-ignored elements, reduced; ``weights`` is None, a number or per-class weights (checked). The fused kernel
    on the CPU (eager, and compiled through ``flx::softmax_focal``), the plain expression elsewhere."""
    eps = 0.0 if epsilon is None else float(epsilon)
    if not _kernel_runs(inputs, targets, on_device=False):
        loss, keep = softmax_focal_rows(inputs, targets, weights, gamma, eps, ignore_index)
        if reduction == "none":
            return loss.view(targets.shape).to(result_dtype(inputs))
        return reduce_loss(loss, reduction, normalizer, keep).to(result_dtype(inputs))
    tensor_norm = isinstance(normalizer, torch.Tensor)  # divided after the kernel, so its value is never read
    count_mean = reduction == "mean" and normalizer is None
    kernel_reduction = "sum" if tensor_norm else reduction
    want_grad = torch.is_grad_enabled() and inputs.requires_grad
    scale = 1.0 / normalizer if reduction == "mean" and normalizer is not None and not tensor_norm else 1.0
    if torch.compiler.is_compiling():
        from flx.losses._op import softmax_focal_op

        per_class = weights if isinstance(weights, torch.Tensor) else None
        number = -1.0 if weights is None or per_class is not None else float(weights)
        args = (gamma, eps, ignore_index, scale, reduction == "none", want_grad)
        loss, _ = softmax_focal_op(inputs, targets, per_class, number, *args)
        if count_mean:  # the kept count divides after the operator (a traced tensor, no host read)
            loss = loss / (targets != ignore_index).sum()
    else:
        if count_mean:  # the kept count, read on the CPU first: the kernel's gradient carries 1 / count
            count = int((targets != ignore_index).sum())
            scale = 1.0 / count if count else math.nan
        args = (gamma, eps, ignore_index, scale, kernel_reduction, want_grad)
        loss, _ = SoftmaxFocal.apply(inputs, targets, weights, *args)
    loss = loss.to(result_dtype(inputs))
    return loss / normalizer if tensor_norm else loss


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
    check_reduction(reduction)
    gamma = check_gamma(gamma)
    normalizer = check_normalizer(normalizer, reduction)
    check_multiclass(inputs, targets, ignore_index)
    cdtype = compute_dtype(inputs.dtype)
    weights = check_class_alpha(alpha, inputs.shape[1], inputs.device, cdtype)
    return _multiclass_focal(inputs, targets, weights, gamma, None, ignore_index, reduction, normalizer)


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
    check_reduction(reduction)
    gamma = check_gamma(gamma)
    normalizer = check_normalizer(normalizer, reduction)
    check_tensors(inputs, targets)
    cdtype = compute_dtype(inputs.dtype)
    if is_multiclass(inputs, targets):
        check_multiclass(inputs, targets, ignore_index)
        weights = check_class_alpha(alpha, inputs.shape[1], inputs.device, cdtype) if focal else None
        # multi-class alpha_t is alpha[target], so the bound is -min(alpha): known without reading a tensor for a
        # list (eager and compiled alike)
        if isinstance(alpha, (list, tuple)):
            bound = -min(float(a) for a in alpha)
        elif isinstance(weights, torch.Tensor):
            # a tensor's bound is read on the CPU in eager mode (reading it would break a compiled graph, and cost
            # a host sync on a GPU); compiled on the CPU it is asserted inside the graph; on a GPU only -1 is checked
            eager_cpu = weights.device.type == "cpu" and not torch.compiler.is_compiling()
            bound = -float(weights.min()) if eager_cpu else -1.0
            if weights.device.type == "cpu" and torch.compiler.is_compiling():
                torch._assert_async(weights.min() + epsilon >= 0, "epsilon below -min(alpha): not a loss")
        else:
            bound = -1.0 if weights is None else -weights
        epsilon = check_epsilon(epsilon, bound)
        return _multiclass_focal(
            inputs, targets, weights, gamma, epsilon, ignore_index, reduction, normalizer
        )
    check_binary(inputs, targets)
    a = check_alpha(alpha) if focal else -1.0
    epsilon = check_epsilon(epsilon, epsilon_bound(a if a >= 0 else None))
    return _binary_loss(inputs, targets, a, gamma, float(epsilon), reduction, normalizer)


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
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:  # numpy integers too
        raise ValueError(f"k got {k!r}; accepted: an integer >= 1")
    k = int(k)
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
