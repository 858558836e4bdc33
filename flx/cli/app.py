"""The ``flx`` application: its command groups, the root options (``--version``, ``--plugin``), how a user error
becomes one line with exit code 2, and the console entry point.
"""

from __future__ import annotations

import errno
import functools
import math
import sys

import typer

from flx import __version__
from flx.errors import UserError

app = typer.Typer(
    name="flx",
    help="Experiment runner for focal loss and friends on imbalanced classification.",
    no_args_is_help=True,
    add_completion=True,  # flx --install-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help (PanelCommand groups the options), as readable in a pipe as in a terminal
)


bench_app = typer.Typer(
    help="Benchmarks: speed and memory, measured (never asserted in tests).", no_args_is_help=True
)


export_app = typer.Typer(help="Export stored runs to other tools.", no_args_is_help=True)

app.add_typer(bench_app, name="bench")
app.add_typer(export_app, name="export")


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)  # a full disk or quota, anywhere a command writes: one line, exit 2


class FlxError(typer.BadParameter):
    """Bad input or missing data, told in one line; the CLI exits with code 2 and writes nothing.

    A subclass of Typer's usage errors, so Typer (and its test runner) report it with exit code 2 too.
    """

    exit_code = 2

    def format_message(self) -> str:
        return self.message


def user_errors(command):
    """Run a command so that the library's UserErrors (bad value, data, store, report) exit 2 in one line."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            raise FlxError(str(exc)) from None
        except OSError as exc:
            if exc.errno not in FULL_DISK:
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            raise FlxError(
                f"no space left on the device{where}: free some and run the command again (every file flx writes "
                "is swapped in whole, and the runs stored so far are kept)"
            ) from None

    return wrapper


def parse_floats(text: str, option: str, low: float = -math.inf, high: float = math.inf) -> list[float]:
    """'0,0.5,2' -> [0.0, 0.5, 2.0] for options outside the config table (anatomy, bench)."""
    accepted = f"a number in [{low:g}, {high:g}]"
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise FlxError(f"{option} got {text!r}; accepted: a comma-separated list of {accepted}")
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise FlxError(f"{option} got {item!r}; accepted: {accepted}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise FlxError(f"{option} got {item}; accepted: {accepted}")
        values.append(value)
    return values


def make_console():
    """A rich console; in a pipe or CI log it is 120 columns wide instead of rich's 80, so tables do not wrap."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
    plugin: list[str] = typer.Option(
        [],
        "--plugin",
        help="Import this module first: its flx.register_loss/_dataset/_model entries become options "
        "(repeatable; also FLX_PLUGINS=mod1,mod2). Sweep workers import it too.",
    ),
) -> None:
    """Experiment runner for focal loss and friends on imbalanced classification."""
    from flx.experiment.plugins import use_plugins

    use_plugins(plugin)


# What an option takes where its Python type (text, checked later against the constraint table) does not say.
METAVARS = {
    "budget": "INT",
    "seeds": "N|A-B",
    "workers": "INT",
    "families": "NAME,...",
    "gamma": "FLOAT,...",
    "sizes": "INT,...",
    "canvas": "INT,...",
    "threads": "INT,...",
    "fmt": "md|tex|csv",
    "columns": "NAME,...",
    "status": "STATUS,...",
    "where": "FIELD=VALUE",
    "set_": "FIELD=VALUE",
    "plugin": "MODULE",
    "device": "auto|cpu|cuda|cuda:N|mps",
    "executor": "local|ray",
    "ray_address": "HOST:PORT|auto",
    "tracking_uri": "URI",
    "mlflow": "URI",
}
_PATHS = ("out", "data_dir", "to", "index", "readme")


def _metavar(name: str, annotation: str) -> str:
    kind = str(annotation).replace("typing.", "").split(" | ")[0]
    if kind == "bool":
        return ""  # a flag takes no value
    if name in METAVARS:
        return METAVARS[name]
    if name in _PATHS:
        return "PATH"
    return {"int": "INT", "float": "FLOAT"}.get(kind, "TEXT")


class PanelCommand(typer.core.TyperCommand):
    """A command whose plain help lists its options in panels (their ``rich_help_panel``: Data, Model, Loss,
    Training for the config fields), the command's own options and how the runs are spread first."""

    def format_options(self, ctx, formatter) -> None:
        args, panels = [], {"Options": [], "Sweep": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(record)
            else:
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        for title, records in [("Arguments", args), *panels.items()]:
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def typed_help(typer_app: typer.Typer) -> None:
    """Give every option of every command a metavar that says what it takes (INT, PATH, FIELD=VALUE; none for a
    flag) instead of the Python type it is parsed as (text, checked against the constraint table later), and
    its options grouped in panels (:class:`PanelCommand`)."""
    import inspect

    callbacks = [c.callback for c in typer_app.registered_commands]
    if typer_app.registered_callback is not None:
        callbacks.append(typer_app.registered_callback.callback)
    for callback in callbacks:
        for p in inspect.signature(callback).parameters.values():
            if isinstance(p.default, typer.models.OptionInfo) and p.default.metavar is None:
                p.default.metavar = _metavar(p.name, p.annotation)
    for command in typer_app.registered_commands:
        if command.cls is typer.core.TyperCommand:
            command.cls = PanelCommand
    for group in typer_app.registered_groups:
        typed_help(group.typer_instance)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: Click's and flx's errors become one line on stderr with exit code 2."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="flx", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        print("flx: interrupted", file=sys.stderr)
        sys.exit(130)
    except UserError as exc:  # raised outside a command (e.g. by an option callback)
        print(f"flx: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # Typer's usage errors and FlxError: anything that knows how to show itself
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        print(f"flx: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
