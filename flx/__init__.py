"""flx: an experiment runner for focal loss and friends on imbalanced classification.

``flx.register_loss``, ``flx.register_dataset`` and ``flx.register_model`` (:mod:`flx.experiment.plugins`) load
on first use, so ``import flx.losses`` imports no other part of flx.
"""

__version__ = "0.4.0"  # 0.2: run keys with the data; 0.3: your data, models, devices, artefacts, Ray; 0.4: RunRecord, one loop, docs

__all__ = ["register_dataset", "register_loss", "register_model", "__version__"]


def __getattr__(name: str):
    if name in ("register_dataset", "register_loss", "register_model"):
        from flx.experiment import plugins

        return getattr(plugins, name)
    raise AttributeError(f"module 'flx' has no attribute {name!r}")
