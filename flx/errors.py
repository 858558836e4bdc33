"""The one error type that flx shows a user: a one-line message, exit code 2, no traceback."""

import typer


class FlxError(typer.BadParameter):
    """Bad input or missing data, told in one line; the CLI exits with code 2 and writes nothing.

    A subclass of Typer's usage errors, so Typer (and its test runner) report it with exit code 2 too.
    """

    exit_code = 2

    def format_message(self) -> str:
        return self.message
