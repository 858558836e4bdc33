"""A results folder's report: runs.csv, the table in each format, findings, verdicts and figures."""

from __future__ import annotations

from pathlib import Path

from flx.errors import ReportError
from flx.report.render import render_markdown
from flx.report.tables import build_table, load_runs, read_spec, with_missing, write_file


def write_report(
    results_dir: Path,
    formats=("md", "csv"),
    plots: bool = True,
    to: Path | None = None,
    on_note=None,
    allow_mixed: bool = False,
    latex: dict | None = None,
) -> dict:
    """Write runs.csv, table.csv / table.md (/ table.tex) and the spec's figures (without a spec: those
    :func:`flx.report.figures.chosen_figures` picks from what varies) into ``to`` (default: the
    results directory). Reads only from ``results_dir`` (records and the runs' stored artefacts: never the
    data), so it works on a read-only store. A figure whose runs have no stored artefacts is left out and
    ``on_note(text)`` says so. Runs of several code versions are refused (ReportError) unless ``allow_mixed``,
    and then the table says so. ``latex``: :func:`flx.report.render.render_latex`'s options (columns, wide)."""
    from flx.results.records import code_versions

    results_dir = Path(results_dir)
    to = Path(to or results_dir)
    spec = read_spec(results_dir)
    df = load_runs(results_dir, to, check=None if allow_mixed else _one_version)
    versions = code_versions(df)
    if len(versions) > 1 and on_note is not None:
        on_note(f"{results_dir}: runs of {len(versions)} code versions in one table (--allow-mixed)")
    table = build_table(df, spec)
    written = {}
    if "csv" in formats:
        written["csv"] = write_file(to / "table.csv", lambda p: table.to_csv(p, index=False))
    if "md" in formats:
        written["md"] = write_file(to / "table.md", lambda p: p.write_text(render_markdown(table, spec)))
    if "tex" in formats:
        written.update(_write_latex(table, spec, to, latex or {}, on_note))
    if plots and spec.figures != []:
        from flx.report import figures as P
        from flx.results.store import Store

        runs = with_missing(df, spec.planned)
        store = Store(results_dir) if Store(results_dir).exists() else None
        names = spec.figures if spec.figures is not None else P.chosen_figures(runs, store)
        for name in names:
            try:
                path = P.FIGURES[name](runs, to, spec, store)
            except P.MissingArtefacts as exc:
                if on_note is not None:
                    on_note(f"figure {name} left out: {exc}")
                continue
            if path is not None:
                written[name] = path
    return written


def _write_latex(table, spec, to: Path, latex: dict, on_note) -> dict:
    """table.tex (and claims.tex where the spec declares claims); a note when the columns asked for make the
    table wider than a column of a two-column page."""
    from flx.report.latex import COLUMN_PT, render_claims_latex, render_latex, table_fits

    written = {
        "tex": write_file(to / "table.tex", lambda p: p.write_text(render_latex(table, spec, **latex)))
    }
    width = table_fits(table, latex.get("columns"))
    if width > COLUMN_PT and not latex.get("wide") and on_note is not None:
        on_note(
            f"{written['tex']}: about {width:.0f} pt wide, more than a column ({COLUMN_PT:g} pt), so it is a "
            "table* across both columns; fewer --columns would make it one column's"
        )
    verdicts = table.attrs.get("verdicts")
    if spec.claims and verdicts:
        written["claims"] = write_file(
            to / "claims.tex", lambda p: p.write_text(render_claims_latex(verdicts, spec))
        )
    return written


def report(
    results_dirs: list,
    formats: str = "md,csv",
    plots: bool = True,
    to: str | Path | None = None,
    index: str | Path | None = None,
    readme: str | Path | None = None,
    on_event=lambda kind, **fields: None,
    allow_mixed: bool = False,
    columns: str | None = None,
    wide: bool = False,
) -> None:
    """``flx report``: :func:`write_report` for each results folder (default: ``FLX_OUT`` / ./runs), then the
    index of their tables and the README's results block when asked. Events: "note" (text), "written" (folder,
    paths), "index" (path), "readme" (path)."""
    from flx.report.render import parse_columns, parse_formats

    chosen = parse_formats(formats)  # before the heavier imports: a bad value is refused at once
    latex = {"columns": parse_columns(columns), "wide": wide}
    from flx.report.index import is_map, write_index, write_readme
    from flx.results.store import default_out

    dirs = [Path(d) for d in (results_dirs or [default_out()])]
    if to and len(dirs) > 1:
        raise ReportError(f"--to takes the report of one results folder; {len(dirs)} were given")
    for d in dirs:
        if is_map(d):  # flx compare wrote it and its cells' pages; nothing to report, only to index
            on_event(
                "note", text=f"{d}: a map of flx compare cells (map.md), indexed as flx compare wrote it"
            )
            continue
        notes: list[str] = []
        written = write_report(d, chosen, plots, Path(to) if to else None, notes.append, allow_mixed, latex)
        for note in notes:
            on_event("note", text=note)
        on_event("written", folder=d, paths=list(written.values()))
    if index:
        on_event("index", path=write_index(Path(index), dirs))
    if readme:
        on_event("readme", path=write_readme(Path(readme), dirs))


def _one_version(results_dir: Path, df) -> None:
    """ReportError when the runs of a results folder ran more than one code version."""
    from flx.results.records import code_versions

    versions = code_versions(df)
    if len(versions) > 1:
        listed = ", ".join(f"{v} ({n} runs)" for v, n in versions.items())
        raise ReportError(
            f"{results_dir}: its runs ran {len(versions)} code versions ({listed}); one table needs one version: "
            "re-run them with one (a new --out), or pass --allow-mixed to report them anyway"
        )
