"""The synthetic task: Gaussian feature vectors, rare positives among many easy and some hard negatives."""

from __future__ import annotations

import torch

from flx.data.base import Split, digest_tensors

HARD_SPREAD = 2.0  # hard negatives: std 2 around the positives (std 1); Bayes AP about 0.92 by default


def _synthetic_split(n: int, dim: int, ratio: float, hard_frac: float, g: torch.Generator) -> Split:
    n_pos = max(1, round(n / (ratio + 1)))
    n_neg = n - n_pos
    n_hard = round(hard_frac * n_neg)
    n_easy = n_neg - n_hard
    centre = torch.zeros(dim)
    centre[0] = 8.0  # easy negatives sit at the origin, 8 standard deviations away
    pos = centre + torch.randn(n_pos, dim, generator=g)
    hard = centre + HARD_SPREAD * torch.randn(n_hard, dim, generator=g)  # same centre, wider: a shell
    easy = torch.randn(n_easy, dim, generator=g)
    x = torch.cat([pos, hard, easy])
    y = torch.cat([torch.ones(n_pos), torch.zeros(n_neg)])
    order = torch.randperm(n, generator=g)
    return Split(x[order].contiguous(), y[order].contiguous())


def load_synthetic(n_samples: int, dim: int, ratio: float, hard_frac: float, data_seed: int = 0, **_):
    g = torch.Generator().manual_seed(data_seed)
    train = _synthetic_split(n_samples, dim, ratio, hard_frac, g)
    test = _synthetic_split(n_samples, dim, ratio, hard_frac, g)
    # the validation split (choices are made on it) comes from its own stream: train and test stay as they were
    val = _synthetic_split(n_samples, dim, ratio, hard_frac, torch.Generator().manual_seed(data_seed + 7919))
    meta = {
        "location": "generated",
        "split": "generated",
        "classes": ("negative", "positive"),
        "fingerprint": digest_tensors(train.x, train.y, test.x, test.y),
        "val": val,
    }
    return train, test, meta
