"""Your own losses, data sets and models, registered from an importable module, so the CLI, sweeps (and their
worker processes), reports and ``flx runs`` all know them.

.. code-block:: python

    # mylab/flxplugins.py
    import flx

    @flx.register_loss("asl", params={"gamma": 4.0}, description="asymmetric loss")
    def asl(logits, targets, reduction="mean", gamma=4.0): ...

    @flx.register_model("wide_mlp")
    def wide_mlp(input_shape, hidden):  # any of input_shape, hidden; returns an nn.Module
        return torch.nn.Sequential(torch.nn.Linear(input_shape[0], 4 * hidden), ...)

    @flx.register_dataset("mytask", params={"ratio": 50.0})
    def mytask(ratio, data_seed):  # returns (train, test) or (train, val, test): each (x, y), y in {0, 1}
        ...

then ``flx --plugin mylab.flxplugins sweep --loss asl,focal --model wide_mlp`` (or ``FLX_PLUGINS=mylab.flxplugins``).
A sweep's workers import the same modules (the ``--plugin`` / ``FLX_PLUGINS`` ones and every module that
registered something), so what a script registered before calling :func:`flx.sweep.run_sweep` works there too.

A registered loss or data set takes its hyperparameters from the config fields (:data:`flx.experiment.params.LOSS_PARAMS`,
:data:`flx.experiment.params.DATA_PARAMS`): the sweep grid, the run key and the report then treat them like the built-ins.
A model is called with the keywords it accepts of ``input_shape`` (one example's shape: ``(D,)`` for feature
vectors, ``(3, H, W)`` for images) and ``hidden``, and returns one logit per example (shape ``(N,)`` or
``(N, 1)``). Models are also accepted as ``--model module:function`` without registering.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from flx.errors import ConfigError
from flx.experiment.params import DATA_PARAMS, LOSS_PARAMS, PARAMS
from flx.experiment.registries import (
    DATASETS,
    LOSSES,
    MODEL_REGISTRY,
    MODELS,
    TABLE_DEFAULTS,
    DatasetSpec,
    LossSpec,
    import_path,
    resolve_path,
)

PLUGINS_ENV = "FLX_PLUGINS"


_MODULES: dict[str, None] = {}  # modules that registered something, in order (workers import them)


def _check_name(kind: str, name: str, taken) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(
            f"register_{kind} got name {name!r}; accepted: a Python identifier, e.g. 'my_{kind}'"
        )
    if name in taken:
        raise ConfigError(f"register_{kind}: {name!r} is already a {kind}; choose another name")


def _check_params(kind: str, params: dict, allowed: tuple) -> dict:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"register_{kind}: parameter(s) {unknown} are not config fields; accepted: {', '.join(allowed)}"
        )
    return {
        k: PARAMS[k].check(v, f"register_{kind} {k}") if v is not None else None for k, v in params.items()
    }


def _remember(fn: Callable) -> None:
    module = getattr(fn, "__module__", None)
    if module and module not in ("__main__", "__mp_main__"):
        _MODULES.setdefault(module)


def register_loss(name: str, params: dict | None = None, description: str = ""):
    """Register ``fn(logits, targets, reduction="mean", **params) -> loss`` as the loss ``name``; ``params``
    maps the config fields it takes (alpha, gamma, epsilon, ohem_k, ohem_ratio) to their defaults."""
    params = _check_params("loss", dict(params or {}), LOSS_PARAMS)

    def decorate(fn: Callable) -> Callable:
        if LOSSES.get(name, LossSpec(name, "")).objective is not fn:  # a module imported twice: no error
            _check_name("loss", name, LOSSES)
        LOSSES[name] = LossSpec(name, fn, params, description or (fn.__doc__ or "").strip().split("\n")[0])
        _remember(fn)
        return fn

    return decorate


def register_model(name: str):
    """Register ``fn(input_shape, hidden) -> nn.Module`` (any of the two keywords) as the model ``name``."""

    def decorate(fn: Callable) -> Callable:
        if MODEL_REGISTRY.get(name) is not fn:
            _check_name("model", name, {*MODELS, *MODEL_REGISTRY})
        MODEL_REGISTRY[name] = fn
        _remember(fn)
        return fn

    return decorate


@dataclasses.dataclass(frozen=True)
class RegisteredLoader:
    """The loader of a registered data set: ``func`` (the user's function) through
    :func:`flx.data.registered.load_registered`, named by path so that registering imports no torch."""

    func: Callable

    def __call__(self, **kwargs):
        return resolve_path("flx.data.registered:load_registered")(self.func, **kwargs)


def register_dataset(
    name: str, params: dict | None = None, defaults: dict | None = None, description: str = ""
):
    """Register ``fn(**params, data_seed) -> (train, test)`` or ``(train, val, test)``, each ``(x, y)`` with
    ``y`` in {0, 1} (1: the rare class), as the data set ``name``. ``params``: the config fields it takes
    (:data:`flx.experiment.params.DATA_PARAMS`) and their defaults; ``defaults``: its training defaults (default: a
    table's, in steps: 2,000 steps of 256 examples, the best checkpoint on validation AP every 100 steps, so a
    small data set gets more than a handful of optimizer steps). Without a validation split, flx carves one from train (10% of each class)."""
    params = _check_params("dataset", dict(params or {}), DATA_PARAMS)

    def decorate(fn: Callable) -> Callable:
        spec = DATASETS.get(name)
        if spec is None or getattr(spec.loader, "func", None) is not fn:
            _check_name("dataset", name, DATASETS)
        DATASETS[name] = DatasetSpec(
            name,
            RegisteredLoader(fn),
            params,
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            defaults=dict(defaults or TABLE_DEFAULTS),
        )
        _remember(fn)
        return fn

    return decorate


def _listed() -> list[str]:
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def plugin_modules() -> list[str]:
    """What a worker imports: the ``FLX_PLUGINS`` modules and every module that registered something here."""
    return list(dict.fromkeys([*_listed(), *_MODULES]))


def use_plugins(modules: list[str]) -> None:
    """``flx --plugin``: add ``modules`` to ``FLX_PLUGINS`` (so spawned workers see them too) and import every
    listed module (:func:`load_plugins`)."""
    if modules:
        os.environ[PLUGINS_ENV] = ",".join(dict.fromkeys([*_listed(), *modules]))
    load_plugins()


def load_plugins(modules: list[str] | None = None) -> None:
    """Import the plugin modules (default: :func:`plugin_modules`), from the working folder too, as
    ``python -m`` would; ConfigError naming a module that cannot be imported."""
    for module in plugin_modules() if modules is None else modules:
        try:
            import_path(module)
        except ImportError as exc:
            raise ConfigError(
                f"plugin {module!r} cannot be imported ({type(exc).__name__}: {exc}); give an importable module "
                "(on PYTHONPATH, or in the folder flx runs in)"
            ) from None
