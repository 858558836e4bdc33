"""The one training loop of flx: classification heads, the in-domain backbone and the detector all train here.

A task gives :func:`fit` its model and optimizer, its batches (an iterator that draws them in its own order
from its own generator, so a run sees the same examples in the same order on every device) and how a batch
becomes a loss (:class:`StepLoss`). :func:`fit` owns what is common: train mode, the learning-rate schedule,
the update, gradient clipping, the learning-curve hook and the :class:`~flx.engine.status.Watcher` that applies
every failure rule (a non-finite or exploded loss stops training).

One step, in order: the batch is drawn; the learning rate is set (``lr_at``); the loss is computed; the Watcher
sees its value (training stops before the update if it diverged or exploded); backward; the gradient norm
(where the run watches gradients or clips them) goes to the Watcher with the object-anchor loss; the gradients
are clipped to ``clip_grad``; the optimizer steps; ``on_eval`` is called where due.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from flx.engine.status import Watcher


@dataclass(frozen=True)
class StepLoss:
    """What a task's loss function returns for one batch: the loss to minimise and, for the knock-back rule,
    the part of it on the object anchors (None where the run has none)."""

    loss: torch.Tensor
    positive: float | None = None


@dataclass(frozen=True)
class Batch:
    """One batch as a task draws it: whatever its loss function takes (``data``), and whether it ends an epoch
    (a pass over the shuffled training split)."""

    data: Any
    ends_epoch: bool = False


@dataclass
class Fit:
    """How training went: ``steps`` taken (those whose loss was finite), ``epochs`` closed, every step's loss,
    the last epoch's mean loss, and the Watcher (status, the largest gradient norm, a knock-back)."""

    watcher: Watcher
    steps: int = 0
    epochs: int = 0
    losses: list[float] = field(default_factory=list)
    epoch_loss: float = float("nan")

    @property
    def status(self) -> str:
        return self.watcher.status


def shuffled_epochs(x, y, batch_size: int, g, device: str = "cpu", epoch_weights=None) -> Iterator[Batch]:
    """Endless batches ``(inputs, targets, weights)`` of shuffled passes over ``(x, y)``: inputs prepared
    (:func:`flx.models.inference.prepare_inputs`), images flipped at random; each epoch's order is drawn from
    ``g`` (on the CPU, so every device sees the same examples) when it starts, after its per-example weights
    (``epoch_weights()``, if given; else ``weights`` is None). What the classifiers and the in-domain backbone
    train on."""
    from flx.models.inference import prepare_inputs

    x_dev, y_dev = x.to(device), y.to(device)
    images = x.dim() == 4
    starts = range(0, len(x), batch_size)
    while len(starts):
        weights = epoch_weights().to(device) if epoch_weights is not None else None
        order = torch.randperm(len(x), generator=g)
        for start in starts:
            idx = order[start : start + batch_size].to(device)
            xb = prepare_inputs(x_dev[idx])
            if images:  # random horizontal flips
                flip = (torch.rand(len(idx), generator=g) < 0.5).to(device)
                xb[flip] = xb[flip].flip(-1)
            w = weights[idx] if weights is not None else None
            yield Batch((xb, y_dev[idx], w), ends_epoch=start == starts[-1])


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    step_loss: Callable[[Any], StepLoss],
    total: int,
    watcher: Watcher,
    *,
    lr_at: Callable[[int], float] | None = None,
    clip_grad: float = 0.0,
    watch_gradients: bool = False,
    eval_every: int = 0,
    eval_at_end: bool = False,
    on_eval: Callable[[int, torch.nn.Module, float], None] | None = None,
    on_epoch: Callable[[int, torch.nn.Module, float], None] | None = None,
) -> Fit:
    """Train ``model`` for ``total`` steps (fewer if ``batches`` runs out or a rule stops it) and return a
    :class:`Fit`; the weights are checked for non-finite values at the end.

    ``lr_at(step)``: the learning rate of each step (else the optimizer's stays). ``clip_grad`` > 0: gradients
    clipped to that total norm. ``watch_gradients``: the gradient norm before clipping and the object-anchor
    loss go to the Watcher each step. ``on_eval(step, model, mean training loss since the last call)`` every
    ``eval_every`` steps (and after the last with ``eval_at_end``), while training is ok; ``on_epoch(epochs,
    model, that mean)`` after each epoch that closes while ok (the classifiers' per-epoch learning curve)."""
    done = Fit(watcher)
    since, running, in_epoch, stopped = [0.0, 0], 0.0, 0, False
    for batch in batches if total > 0 else ():
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(done.steps)
        model.train()
        out = step_loss(batch.data)
        value = float(out.loss.detach())
        if not watcher.loss(value):
            if watcher.status == "collapsed":  # exploded: a finite loss, counted, never applied
                done.losses.append(value)
                done.steps += 1
            stopped = True
            break
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if watch_gradients or clip_grad:
            norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
            if watch_gradients:
                watcher.gradients(done.steps, float(out.positive), float(norm))  # the norm before clipping
            if clip_grad:
                torch.nn.utils.clip_grads_with_norm_(model.parameters(), clip_grad, norm)
        optimizer.step()
        done.losses.append(value)
        done.steps += 1
        running, in_epoch = running + value, in_epoch + 1
        since[0], since[1] = since[0] + value, since[1] + 1
        due = eval_every and (done.steps % eval_every == 0 or (eval_at_end and done.steps == total))
        if on_eval is not None and due:
            on_eval(done.steps, model, since[0] / since[1])
            since[:] = [0.0, 0]
        if batch.ends_epoch or done.steps == total:
            _close_epoch(done, running, in_epoch, model, since, on_epoch)
            running, in_epoch = 0.0, 0
        if done.steps >= total or watcher.status != "ok":  # before drawing another batch (its epoch's order)
            break
    if in_epoch or stopped:  # stopped inside an epoch: it closes there
        _close_epoch(done, running, in_epoch, model, since, on_epoch)
    watcher.weights(model)
    return done


def _close_epoch(done: Fit, running: float, batches: int, model, since: list, on_epoch) -> None:
    """An epoch ends (its last batch, the last step, or training stopped inside it): its mean loss, the
    exploded rule per epoch, and the per-epoch hook while ok."""
    done.epochs += 1
    done.epoch_loss = running / max(batches, 1)
    ok = done.watcher.epoch(done.epoch_loss)
    if on_epoch is not None and ok:
        on_epoch(done.epochs, model, since[0] / max(since[1], 1))
        since[:] = [0.0, 0]
