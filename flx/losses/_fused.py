r"""The binary focal family's fused CPU pass, compiled with numba for the CPU's vector units.

One pass reads each logit x and target y once and writes the gradient (and the per-element loss only when
asked), for sigmoid focal loss and its Poly-1 form (epsilon = 0 is focal loss; gamma = 0 with alpha off is BCE,
and with epsilon Poly-1 cross-entropy). With p = sigmoid(x), m = 1 - p, q = 1 - p_t = lerp(p, m, y),
l = -log p_t = BCE(x, y), w = q^gamma, alpha_t = (1 - alpha) + (2 alpha - 1) y:

    loss = alpha_t w l + epsilon q w
    dloss/dx = alpha_t w (gamma l D + p (1 - y) - y m) + epsilon (gamma + 1) w (1 - 2y) p m,   D = (1 - 2y) p m / q

p and m both come from e = exp(-|x|) (p = 1 / (1 + e) or e / (1 + e)), l is relu(x) - x y + log1p(e), and
p - y is written p (1 - y) - y m: at y = 0 and y = 1 every term is a product of quantities known to full relative
precision, so the result keeps it where p_t rounds to 1 (no 1 - p, no p - 1). q^(gamma - 1) is never formed
(D carries 1 / q, and l D -> 0 where p m underflows), so gamma < 1 stays finite; an infinite logit gives the
loss's limit (0 or inf) and the gradient's (0 where the loss is 0).

float32 inputs are computed in float32 with the exp and log1p of :mod:`flx.losses.vecmath` (a few ulps), so that
LLVM vectorises the loop; float64 inputs use libm's exp and log1p. The loss is added in float64, per chunk of
``CHUNK`` elements in the compiled code's fixed order (vector lanes), and the chunks' sums by the caller in chunk
order, so the sum does not depend on how chunks are shared among threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

from flx.losses.threads import CHUNK
from flx.losses.vecmath import exp_nonpositive32, sigmoid_parts32, wide_vectors

_JIT = {"nogil": True, "error_model": "numpy", "cache": True}  # numpy's model: x / 0 is inf, no raise


def _exp_nonpositive(v):
    """exp(v) for v <= 0: float32's own (vectorised) above, libm's for float64."""


@overload(_exp_nonpositive)
def _exp_nonpositive_typed(v):
    return (lambda v: exp_nonpositive32(v)) if v == types.float32 else (lambda v: math.exp(v))


def _sigmoid_parts(e):
    """(1 / (1 + e), log1p(e)) for e in [0, 1]: float32's own from one division above, libm's for float64."""


@overload(_sigmoid_parts)
def _sigmoid_parts_typed(e):
    if e == types.float32:
        return lambda e: sigmoid_parts32(e)
    return lambda e: (1.0 / (1.0 + e), math.log1p(e))


def _like(v, c):
    """The number c in v's dtype (so that float32 arithmetic stays float32)."""


@overload(_like)
def _like_typed(v, c):
    return (lambda v, c: np.float32(c)) if v == types.float32 else (lambda v, c: np.float64(c))


def _make(gkind: int, want_grad: bool, poly: bool):
    """The kernel for gamma's kind (0, 1, 2: gamma 0, 1, 2, multiplied out; 3: q ** gamma), whether it writes
    the gradient and whether it has a Poly-1 term (epsilon not 0), all constants of its code: a branch on them
    inside the loop kept LLVM from vectorising it (13 ms against 3.7 ms at 10^6 logits), and focal loss without
    the epsilon terms' arithmetic is 6-10% faster. numba caches it on disk (its closure holds an int and two
    bools), and types it by its arrays (float32 or float64)."""

    @numba.njit(**_JIT)
    def focal_chunks(x, y, a_pos, a_neg, gamma, eps, scale, el, grad, sums, c0, c1, want_el):
        """Chunks c0..c1-1 of x, y: each chunk's loss sum into sums[c], gradient (times ``scale``) into grad,
        elements into el when ``want_el``."""
        return _chunks(
            x, y, a_pos, a_neg, gamma, eps, scale, el, grad, sums, c0, c1, want_el, gkind, want_grad, poly
        )

    return focal_chunks


