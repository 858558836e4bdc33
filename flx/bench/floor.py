"""The floor of ``flx bench losses``: the least a binary loss's fused forward + backward can do over the same
tensors, timed through the same call as the losses.

Its forward reads each logit and target once, computes one exp and one log1p, writes one float32 (the
"gradient") and returns a 0-d zero; its backward hands that tensor to autograd, as flx's fused loss does. That is
12 bytes of memory traffic and two transcendental functions per logit, in the same vectorised float32 code as
flx's kernel (:mod:`flx.losses.vecmath`), split over torch's threads by the same helper
(:func:`flx.losses.threads.in_threads`, one kept pool). A loss cannot be faster than
this by much, so ``flx / floor`` says how far the real kernel is from it.
"""

from __future__ import annotations

import torch

from flx.losses.threads import CHUNK, LEAST, host_empty, in_threads
from flx.losses.vecmath import floor_chunks


class _Floor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        xs, ys = x.detach().reshape(-1).contiguous(), y.reshape(-1).contiguous()
        out = host_empty(xs.shape, xs.dtype)  # allocated, threaded and touched as flx's gradient is
        xn, yn, on = xs.numpy(), ys.numpy(), out.numpy()
        n = xn.size
        in_threads(
            lambda c0, c1: floor_chunks(xn, yn, on, c0 * CHUNK, min(c1 * CHUNK, n)),
            -(-n // CHUNK),
            LEAST,
            (on,),
        )
        ctx.grad = out.view(x.shape)
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad_out):
        grad, ctx.grad = ctx.grad, None
        return grad, None


def floor_loss(x: torch.Tensor, y: torch.Tensor, alpha=None, gamma=None, reduction=None) -> torch.Tensor:
    """The floor as a loss function of the bench's signature (float32 CPU tensors)."""
    return _Floor.apply(x, y)
