"""Deprecated: ``flx.store`` moved to :mod:`flx.results.store`. This re-export goes in the next release."""

import warnings

from flx.results.store import *  # noqa: F403

warnings.warn(
    "flx.store moved to flx.results.store; this alias goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