@numba.njit(inline="always", **_JIT)
def _power(q, gamma, gkind):
    """q^gamma, multiplied out for gamma 0, 1, 2 (``gkind`` is a constant of the caller's code)."""
    if gkind == 0:
        return _like(q, 1.0)
    if gkind == 1:
        return q
    if gkind == 2:
        return q * q
    return q**gamma


@numba.njit(inline="always", **_JIT)
def _hard(xs, ys, a_pos, a_neg, gamma, eps, scale, buf, flags, gs, gkind, want_grad, poly):
    """Elements with targets in {0, 1}: z = -x_t, q = sigmoid(z), p_t = sigmoid(-z), l = softplus(z), and
    dloss/dx = (1 - 2y) w (alpha_t (q + gamma l p_t) + epsilon (gamma + 1) q p_t) (the paper's Appendix B: the
    chain rule's q^(gamma - 1) cancels). One division per element (float32). Returns how many targets are not
    0 or 1 (y (1 - y) is not 0; NaN included). y (1 - y) is written to ``flags`` in this loop, where reading the
    targets from memory overlaps the arithmetic, and counted after it from L1: a loop of its own before this one
    waited on memory (7% of the pass at 10^7 logits), a count inside this one kept it from vectorising. Where it
    is not 0, the caller runs :func:`_soft` over the chunk, which overwrites everything written here. Without
    ``poly`` the epsilon terms are left out, which gives the same bits as adding epsilon = 0."""
    one, zero = _like(scale, 1.0), _like(scale, 0.0)
    for i in range(xs.size):
        xi, yi = xs[i], ys[i]
        flags[i] = yi * (one - yi)
        neg = yi != zero  # the positives' z is -x
        z = -xi if neg else xi
        e = _exp_nonpositive(-abs(xi))
        r, softplus = _sigmoid_parts(e)  # sigmoid(|x|), softplus(-|x|)
        er = e * r
        up = z >= zero
        q = r if up else er
        p_t = er if up else r
        lval = (z if up else zero) + softplus
        w = _power(q, gamma, gkind)
        a_t = a_pos if neg else a_neg
        buf[i] = w * (a_t * lval + eps * q) if poly else w * (a_t * lval)
        if want_grad:
            lp = zero if p_t == zero else lval * p_t  # z = inf: l p_t -> 0
            if poly:
                g = w * (a_t * (q + gamma * lp) + eps * (gamma + one) * q * p_t)
            else:
                g = w * (a_t * (q + gamma * lp))
            gs[i] = -scale * g if neg else scale * g
    soft = 0
    for i in range(xs.size):
        soft += flags[i] != zero
    return soft


@numba.njit(inline="always", **_JIT)
def _soft(xs, ys, a_pos, a_neg, gamma, eps, scale, buf, gs, gkind, want_grad):
    """Elements with any targets (torchvision's formulas, exact at 0 and 1; see the module's docstring)."""
    one, zero, half = _like(scale, 1.0), _like(scale, 0.0), _like(scale, 0.5)
    for i in range(xs.size):
        xi, yi = xs[i], ys[i]
        e = _exp_nonpositive(-abs(xi))
        r, softplus = _sigmoid_parts(e)
        sm = e * r
        pos = xi >= zero
        p = r if pos else sm
        m = sm if pos else r
        diff = m - p
        omy = one - yi
        q = p + yi * diff if yi < half else m - diff * omy  # torch.lerp: exact at both ends
        t = omy if pos else -yi
        lval = (xi * t if t != zero else zero) + softplus  # relu(x) - x y, 0 * inf taken as 0
        w = _power(q, gamma, gkind)
        a_t = a_neg + (a_pos - a_neg) * yi
        buf[i] = a_t * w * lval + eps * q * w
        if want_grad:
            pm = p * m
            sign = one - yi - yi
            inner = p * omy - yi * m
            if gkind != 0:
                inner += gamma * (zero if pm == zero else lval * sign * (pm / q))
            gs[i] = scale * (a_t * w * inner + eps * (gamma + one) * w * sign * pm)


