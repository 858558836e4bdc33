"""Options of ``flx run`` and ``flx sweep``, generated from the constraint table (:data:`flx.experiment.params.PARAMS`)
and the registries, and checked there before torch is imported.
"""

from __future__ import annotations

import functools

import typer

from flx.experiment.config import default_in_words
from flx.experiment.params import PARAMS, check, parse_list


def param_option(name: str, many: bool = False, default: str | None = None):
    """A Typer option for a constraint-table entry: its help, what it accepts, and its default in words."""
    p = PARAMS[name]
    what = f"Comma-separated: {p.accepted()}." if many else f"{p.accepted()[0].upper()}{p.accepted()[1:]}."
    default = default or default_in_words(name)
    note = f" (default: {default})" if default else ""
    return typer.Option(None, p.option, help=f"{p.help} {what}{note}", show_default=False)


def config_options(many: bool):
    """Give a command one option per config field (:data:`flx.experiment.params.PARAMS` order; ``--seed`` only where
    ``many`` is False: a sweep has ``--seeds``). The command receives those given as ``fields``
    ({name: text}); values are checked by :func:`parse_fields`."""
    import inspect

    from flx.experiment.config import CONFIG_FIELDS

    names = [n for n in PARAMS if n in CONFIG_FIELDS and (n != "seed" or not many)]

    def decorate(command):
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "fields"]
        first = [
            p
            for p in own
            if p.default is inspect.Parameter.empty or isinstance(p.default, typer.models.ArgumentInfo)
        ]
        added = [
            inspect.Parameter(
                n, inspect.Parameter.KEYWORD_ONLY, default=param_option(n, many), annotation=str | None
            )
            for n in names
        ]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p not in first]

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            given = {n: kwargs.pop(n, None) for n in names}
            return command(*args, fields={n: v for n, v in given.items() if v is not None}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*first, *added, *rest])
        return wrapper

    return decorate


DataDirOpt = typer.Option(
    None, "--data-dir", envvar="FLX_DATA_DIR", help="Folder with real data (catsdogs, cifar_catsdogs)."
)


OutOpt = typer.Option(None, "--out", envvar="FLX_OUT", help="Results folder. (default: ./runs)")


def parse_fields(fields: dict, many: bool) -> dict:
    """Config overrides from the options given: lists parsed item by item (``many``) or single values, each
    checked against the constraint table, so a bad value is refused here, before torch is imported."""
    if many:
        return {name: parse_list(name, text) for name, text in fields.items()}
    return {name: check(name, text, PARAMS[name].option) for name, text in fields.items()}
