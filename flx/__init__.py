"""flx: an experiment runner for focal loss and friends on imbalanced classification."""

__version__ = "0.1.0"
