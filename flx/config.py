"""Deprecated: ``flx.config`` moved to :mod:`flx.experiment` (``params``, ``registries``, ``config``, ``spec``).
This re-export goes in the next release; a monkeypatch must patch the module that owns the name."""

import warnings

from flx.experiment.config import *  # noqa: F403
from flx.experiment.params import *  # noqa: F403
from flx.experiment.registries import *  # noqa: F403
from flx.experiment.spec import *  # noqa: F403
from flx.losses.bounds import epsilon_bound  # noqa: F401

warnings.warn(
    "flx.config moved to flx.experiment (params, registries, config, spec); this alias goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
