"""The CLI reference page of the docs (``docs/cli.md``), generated from the Typer app: every command's
``--help`` as the command line prints it, at a fixed width. ``python -m flx.cli.reference docs/cli.md`` writes
it (``make docs`` does, before building the site); a test checks that the committed page is current."""

from __future__ import annotations

import sys

import click
import typer

WIDTH = 100
HEADER = """# CLI reference

Every command's `--help`, generated from the command line itself (`python -m flx.cli.reference docs/cli.md`,
run by `make docs`; do not edit by hand). Values are checked before torch is imported: a bad one is one line
naming it and what is accepted, with exit code 2.
"""


def _commands(command: click.Command, path: list[str]):
    yield path, command
    if hasattr(command, "list_commands"):  # a group (Typer's is not a click.Group subclass)
        for name in command.list_commands(click.Context(command)):
            yield from _commands(command.get_command(click.Context(command), name), [*path, name])


def render_reference() -> str:
    """The page: one section per command (groups first, then their commands), each its help text."""
    from flx.cli import app

    root = typer.main.get_command(app)
    parts = [HEADER]
    for path, command in _commands(root, ["flx"]):
        parent = None
        for name in path:  # a context chain, so usage lines read "flx sweep [OPTIONS] ..."
            parent = click.Context(command if name == path[-1] else root, info_name=name, parent=parent,
                                   terminal_width=WIDTH, max_content_width=WIDTH)  # fmt: skip
        parts.append(f"## `{' '.join(path)}`\n\n```text\n{command.get_help(parent).rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    text = render_reference()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    else:
        print(text, end="")
