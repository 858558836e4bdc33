"""The ``flx`` command line: one module per command group. A command parses its options (values are checked
against the constraint table before torch is imported), calls one library function and renders what it
returns (:mod:`.views`). Every :class:`flx.errors.UserError` becomes one line on stderr with exit code 2."""

from flx.cli import compare, results, tools, train  # noqa: F401 (registers the commands)
from flx.cli.app import app, main, typed_help

typed_help(app)

__all__ = ["app", "main"]
