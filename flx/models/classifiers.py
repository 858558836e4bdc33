"""Models: a linear classifier and an MLP for feature vectors and a CNN for small images (built in), your own
(registered or ``module:function``) and torchvision's classifiers, each giving one logit per example, with the
paper's prior initialisation."""

from __future__ import annotations

import math
from pathlib import Path

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


def linear(input_shape: tuple, hidden: int) -> Linear:
    return Linear(input_shape[0])


def mlp(input_shape: tuple, hidden: int) -> MLP:
    return MLP(input_shape[0], hidden)


def cnn(input_shape: tuple, hidden: int) -> SmallCNN:
    return SmallCNN(input_shape[0], width=max(4, hidden // 4))


class Logits(nn.Module):
    """A model whose output is (N, 1) or (N,), as (N,): one logit per example, what flx's losses take."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out.squeeze(-1) if out.dim() == 2 and out.shape[-1] == 1 else out


def build_model(
    name: str, input_shape: tuple[int, ...], hidden: int, prior: float | None, weights: str | None = None
) -> nn.Module:
    """The model ``name`` for inputs of ``input_shape`` (one example); its classifier's bias starts at
    p = prior unless None (Lin et al., Section 4.1).

    - built in: ``linear``, ``mlp`` (feature vectors), ``cnn`` (images); the last layer's weights ~ N(0, 0.01);
    - registered with :func:`flx.register_model`, or ``module:function``: called with the keywords it takes of
      ``input_shape`` and ``hidden``;
    - any other name: torchvision's classification model (``torchvision.models.get_model``) with one output,
      ``weights`` None (random), ``imagenet`` (torchvision's checkpoint in the torch hub cache) or a state
      dict's path; its classifier is replaced by a one-logit layer.

    For the last three the prior sets the bias of the last ``nn.Linear`` with one output, if there is one.
    A model must give one logit per example: ValueError otherwise (checked on two zero examples).
    """
    from flx.experiment.registries import MODEL_REGISTRY, MODELS, model_kind, resolve_path

    kind = model_kind(name)
    if kind == "builtin":
        if name == "retinanet":
            raise ValueError(f"model {name!r} is a detector, not a classifier")
        model = resolve_path(MODELS[name])(tuple(input_shape), hidden)
        nn.init.normal_(model.head.weight, std=0.01)
        nn.init.constant_(model.head.bias, prior_bias(prior) if prior is not None else 0.0)
        return model
    if kind == "torchvision":
        model = torchvision_model(name, weights)
    else:
        builder = MODEL_REGISTRY[name] if kind == "registered" else resolve_path(name)
        model = _call(builder, input_shape=tuple(input_shape), hidden=hidden)
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"model {name!r} returned {type(model).__name__}; it must return a torch.nn.Module"
            )
    model = Logits(model)
    head = last_linear(model)
    if head is not None and head.out_features == 1 and head.bias is not None and prior is not None:
        with torch.no_grad():
            head.bias.fill_(prior_bias(prior))
    _check_output(model, name, input_shape)
    return model


def _call(fn, **kwargs):
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in params})


def last_linear(model: nn.Module) -> nn.Linear | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _check_output(model: nn.Module, name: str, input_shape: tuple) -> None:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *input_shape))
    model.train(was)
    if tuple(out.shape) != (2,):
        raise ValueError(
            f"model {name!r} gives an output of shape {tuple(out.shape)} for 2 examples of shape "
            f"{tuple(input_shape)}; flx needs one logit per example: (2,) or (2, 1)"
        )


def imagenet_checkpoint(name: str) -> Path:
    """Where torchvision keeps the ImageNet checkpoint of its model ``name`` once downloaded."""
    import torchvision.models as tvm

    url = tvm.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def missing_imagenet(name: str, path: Path):
    """The DataError for ImageNet weights of ``name`` that are not at ``path`` (this machine cannot download)."""
    from flx.errors import DataError

    return DataError(
        f"ImageNet weights for {name} are not in the torch hub cache ({path}); download them once with "
        f"`python -c \"import torchvision; torchvision.models.get_model('{name}', weights='DEFAULT')\"` on a "
        "machine with internet, or give --weights PATH (a state dict), or --weights random"
    )


def load_torchvision_weights(model: nn.Module, name: str, weights: str) -> None:
    """Load ``weights`` into torchvision's ``name``: ``imagenet`` (the hub checkpoint) or a state dict's path;
    DataError (one line) when the checkpoint is missing or does not fit the model."""
    from flx.errors import DataError

    path = imagenet_checkpoint(name) if weights == "imagenet" else Path(weights).expanduser()
    if weights == "imagenet" and not path.is_file():
        raise missing_imagenet(name, path)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise DataError(
            f"--weights {path}: cannot load it into torchvision's {name} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120]}); give a state dict saved from that model"
        ) from None


def torchvision_model(name: str, weights: str | None = None) -> nn.Module:
    """torchvision's classifier ``name`` with one output; ``weights`` as :func:`build_model` says."""
    import torchvision.models as tvm

    if weights in (None, "random"):
        return tvm.get_model(name, weights=None, num_classes=1)
    model = tvm.get_model(name, weights=None)
    load_torchvision_weights(model, name, weights)
    head = last_linear(model)
    parent_name, _, attr = next(n for n, m in model.named_modules() if m is head).rpartition(".")
    setattr(model.get_submodule(parent_name), attr, nn.Linear(head.in_features, 1))
    return model
