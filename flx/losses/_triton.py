r"""The binary focal family's fused pass on a CUDA GPU, written in Triton: one read of each logit and target, the
gradient written, the per-element loss only when asked, and one float64 partial sum per block.

It computes the general (soft-target) formulas of :mod:`flx.losses._fused`, exact at y = 0 and y = 1, with
p = sigmoid(x), m = 1 - p, q = lerp(p, m, y), l = BCE(x, y), w = q^gamma, alpha_t = (1 - alpha) + (2 alpha - 1) y:

    loss = alpha_t w l + epsilon q w
    dloss/dx = alpha_t w (gamma l D + p (1 - y) - y m) + epsilon (gamma + 1) w (1 - 2y) p m,   D = (1 - 2y) p m / q

p and m both come from e = exp(-|x|); log1p(e) is log(u) e / (u - 1) with u = 1 + e (e itself where u rounds to
1), so the loss of an easy negative keeps its relative precision. A GPU pass is bound by memory, not arithmetic:
one kernel replaces the seven-buffer chain of torch operations of ``_fused_device``.

The blocks' sums are added by ``torch.sum`` over a fixed number of blocks, so the result is the same on every call.
Used for float32 tensors on a CUDA device when Triton imports (``FLX_TRITON=0`` turns it off); tested on the CPU
through Triton's interpreter (``TRITON_INTERPRET=1``) and on a GPU by ``make gpu-check``.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

from flx.losses._fused import alpha_weights, gamma_kind

BLOCK = 1024  # elements per program: one float64 partial sum each


@functools.cache
def _kernel():
    """The jitted kernel, made on first use (importing this module never imports Triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def focal_blocks(
        x_ptr, y_ptr, el_ptr, grad_ptr, sums_ptr, n, a_pos, a_neg, gamma, eps, scale,
        GKIND: tl.constexpr, WANT_EL: tl.constexpr, WANT_GRAD: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        y = tl.load(y_ptr + offs, mask=mask, other=0.0)
        e = tl.exp(-tl.abs(x))
        u = 1.0 + e
        r = 1.0 / u
        softplus = tl.where(u == 1.0, e, tl.log(u) * e / (u - 1.0))  # log1p(e), e in [0, 1]
        sm = e * r
        pos = x >= 0.0
        p = tl.where(pos, r, sm)
        m = tl.where(pos, sm, r)
        diff = m - p
        omy = 1.0 - y
        q = tl.where(y < 0.5, p + y * diff, m - diff * omy)  # torch.lerp: exact at both ends
        t = tl.where(pos, omy, -y)
        lval = tl.where(t != 0.0, x * t, 0.0) + softplus  # relu(x) - x y, 0 * inf taken as 0
        if GKIND == 0:
            w = tl.full(q.shape, 1.0, tl.float32)
        elif GKIND == 1:
            w = q
        elif GKIND == 2:
            w = q * q
        else:
            w = tl.where(q > 0.0, tl.exp2(gamma * tl.log2(q)), 0.0)  # the branch not taken may be NaN
        a_t = a_neg + (a_pos - a_neg) * y
        loss = a_t * w * lval + eps * q * w
        if WANT_EL:
            tl.store(el_ptr + offs, loss, mask=mask)
        tl.store(sums_ptr + tl.program_id(0), tl.sum(tl.where(mask, loss, 0.0).to(tl.float64), axis=0))
        if WANT_GRAD:
            pm = p * m
            sign = 1.0 - y - y
            inner = p * omy - y * m
            if GKIND != 0:
                inner += gamma * tl.where(pm == 0.0, 0.0, lval * sign * (pm / q))  # q = 0 only where pm = 0
            g = scale * (a_t * w * inner + eps * (gamma + 1.0) * w * sign * pm)
            tl.store(grad_ptr + offs, g, mask=mask)

    return focal_blocks


_STATE = {"launched": False, "broken": False}  # a first launch that failed (no compiler, say) turns it off


def usable(x: torch.Tensor) -> bool:
    """Whether ``x`` (the compute-dtype logits) takes the Triton kernel: float32 on a CUDA device, Triton
    importable, ``FLX_TRITON`` not ``0``, and its first launch in this process did not fail."""
    if x.device.type != "cuda" or x.dtype != torch.float32 or os.environ.get("FLX_TRITON", "1") == "0":
        return False
    if _STATE["broken"]:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_pass(x, y, alpha, gamma, epsilon, scale, out, grad):
    """The kernel over flat contiguous float32 ``x`` and ``y``: writes ``out`` (per-element loss) and ``grad``
    (``scale * dloss/dx``) where they are not None; returns (out, grad) when ``out`` is given, else the float64
    sum of the loss (a 0-d tensor on x's device) and grad; None when the process's first launch fails (the caller
    falls back to torch operations, and :func:`usable` says no from then on). alpha < 0 turns the weighting off."""
    n = x.numel()
    blocks = max(1, -(-n // BLOCK))
    sums = torch.empty(blocks, dtype=torch.float64, device=x.device)
    a_pos, a_neg = alpha_weights(alpha)
    try:
        _kernel()[(blocks,)](
            x, y, x if out is None else out, x if grad is None else grad, sums, n,
            float(a_pos), float(a_neg), float(gamma), float(epsilon), float(scale),
            GKIND=gamma_kind(gamma), WANT_EL=out is not None, WANT_GRAD=grad is not None, BLOCK=BLOCK,
        )  # fmt: skip
    except Exception as exc:  # compiling it needs a C compiler and a working Triton: fall back, said once
        if _STATE["launched"]:
            raise
        _STATE["broken"] = True
        warnings.warn(
            f"flx.losses: the Triton kernel did not run ({exc!r:.200}); using torch operations", stacklevel=3
        )
        return None
    _STATE["launched"] = True
    if out is not None:
        return out, grad
    return sums.sum(), grad
