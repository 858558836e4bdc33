"""Errors that flx shows a user: a one-line message, exit code 2, no traceback.

The library raises a :class:`UserError` subclass (naming the value and what is accepted); the CLI turns every
one into a :class:`FlxError`. Nothing else is caught: a bug still shows its traceback.
"""

import typer


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


class FlxError(typer.BadParameter):
    """Bad input or missing data, told in one line; the CLI exits with code 2 and writes nothing.

    A subclass of Typer's usage errors, so Typer (and its test runner) report it with exit code 2 too.
    """

    exit_code = 2

    def format_message(self) -> str:
        return self.message
