"""``flx report``, ``flx runs``, ``flx export mlflow`` and ``flx migrate``: commands over stored runs."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.core import TyperGroup

from flx.cli.app import FlxError, app, export_app, make_console, user_errors
from flx.cli.options import DataDirOpt, OutOpt
from flx.cli.views import print_counts, print_run, print_runs, report_printer


@app.command()
@user_errors
def report(
    results_dirs: list[str] | None = typer.Argument(None, help="Results folders. (default: --out / ./runs)"),
    fmt: str = typer.Option(
        "md,csv", "--format", show_default=False, help="Comma-separated: md, csv, tex. (default: md,csv)"
    ),
    plots: bool = typer.Option(
        True,
        show_default=False,
        help="Write the figures the spec asks for (from stored runs and their artefacts). (default: on)",
    ),
    to: str | None = typer.Option(
        None, "--to", help="Write the report here instead of into each results folder (one folder only)."
    ),
    index: str | None = typer.Option(
        None,
        help="Also write an index of all the tables here (results/README.md); a folder of flx compare cells is "
        "indexed from its map.md.",
    ),
    readme: str | None = typer.Option(None, help="Also splice the tables into this README's results block."),
    columns: str | None = typer.Option(
        None, help="LaTeX: the metric columns to show, comma-separated (e.g. ap,ap50,val_ap). (default: all)"
    ),
    wide: bool = typer.Option(
        False, "--latex-wide", help="LaTeX: a table* spanning both columns of a two-column page."
    ),
    allow_mixed: bool = typer.Option(
        False,
        "--allow-mixed",
        help="Report a folder whose runs ran different code versions (commit or uncommitted changes); the "
        "table says so. Without it such a folder is refused.",
    ),
    out: str | None = OutOpt,
) -> None:
    """Tables (mean ± std over seeds, best in bold, paper AP beside) and figures from stored runs. Only reads
    the results folders (a read-only store is fine); writes runs.csv, table.* and figures (there, or --to)."""
    from flx.report.write import report as write

    console = make_console()
    with console.status("report..."):
        write(
            results_dirs or ([out] if out else []),
            fmt,
            plots,
            to,
            index,
            readme,
            report_printer(console),
            allow_mixed,
            columns,
            wide,
        )


class _ListByDefault(TyperGroup):
    """``flx runs [DIR]`` lists (the ``list`` subcommand); ``flx runs show KEY [DIR]`` shows one run."""

    def parse_args(self, ctx, args):
        if not (args and (args[0] in self.commands or args[0] in ("--help", "-h"))):
            args = ["list", *args]
        return super().parse_args(ctx, args)


runs_app = typer.Typer(
    cls=_ListByDefault,
    help="List stored runs (flx runs [DIR], filtered by --where and --status) or show one (flx runs show KEY "
    "[DIR]: its config, metrics, learning curves, data and provenance). Only reads the store.",
)
app.add_typer(runs_app, name="runs")
JsonOpt = typer.Option(False, "--json", help="Print the records as JSON instead of a table.")
CsvOpt = typer.Option(False, "--csv", help="Print the runs as CSV instead of a table.")


def output_format(as_json: bool, as_csv: bool) -> str:
    """--json / --csv / neither as "json", "csv" or "table"; giving both is an error."""
    if as_json and as_csv:
        raise FlxError("--json and --csv: give one of them")
    return "json" if as_json else "csv" if as_csv else "table"


@runs_app.command("list")
@user_errors
def runs_list(
    folder: str | None = typer.Argument(None, help="Results folder. (default: --out / ./runs)"),
    where: list[str] = typer.Option(
        [], "--where", help="Keep runs with FIELD=VALUE (=a,b: any of; also !=, >=, <=, >, <). Repeatable."
    ),
    status: str | None = typer.Option(
        None, help="Keep runs with these statuses: ok, diverged, collapsed, failed."
    ),
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
    out: str | None = OutOpt,
) -> None:
    """List stored runs, filtered by --where and --status (the default of flx runs)."""
    from flx.results.browse import list_runs

    fmt = output_format(as_json, as_csv)
    store, df = list_runs(folder or out, where, status)
    print_runs(make_console(), store, df, fmt)


@runs_app.command("restore")
@user_errors
def runs_restore(
    folder: str = typer.Argument(..., help="Results folder holding a committed runs.csv and no runs.sqlite."),
) -> None:
    """Rebuild a results folder's store from its runs.csv (records, no artefacts), so that a sweep or a comparison
    resumes there (a fresh clone of committed results) instead of training its runs again."""
    from flx.results.browse import restore_store

    n = restore_store(folder)
    make_console().print(f"{folder}: {n} runs restored into runs.sqlite", highlight=False)


@runs_app.command("show")
@user_errors
def runs_show(
    key: str = typer.Argument(..., help="A run key, or a unique prefix of one."),
    folder: str | None = typer.Argument(None, help="Results folder. (default: --out / ./runs)"),
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
    out: str | None = OutOpt,
) -> None:
    """Show one run: its config, metrics, learning curves, data, provenance and artefacts."""
    from flx.results.browse import show_run

    fmt = output_format(as_json, as_csv)
    record, parts = show_run(folder or out, key)
    print_run(make_console(), record, parts, fmt)


@export_app.command("mlflow")
@user_errors
def export_mlflow(
    results_dir: str | None = typer.Argument(None, help="Results folder. (default: --out / ./runs)"),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking store, e.g. sqlite:///mlflow.db or http://host:5000. (default: MLflow's)",
    ),
    experiment: str | None = typer.Option(
        None, "--experiment", help="MLflow experiment name. (default: the results folder's name)"
    ),
    out: str | None = OutOpt,
) -> None:
    """Log every stored run as an MLflow run: config as params, metrics and learning curves, key, status and
    provenance as tags, stored scores as artefacts. Runs exported before (same flx key) are skipped."""
    from flx.results.export import export_mlflow as export

    folder = results_dir or out or "runs"  # FLX_OUT arrives through --out
    console = make_console()
    with console.status(f"exporting {folder} to MLflow..."):
        counts = export(folder, tracking_uri, experiment)
    console.print(
        f"{folder}: {counts['logged']} runs logged, {counts['replaced']} replaced (status changed), "
        f"{counts['skipped']} already in MLflow",
        soft_wrap=True,
        highlight=False,
    )


@app.command()
@user_errors
def migrate(
    results_dirs: list[str] = typer.Argument(
        ..., help="Results folders whose runs.sqlite / runs.csv to migrate."
    ),
    data_dir: str | None = DataDirOpt,
) -> None:
    """Re-key runs stored by flx < 0.2 by config and data fingerprint, once (records of image data get the
    fingerprint of the files in --data-dir: the old records did not say which files they used)."""
    from flx.sweep.migrate import migrate as migrate_dirs

    print_counts(make_console(), migrate_dirs([Path(d) for d in results_dirs], data_dir), "records")
