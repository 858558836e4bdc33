"""How a run ends: every failure rule, each named and documented once here, and the :class:`Watcher` that
applies them (during training in :func:`flx.engine.fit.fit`, after it in the evaluations).

A run ends in one of four statuses, none of which stops a sweep; only ``ok`` runs enter a table's means, the
others are counted beside them:

- ``ok``: trained and evaluated.
- ``diverged``: something became non-finite: a step's training loss (training stops there), a weight at the
  end, or a test score / metric.
- ``collapsed``: training went wrong without a NaN:

  - *exploded*: the mean training loss over a window rose above ``EXPLODE_FACTOR`` times the first step's loss
    (floored at ``EXPLODE_FLOOR``). The window is a step for the detector (training stops before that step's
    update) and an epoch for the classifiers (checked at the epoch's end);
  - *knocked back* (detection): back to the prior, the failure a diverging detector often shows. Its loss on
    the object anchors fell and then came back to where it started (the classifier gives every anchor the
    prior again): the mean over ``WINDOW`` steps fell below ``FELL`` of the first ``WINDOW`` steps' mean and
    later rose to ``BACK`` of it. How high it rose after falling, as a share of the first mean, is the run's
    ``rebound``: how near it came. The run still trains to the end and is evaluated, so its record shows what
    it became;
  - *no ranking*: a classifier whose test scores are constant (they rank nothing);
  - *near chance* (detection): an anchor-level test AP within ``CHANCE`` times the share of object anchors
    (what a random scorer gets);
  - *no detections* (detection): nothing above the score threshold on the test images (background
    everywhere: the paper's CE without the prior).
- ``failed``: an exception (its message is recorded); a later sweep retries it.
"""

from __future__ import annotations

import math

EXPLODE_FACTOR = 100.0


EXPLODE_FLOOR = 0.01


WINDOW, FELL, BACK = 25, 0.5, 0.9


CHANCE = 10.0


class Watcher:
    """The failure rules of one run (see the module). During training, :func:`flx.engine.fit.fit` reports each
    step's loss (:meth:`loss`), each epoch's mean (:meth:`epoch`) and, where the run tracks them, the gradient
    norm and the object-anchor loss (:meth:`gradients`); after training the evaluations ask :meth:`weights`,
    :meth:`scores` and :meth:`detections`. ``status`` is "ok" until a rule says otherwise, ``error`` says
    which rule and when.

    ``explode_per``: "step" (the detector) or "epoch" (the classifiers): the window of the exploded rule.
    ``max_grad_norm`` is the largest gradient norm seen; ``knocked_back`` the first step at which the
    object-anchor loss came back (None while it has not); ``rebound`` the highest mean it came back to after
    falling below ``FELL`` of its initial mean, as a share of that (NaN while it has not fallen; ``BACK`` or
    more is a knock-back)."""

    def __init__(self, explode_per: str = "step"):
        if explode_per not in ("step", "epoch"):
            raise ValueError(f"explode_per got {explode_per!r}; accepted: step or epoch")
        self.explode_per = explode_per
        self.status, self.error = "ok", None
        self.first: float | None = None  # the first step's training loss
        self.values: list[float] = []  # the object-anchor loss per step
        self.initial = self.low = math.inf
        self.max_grad_norm = 0.0
        self.knocked_back: int | None = None
        self.rebound = math.nan
        self.level = (math.nan, math.nan)  # (initial, back at) the object-anchor loss, for the message

    # -- during training ---------------------------------------------------------------------------------------
    def loss(self, value: float) -> bool:
        """A step's training loss; False when training must stop here (diverged, or exploded per step)."""
        if not math.isfinite(value):
            self.status = "diverged"
            return False
        self.first = value if self.first is None else self.first
        if self.explode_per == "step" and self._exploded(value):
            self.status = "collapsed"
            return False
        return True

    def epoch(self, mean: float) -> bool:
        """An epoch's mean training loss; False when it exploded (per epoch)."""
        if self.status == "ok" and self.explode_per == "epoch" and self.first is not None:
            if self._exploded(mean):
                self.status = "collapsed"
        return self.status == "ok"

    def _exploded(self, value: float) -> bool:
        return value > EXPLODE_FACTOR * max(self.first, EXPLODE_FLOOR)

    def gradients(self, step: int, positive_loss: float, grad_norm: float) -> None:
        """A step's gradient norm (before clipping) and its loss on the object anchors: the knock-back rule."""
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

    # -- after training ----------------------------------------------------------------------------------------
    def weights(self, model) -> str:
        """Diverged when a weight is not finite at the end of training (checked only while ok)."""
        import torch

        if self.status == "ok" and not all(torch.isfinite(p).all() for p in model.parameters()):
            self.status = "diverged"
        return self.status

    def scores(self, scores) -> str:
        """A classifier's test scores (numpy): diverged when not finite, collapsed when constant."""
        import numpy as np

        if not np.isfinite(scores).all():
            self.status = "diverged"
        elif float(scores.max() - scores.min()) <= 1e-7:
            self.status = "collapsed"
        return self.status

    def detections(self, metrics: dict, finite: bool, positive_share: float) -> str:
        """A detector's evaluation: diverged when a metric or score is not finite; else collapsed when knocked
        back in training, near chance, or with no detection (``error`` says which)."""
        if not (finite and all(math.isfinite(v) for v in metrics.values())):
            self.status = "diverged"
        elif self.knocked_back is not None:
            self.status, self.error = "collapsed", self.message()
        elif near_chance(metrics["anchor_ap"], positive_share):
            self.status = "collapsed"
            self.error = f"anchor-level test AP {metrics['anchor_ap']:.4f}: near chance"
        elif metrics["detections"] == 0:
            self.status = "collapsed"
            self.error = "no detection above the score threshold on the test images"
        return self.status


def near_chance(anchor_ap: float, positive_share: float) -> bool:
    """Whether an anchor-level AP is no better than ``CHANCE`` times a random scorer's (the positive share)."""
    return anchor_ap <= CHANCE * positive_share
