"""Numerically stable classification losses for imbalanced data, all taking logits.

- :func:`sigmoid_focal_loss` / :class:`FocalLoss`: drop-in for ``torchvision.ops.sigmoid_focal_loss`` (same
  argument names, soft targets included), with a fused CPU kernel for the loss and its gradient.
- :func:`softmax_focal_loss` / :class:`SoftmaxFocalLoss`: the C-class focal loss.
- :func:`poly1_cross_entropy`, :func:`poly1_focal_loss` / :class:`Poly1CrossEntropyLoss`,
  :class:`Poly1FocalLoss`: PolyLoss (Leng et al., ICLR 2022).
- :func:`ohem_select`: online hard example mining (Shrivastava et al., CVPR 2016).
- :mod:`flx.losses.objectives`: the training objectives that flx's experiment runner names in its loss registry.

This package imports nothing else of flx: it can be read, used and vendored alone. Its names load on first use
(``flx.losses.bounds`` is plain Python), so ``import flx.losses`` costs nothing until a loss is used.

Conventions, the same in every loss:

- ``inputs`` are logits, ``targets`` the labels. Binary losses take targets of the inputs' shape with values in
  [0, 1] (0/1, or soft targets for label smoothing and distillation, computed as torchvision does); multi-class
  losses take (N, C, ...) logits and (N, ...) integer class indices, ``ignore_index`` for elements to skip.
- ``alpha`` weights the positive class (alpha_t = alpha for y = 1, 1 - alpha for y = 0) in the binary losses,
  where None or a negative number turns the weighting off, as in torchvision. In the multi-class losses it is
  None (off, the default), one number for every class (a Python or numpy number, or a 0-d tensor), or one
  weight per class (a list or 1-D tensor of C).
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

Autograd: every loss has correct first and second derivatives. On the CPU every loss runs a fused kernel
(numba, :mod:`flx.losses._fused`) that computes the loss and its closed-form gradient in one pass, in eager mode
and under ``torch.compile`` (as the custom operators ``flx::sigmoid_focal`` and ``flx::softmax_focal``, no graph
break). Under the ``torch.func`` transforms (``grad``, ``vmap``, ``jacrev``, ...), forward-mode AD, when a graph of
the gradient is asked for (``create_graph=True``, ``torch.autograd.functional.hessian``, ``gradgradcheck``) or the
targets need a gradient, the losses are plain differentiable expressions, written so that their derivatives of
every order stay finite (no ``(1 - p_t)^(gamma - 1)`` at ``p_t = 1``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "sigmoid_focal_loss": "functional",
    "softmax_focal_loss": "functional",
    "poly1_cross_entropy": "functional",
    "poly1_focal_loss": "functional",
    "ohem_select": "functional",
    "FocalLoss": "modules",
    "SoftmaxFocalLoss": "modules",
    "Poly1CrossEntropyLoss": "modules",
    "Poly1FocalLoss": "modules",
    "check_targets": "_checks",
    "REDUCTIONS": "_checks",
    "epsilon_bound": "bounds",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """The public names, imported from their module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