@numba.njit(**{**_JIT, "fastmath": {"reassoc"}})
def _chunk_sum(buf, k):
    """buf[:k] added in float64. Reassociation lets LLVM add it in vector lanes (4x the scalar adds, ~4% of the
    whole pass); the order is the compiled code's, so the same on every call and at every thread count."""
    s = 0.0
    for j in range(k):
        s += np.float64(buf[j])
    return s


@numba.njit(inline="always", **_JIT)
def _chunks(x, y, a_pos, a_neg, gamma, eps, scale, el, grad, sums, c0, c1, want_el, gkind, want_grad, poly):
    wide_vectors()
    n = x.size
    buf, flags = np.empty(CHUNK, x.dtype), np.empty(CHUNK, x.dtype)
    for c in range(c0, c1):
        lo = c * CHUNK
        hi = min(lo + CHUNK, n)
        xs, ys = x[lo:hi], y[lo:hi]
        gs = grad[lo:hi]
        # a chunk of 0/1 targets takes the cheaper formulas; one with any other target (NaN too) the general ones
        if _hard(xs, ys, a_pos, a_neg, gamma, eps, scale, buf, flags, gs, gkind, want_grad, poly) != 0:
            _soft(xs, ys, a_pos, a_neg, gamma, eps, scale, buf, gs, gkind, want_grad)
        k = hi - lo
        if want_el:
            el[lo:hi] = buf[:k]
        sums[c] = _chunk_sum(buf, k)


_KERNELS: dict = {}  # (gamma kind, gradient wanted, Poly-1) -> kernel, made on first use


def alpha_weights(alpha: float) -> tuple[float, float]:
    """(alpha_t for y = 1, alpha_t for y = 0): (alpha, 1 - alpha), or (1, 1) where alpha < 0 turns it off."""
    return (alpha, 1.0 - alpha) if alpha >= 0 else (1.0, 1.0)


def gamma_kind(gamma: float) -> int:
    """The kernel's code for gamma: 0, 1, 2 multiply (no pow), 3 is q ** gamma."""
    return {0.0: 0, 1.0: 1, 2.0: 2}.get(float(gamma), 3)


def focal_chunks(x, y, alpha, gamma, epsilon, scale, el, grad, sums, c0, c1):
    """Runs chunks c0..c1-1 (numpy arrays of one float dtype, 1-D, contiguous; ``el`` / ``grad`` None when not
    wanted); the GIL is released while it runs. alpha < 0 turns the weighting off."""
    dt = x.dtype.type
    a_pos, a_neg = alpha_weights(alpha)
    empty = x[:0]
    key = (gamma_kind(gamma), grad is not None, epsilon != 0)
    if key not in _KERNELS:
        _KERNELS[key] = _make(*key)
    _KERNELS[key](
        x,
        y,
        dt(a_pos),
        dt(a_neg),
        dt(gamma),
        dt(epsilon),
        dt(scale),
        empty if el is None else el,
        empty if grad is None else grad,
        sums,
        c0,
        c1,
        el is not None,
    )


ROWS = 1024  # rows per partial sum of the softmax kernel


def _make_softmax(gkind: int, want_grad: bool):
    """The softmax kernel for gamma's kind and whether it writes the gradient (constants of its code, cached)."""

    @numba.njit(**_JIT)
    def softmax_rows(z, t, keep, weights, alpha, gamma, eps, scale, loss, grad, sums, c0, c1):
        """Row chunks c0..c1-1 of z (M, C): each row's loss into loss, each chunk's sum into sums[c], the gradient
        (times ``scale``) into grad; ``weights`` (C,) per-class alpha when it has C entries, else one alpha (a
        negative one: none)."""
        return _softmax_chunks(
            z, t, keep, weights, alpha, gamma, eps, scale, loss, grad, sums, c0, c1, gkind, want_grad
        )

    return softmax_rows


