"""Errors that flx shows a user: a one-line message, exit code 2, no traceback.

The library raises a :class:`UserError` subclass (naming the value and what is accepted); the CLI (:mod:`flx.cli.app`)
turns every one into one line on stderr. Nothing else is caught: a bug still shows its traceback.
"""


class UserError(Exception):
    """Bad input, or data or a store flx cannot use; the message is one line that says what to do."""


class ConfigError(UserError, ValueError):
    """A value, option or spec file that flx does not accept."""


class DataError(UserError, ValueError):
    """Missing or malformed data: says where flx looked and how to get the data."""


class StoreError(UserError):
    """A results store that cannot be used as asked (corrupt, read-only, old format, not a folder)."""


class ReportError(UserError):
    """Runs that cannot be reported (none stored, a malformed runs.csv, a read-only output folder)."""
