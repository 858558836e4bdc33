"""How the total loss splits between many easy and a few hard examples (the paper's motivation, Section 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AnatomyRow:
    gamma: float
    easy_total: float
    hard_total: float

    @property
    def easy_over_hard(self) -> float:
        return self.easy_total / self.hard_total if self.hard_total else math.inf


def focal_term(p_t: float, gamma: float) -> float:
    """FL(p_t) = -(1 - p_t)^gamma log(p_t) for one example (alpha off); gamma = 0 is cross-entropy."""
    return -((1.0 - p_t) ** gamma) * math.log(p_t)


def loss_anatomy(
    gammas: list[float], easy_count: int, hard_count: int, easy_p_t: float, hard_p_t: float
) -> list[AnatomyRow]:
    """Total loss of ``easy_count`` examples at ``easy_p_t`` and ``hard_count`` at ``hard_p_t``, per gamma."""
    return [
        AnatomyRow(g, easy_count * focal_term(easy_p_t, g), hard_count * focal_term(hard_p_t, g))
        for g in gammas
    ]
