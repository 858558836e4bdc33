"""The smallest epsilon for which a Poly-1 loss is a loss. Plain Python (no torch), so that the experiment
runner can check a config's epsilon before torch is imported.
"""

from __future__ import annotations


def epsilon_bound(alpha: float | None = None) -> float:
    """The smallest epsilon for which a Poly-1 loss is a loss (never falls as a prediction gets more wrong).

    Poly-1 CE, -log p_t + eps (1 - p_t): its slope in p_t is -1/p_t - eps, negative for every p_t iff eps >= -1.
    Poly-1 FL with alpha_t, alpha_t (1 - p_t)^gamma (-log p_t) + eps (1 - p_t)^(gamma + 1): near p_t = 1 it is
    (alpha_t + eps)(1 - p_t)^(gamma + 1), so eps >= -alpha_t is needed, and it is enough (the loss is then
    alpha_t (1 - p_t)^gamma (-log p_t - (1 - p_t)) + (alpha_t + eps)(1 - p_t)^(gamma + 1), both terms rising
    in 1 - p_t). alpha_t is alpha for positives and 1 - alpha for negatives, so eps >= -min(alpha, 1 - alpha);
    without alpha (None or negative: off), eps >= -1."""
    if alpha is None or alpha < 0:
        return -1.0
    return -min(alpha, 1 - alpha)
