"""flx: an experiment runner for focal loss and friends on imbalanced classification."""

__version__ = "0.3.0"  # 0.2: run keys with the data; 0.3: your data, models, devices, artefacts, Ray

from flx.registry import register_dataset, register_loss, register_model  # noqa: E402

__all__ = ["register_dataset", "register_loss", "register_model", "__version__"]
