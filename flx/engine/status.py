"""When a run has failed.

- Diverged: its loss not finite, or above ``EXPLODE_FACTOR`` times its first loss (and above ``EXPLODE_FLOOR``).
- Collapsed (detection, :class:`Watch`): knocked back to the prior, the failure a diverging detector often
  shows without any NaN. Its loss on the object anchors fell and then came back to where it started (the
  classifier gives every anchor the prior again): the mean over ``WINDOW`` steps fell below ``FELL`` of the
  first ``WINDOW`` steps' mean and later rose to ``BACK`` of it (how high it rose after falling, as a share of
  the first mean, is the run's ``rebound``: how near it came). Or, at the end, its anchor-level AP on the test
  images is within ``CHANCE`` times the share of object anchors (what a random scorer gets).
"""

from __future__ import annotations

import math

EXPLODE_FACTOR = 100.0


EXPLODE_FLOOR = 0.01


WINDOW, FELL, BACK = 25, 0.5, 0.9


CHANCE = 10.0


class Watch:
    """Per step: the loss on the object anchors (for :data:`WINDOW` means) and the gradient norm. ``max_grad_norm``
    is the largest gradient norm seen; ``knocked_back`` the first step at which the object-anchor loss came back
    (None while it has not); ``rebound`` the highest mean it came back to after falling below ``FELL`` of its
    initial mean, as a share of that (NaN while it has not fallen; ``BACK`` or more is a knock-back)."""

    def __init__(self):
        self.values: list[float] = []
        self.initial = self.low = math.inf
        self.max_grad_norm = 0.0
        self.knocked_back: int | None = None
        self.rebound = math.nan
        self.level = (math.nan, math.nan)  # (initial, back at) the object-anchor loss, for the message

    def step(self, step: int, positive_loss: float, grad_norm: float) -> None:
        if math.isfinite(grad_norm):
            self.max_grad_norm = max(self.max_grad_norm, grad_norm)
        self.values.append(positive_loss)
        if len(self.values) < WINDOW:
            return
        mean = sum(self.values[-WINDOW:]) / WINDOW
        if len(self.values) == WINDOW:
            self.initial = mean
        self.low = min(self.low, mean)
        fallen = self.low < FELL * self.initial
        if fallen and not mean / self.initial <= self.rebound:
            self.rebound = mean / self.initial
        if self.knocked_back is None and fallen and mean >= BACK * self.initial:
            self.knocked_back = step
            self.level = (self.initial, mean)

    def message(self) -> str:
        initial, back = self.level
        return (
            f"knocked back at step {self.knocked_back}: the loss on object anchors returned to {back:.3g} "
            f"(its first {WINDOW} steps: {initial:.3g}; it had fallen to {self.low:.3g})"
        )


def near_chance(anchor_ap: float, positive_share: float) -> bool:
    """Whether an anchor-level AP is no better than ``CHANCE`` times a random scorer's (the positive share)."""
    return anchor_ap <= CHANCE * positive_share
