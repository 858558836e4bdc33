"""Training objectives ``(logits, targets, **hyperparameters, reduction) -> loss``: what the experiment runner's
loss registry (:data:`flx.experiment.registries.LOSSES`) names as ``flx.losses.objectives:NAME``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flx.losses._checks import reduce_loss
from flx.losses.functional import ohem_select, poly1_cross_entropy, poly1_focal_loss, sigmoid_focal_loss


def ce(logits, targets, reduction="mean"):
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction=reduction)


def balanced_ce(logits, targets, alpha, reduction="mean"):
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=0.0, reduction=reduction)


def focal(logits, targets, alpha, gamma, reduction="mean"):
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction=reduction)


def focal_weight(logits, targets, alpha, gamma):
    """The cats-vs-dogs experiment's per-example weight alpha (1 - p_t)^gamma, detached: the same alpha for
    both classes (not alpha_t), computed from the given predictions (there: once per epoch, in numpy)."""
    with torch.no_grad():
        nz = logits.float() * (1 - 2 * targets.float())  # -x_t
        return float(alpha) * torch.sigmoid(nz).pow(float(gamma))  # 1 - p_t = sigmoid(-x_t)


def focal_detached(logits, targets, alpha, gamma, reduction="mean", weight=None):
    """Cross-entropy weighted per example by :func:`focal_weight`: by ``weight`` (taken at the epoch's start)
    when given, else by the weight of the current predictions, detached. No gradient flows through the
    weight, so its gradient is the weight times CE's gradient, unlike the focal loss's."""
    if weight is None:
        weight = focal_weight(logits, targets, alpha, gamma)
    ce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return reduce_loss(ce * weight.to(ce.dtype), reduction)


def poly1(logits, targets, epsilon, reduction="mean"):
    return poly1_cross_entropy(logits, targets, epsilon=epsilon, reduction=reduction)


def poly1_focal(logits, targets, alpha, gamma, epsilon, reduction="mean"):
    return poly1_focal_loss(logits, targets, alpha=alpha, gamma=gamma, epsilon=epsilon, reduction=reduction)


def ohem(logits, targets, ohem_k, ohem_ratio, reduction="mean"):
    """CE on the ohem_k hardest examples of the batch; per element ("none"): plain CE, what OHEM ranks by."""
    per_example = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    if reduction == "none":
        return per_example
    keep = ohem_select(per_example, int(ohem_k), targets, neg_pos_ratio=ohem_ratio)
    return per_example[keep].mean()
