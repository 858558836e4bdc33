"""The floor of ``flx bench losses``: the least a binary loss's fused forward + backward can do over the same
tensors, timed through the same call as the losses.

Its forward reads each logit and target once, computes one exp and one log1p, writes one float32 (the
"gradient") and returns the sum; its backward hands that tensor to autograd, as flx's fused loss does. That is
12 bytes of memory traffic and two transcendental functions per logit, in the same vectorised float32 code as
flx's kernel (:mod:`flx.losses.vecmath`), split over torch's threads the same way. A loss cannot be faster than
this by much, so ``flx / floor`` says how far the real kernel is from it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from flx.losses.vecmath import floor_chunks

_BLOCK = 1 << 16  # elements per thread task


class _Floor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        xs, ys = x.detach().reshape(-1).contiguous(), y.reshape(-1).contiguous()
        out = torch.from_numpy(np.empty_like(xs.numpy()))  # allocated as flx's gradient is (huge pages)
        xn, yn, on = xs.numpy(), ys.numpy(), out.numpy()
        n = xn.size
        threads = torch.get_num_threads()
        if threads <= 1 or n < 4 * _BLOCK:
            floor_chunks(xn, yn, on, 0, n)
        else:
            on[:: 4096 // on.itemsize] = 0  # its pages touched by one thread first, as flx's outputs are
            bounds = [round(k * n / threads) for k in range(threads + 1)]
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda k: floor_chunks(xn, yn, on, bounds[k], bounds[k + 1]), range(threads)))
        ctx.grad = out.view(x.shape)
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad_out):
        grad, ctx.grad = ctx.grad, None
        return grad, None


def floor_loss(x: torch.Tensor, y: torch.Tensor, alpha=None, gamma=None, reduction=None) -> torch.Tensor:
    """The floor as a loss function of the bench's signature (float32 CPU tensors)."""
    return _Floor.apply(x, y)
