"""Argument checks, dtypes and reductions shared by every loss of :mod:`flx.losses`."""

from __future__ import annotations

import contextlib
import math
import numbers
import os

import torch

REDUCTIONS = ("none", "mean", "sum")


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


def as_number(name: str, value, accepted: str) -> float:
    """A Python float from a Python/numpy number or a one-element tensor; ValueError naming the value otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{name} got {value!r}; accepted: {accepted}")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.requires_grad:  # a constant here: its gradient would be lost
        raise ValueError(
            f"{name} got a tensor that requires grad; accepted: {accepted}, a constant (flx's losses do not "
            f"differentiate {name}: pass {name}.detach(), or learn it with a loss written in torch)"
        )
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


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction got {reduction!r}; accepted: one of {', '.join(REDUCTIONS)}")


def check_gamma(gamma) -> float:
    accepted = "a number >= 0 (e.g. 0, 0.5, 2)"
    value = as_number("gamma", gamma, accepted)
    if not (_finite(value) and value >= 0):
        raise ValueError(f"gamma got {gamma!r}; accepted: {accepted}")
    return value


def check_alpha(alpha) -> float:
    """Binary alpha: a number in [0, 1], or None / a negative number for off (returned as -1)."""
    accepted = "a number in [0, 1], or None or a negative number to turn alpha-weighting off"
    if alpha is None:
        return -1.0
    value = as_number("alpha", alpha, accepted)
    if not (
        value == value and value <= 1
    ):  # any negative number, -inf included, is off; NaN and +inf are not
        raise ValueError(f"alpha got {alpha!r}; accepted: {accepted}")
    return value if value >= 0 else -1.0


def check_class_alpha(alpha, num_classes: int, device, dtype):
    """Multi-class alpha: None, one number in [0, 1], or C weights >= 0. Returns None, a float or a tensor."""
    if alpha is None:
        return None
    accepted = "None, a number in [0, 1], or one weight >= 0 per class"
    # one number: a Python/numpy number or a 0-d tensor; anything with a dimension is per class (as a list is)
    if isinstance(alpha, numbers.Real) or (isinstance(alpha, torch.Tensor) and alpha.dim() == 0):
        value = as_number("alpha", alpha, accepted)
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


def check_normalizer(normalizer, reduction: str):
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
    value = as_number(
        "normalizer", normalizer, "a number > 0 or a one-element tensor (e.g. the number of positives)"
    )
    if not (_finite(value) and value > 0):
        raise ValueError(
            f"normalizer got {normalizer!r}; accepted: a number > 0 or a one-element tensor "
            "(e.g. max(1, number of positives))"
        )
    return value


def check_tensors(inputs, targets) -> None:
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ValueError(
            f"inputs and targets must be tensors, got {type(inputs).__name__} and {type(targets).__name__}"
        )


def check_ignore_index(ignore_index) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise ValueError(f"ignore_index got {ignore_index!r}; accepted: an integer (default -100)")
    return int(ignore_index)


def check_binary(inputs: torch.Tensor, targets: torch.Tensor) -> None:
    check_tensors(inputs, targets)
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


def check_multiclass(inputs: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> None:
    check_tensors(inputs, targets)
    check_ignore_index(ignore_index)
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


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def result_dtype(inputs: torch.Tensor) -> torch.dtype:
    """The input's dtype, or the computation's (float32) under autocast, as torchvision's losses return."""
    try:
        autocast = torch.is_autocast_enabled(inputs.device.type)
    except (RuntimeError, TypeError):  # a device type autocast does not know
        autocast = False
    return compute_dtype(inputs.dtype) if autocast else inputs.dtype


ROW = 4096  # elements a thread adds up in order (see ordered_sum)


def ordered_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t``'s elements, added in an order that does not depend on the number of threads: torch adds
    a long vector with as many partial sums as it has threads (so 1 and 2 threads can differ in the last bit),
    but a (rows, ROW) view's row sums each by one thread, in one fixed order; then the row sums the same way."""
    if torch.compiler.is_compiling():  # a compiled graph reduces its own way (and must not branch on sizes)
        return t.sum()
    flat = t.reshape(-1)
    while flat.numel() > ROW:
        whole = flat.numel() - flat.numel() % ROW
        rows = flat[:whole].view(-1, ROW).sum(1)
        flat = torch.cat([rows, flat[whole:].sum().reshape(1)]) if whole < flat.numel() else rows
    return flat.sum()


def reduce_loss(loss: torch.Tensor, reduction: str, normalizer=None, keep: torch.Tensor | None = None):
    """Sum, mean (over ``keep`` when given) or per element; ``normalizer`` replaces the mean's count. Sums are
    the same whatever the number of threads (:func:`ordered_sum`)."""
    if reduction == "none":
        return loss
    total = ordered_sum(loss)
    if reduction == "sum":
        return total
    if normalizer is not None:
        return total / normalizer
    count = loss.numel() if keep is None else keep.sum()
    return total / count


def transformed(*tensors: torch.Tensor) -> bool:
    """True under torch.compile, inside a torch.func transform, in forward-mode AD (a dual level is open), or
    for tensor subclasses: places where the fused eager kernel (threads, out= buffers, Python floats from
    tensors, no jvp) cannot run."""
    if torch.compiler.is_compiling() or torch.autograd.forward_ad._current_level >= 0:
        return True
    for t in tensors:
        if type(t) not in (
            torch.Tensor,
            torch.nn.Parameter,
        ) or torch._C._functorch.is_functorch_wrapped_tensor(t):
            return True
    return False


def kept_rows(inputs: torch.Tensor, targets: torch.Tensor, ignore_index: int):
    """(N, C, d1, ...) logits and (N, d1, ...) indices -> (M, C) rows, (M,) safe indices, (M,) keep mask."""
    num_classes = inputs.shape[1]
    z = inputs.movedim(1, -1).reshape(-1, num_classes)
    t = targets.reshape(-1)
    keep = t != ignore_index
    return z, torch.where(keep, t, 0).long(), keep


def is_multiclass(inputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """Binary (sigmoid) form when shapes match; multi-class (softmax) when targets are (N, ...) indices."""
    return inputs.shape != targets.shape and not targets.is_floating_point()


def check_epsilon(epsilon, bound: float = -1.0) -> float:
    """epsilon must be finite and at least ``bound``, the smallest epsilon for which the Poly-1 loss is a loss
    (:func:`flx.losses.bounds.epsilon_bound`): -1 without alpha, -min(alpha_t) with it. Below it the "loss" falls as a
    prediction gets more wrong."""
    value = as_number("epsilon", epsilon, "a finite number (e.g. -1, 0, 1, 2)")
    if not _finite(value):
        raise ValueError(f"epsilon got {epsilon!r}; accepted: a finite number (e.g. -1, 0, 1, 2)")
    if value < bound:
        raise ValueError(
            f"epsilon got {value:g}; accepted: a number >= {bound:g} (below it the loss falls as a prediction "
            "gets more wrong: epsilon >= -min(alpha_t) with alpha, >= -1 without)"
        )
    return value
