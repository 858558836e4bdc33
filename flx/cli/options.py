"""Options of ``flx run`` and ``flx sweep``, generated from the constraint table (:data:`flx.experiment.params.PARAMS`)
and the registries, and checked there before torch is imported.
"""

from __future__ import annotations

import functools

import typer

from flx.cli.app import METAVARS
from flx.experiment.config import default_in_words
from flx.experiment.params import DATA_PARAMS, LOSS_PARAMS, PARAMS, RUN_PARAMS, check, parse_list

# The help panels of ``flx run`` / ``flx sweep``: every config field in one of them, the rest under "Sweep".
PANELS = {
    "Data": ("dataset", *DATA_PARAMS, "data_seed"),
    "Model": ("model", "n_images", "prior", "hidden", "anchor_scales", "anchor_ratios", "head_norm"),
    "Loss": ("loss", *LOSS_PARAMS, "loss_norm"),
    "Training": tuple(
        n for n in (*RUN_PARAMS, "seed") if n not in ("hidden", "anchor_scales", "anchor_ratios")
    ),
}


def panel(name: str) -> str:
    return next((title for title, names in PANELS.items() if name in names), "Sweep")


def metavar(name: str, many: bool = False) -> str:
    """What an option takes, by its type in the constraint table: FLOAT, INT, PATH, a choice (``adam|sgd``) or
    TEXT; a sweep's lists read ``FLOAT,...``."""
    p = PARAMS[name]
    if name in ("seeds", "device"):  # what the table's type does not say: N or A-B, a device's forms
        return METAVARS[name]
    if p.path:
        word = "PATH"
    elif p.choices is not None and len(p.choices()) <= 4:
        word = "|".join(map(str, p.choices()))
    elif p.kind is str:
        word = "NAME" if p.choices is not None else "TEXT"
    else:
        word = "INT" if p.kind is int else "FLOAT"
    return f"{word},..." if many else word


def param_option(name: str, many: bool = False, default: str | None = None):
    """A Typer option for a constraint-table entry: its type, its help, what it accepts, its default in words,
    and its help panel."""
    p = PARAMS[name]
    what = f"Comma-separated: {p.accepted()}." if many else f"{p.accepted()[0].upper()}{p.accepted()[1:]}."
    default = default or default_in_words(name)
    note = f" (default: {default})" if default else ""
    return typer.Option(
        None,
        p.option,
        help=f"{p.help} {what}{note}",
        show_default=False,
        metavar=metavar(name, many),
        rich_help_panel=panel(name),
    )


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