@numba.njit(inline="always", **_JIT)
def _softmax_chunks(
    z, t, keep, weights, alpha, gamma, eps, scale, loss, grad, sums, c0, c1, gkind, want_grad
):
    r"""With l = log p_t = z_t - max - log1p(sum of the other exp(z_j - max)) (no 1 + s whose rounding loses p_t
    near 1), q = 1 - p_t (from the exps, without cancellation), w = q^gamma:

        loss = -alpha_t w l + epsilon q w
        dloss/dz_j = G (delta_jt - p_j),  G = alpha_t (gamma w p_t l / q - w) - epsilon (gamma + 1) w p_t

    where l / q -> -1 as q -> 0, so q^(gamma - 1) is never formed. A class masked with -inf has p_j = 0."""
    m, ncls = z.shape
    zero, one = _like(scale, 0.0), _like(scale, 1.0)
    per_class = weights.size == ncls
    ex = np.empty(ncls, z.dtype)  # the row's exp(z_j - max), kept for its gradient
    for c in range(c0, c1):
        lo = c * ROWS
        hi = min(lo + ROWS, m)
        total = 0.0
        for r in range(lo, hi):
            if not keep[r]:
                loss[r] = zero
                if want_grad:
                    grad[r, :] = zero
                continue
            row = z[r]
            ti = t[r]
            top = 0
            for j in range(1, ncls):
                if row[j] > row[top]:
                    top = j
            mx = row[top]
            for j in range(ncls):  # arguments <= 0: the vectorised exp
                ex[j] = _exp_nonpositive(row[j] - mx)
            ex[top] = zero
            rest = zero
            for j in range(ncls):
                rest += ex[j]
            ex[top] = one
            inv = one / (one + rest)  # 1 / sum of the exps
            logp = (row[ti] - mx) - math.log1p(rest)
            # 1 - p_t as (the sum of the other classes' exps) / (the sum): rest itself when t is the top class, else
            # at least 1 over the sum, so no cancellation either way; p_t = exp(z_t - max) / the sum
            q = (rest if ti == top else one + rest - ex[ti]) * inv
            p_t = ex[ti] * inv
            w = _power(q, gamma, gkind)
            a_t = weights[ti] if per_class else (alpha if alpha >= zero else one)
            value = -a_t * w * logp + eps * q * w
            loss[r] = value
            total += value
            if want_grad:
                ratio = -one if q == zero else logp / q
                focus = zero if p_t == zero else gamma * w * p_t * ratio
                g = scale * (a_t * (focus - w) - eps * (gamma + one) * w * p_t)
                h = -g * inv
                gr = grad[r]
                for j in range(ncls):
                    gr[j] = h * ex[j]
                gr[ti] += g
        sums[c] = total


_SOFTMAX: dict = {}  # (gamma kind, gradient wanted) -> kernel


def softmax_rows(z, t, keep, weights, alpha, gamma, epsilon, scale, loss, grad, sums, c0, c1):
    """Runs row chunks c0..c1-1 (z (M, C) contiguous float32/float64, t (M,) int64 in range where kept, keep (M,)
    bool, weights (C,) of z's dtype or empty; ``grad`` None when not wanted); the GIL is released while it
    runs."""
    dt = z.dtype.type
    key = (gamma_kind(gamma), grad is not None)
    if key not in _SOFTMAX:
        _SOFTMAX[key] = _make_softmax(*key)
    empty = z[:0]
    _SOFTMAX[key](
        z,
        t,
        keep,
        weights,
        dt(alpha),
        dt(gamma),
        dt(epsilon),
        dt(scale),
        loss,
        empty if grad is None else grad,
        sums,
        c0,
        c1,
    )
