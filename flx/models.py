"""Small models: a linear classifier and an MLP for feature vectors and a CNN for small images, with the paper's prior initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn


def prior_bias(prior: float) -> float:
    """b = -log((1 - pi) / pi): every example starts at p = pi (Lin et al., Section 4.1; pi = 0.01)."""
    return -math.log((1 - prior) / prior)


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(1)


class Linear(nn.Module):
    """A linear classifier (logistic regression) on feature vectors."""

    def __init__(self, in_features: int):
        super().__init__()
        self.head = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x).squeeze(1)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU-pool blocks and global average pooling; works for any input size >= 8."""

    def __init__(self, in_channels: int = 3, width: int = 16):
        super().__init__()
        layers, c = [], in_channels
        for out in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(c, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c = out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(1)


MODELS = {"linear": Linear, "mlp": MLP, "cnn": SmallCNN}


def build_model(name: str, input_shape: tuple[int, ...], hidden: int, prior: float | None) -> nn.Module:
    """The model for inputs of ``input_shape`` (one example); the classifier starts at p = prior unless None."""
    if name == "linear":
        model = Linear(input_shape[0])
    elif name == "mlp":
        model = MLP(input_shape[0], hidden)
    elif name == "cnn":
        model = SmallCNN(input_shape[0], width=max(4, hidden // 4))
    else:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    nn.init.normal_(model.head.weight, std=0.01)
    nn.init.constant_(model.head.bias, prior_bias(prior) if prior is not None else 0.0)
    return model
