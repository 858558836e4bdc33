"""A table rendered as markdown (LaTeX: :mod:`flx.report.latex`, from the same cells), and the report's
options parsed."""

from __future__ import annotations

from flx.errors import ReportError
from flx.report.tables import ReportSpec, table_cells, table_notes


def render_markdown(table, spec: ReportSpec) -> str:
    """The table as markdown: mean ± std per metric, the best value of each metric in bold, counts, paper AP."""
    header, rows, bold = table_cells(table)
    rows = [
        [f"**{c}**" if b else c for c, b in zip(r, m, strict=True)] for r, m in zip(rows, bold, strict=True)
    ]
    lines = [f"## {spec.name}"]
    if spec.description:
        lines += ["", spec.description + "."]
    lines += ["", _markdown_table(header, rows), "", table_notes(table, spec)]
    if spec.claims and "verdicts" in table.attrs:
        from flx.report.claims import render

        lines += ["", render(table.attrs["verdicts"]).rstrip()]
    return "\n".join(lines) + "\n"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)


FORMATS = ("md", "csv", "tex")
FORMAT_ALIASES = {"latex": "tex", "markdown": "md"}


def parse_columns(text: str | None) -> list[str] | None:
    """'ap,val_ap' -> the columns a LaTeX table shows (None: :data:`flx.report.latex.DEFAULT_COLUMNS`; "all":
    every metric and count); ReportError naming what is accepted."""
    from flx.experiment.metrics import TABLE_METRICS
    from flx.report.latex import EXTRA_COLUMNS

    if text is None:
        return None
    accepted = (*TABLE_METRICS, *EXTRA_COLUMNS)
    if text.strip() == "all":
        return list(accepted)
    columns = [c.strip() for c in text.split(",")]
    if not text.strip() or any(c not in accepted for c in columns):
        raise ReportError(
            f"--columns got {text!r}; accepted: all, or a comma-separated list of {', '.join(accepted)}"
        )
    return columns


def parse_formats(text: str) -> list[str]:
    """'md,csv' -> ['md', 'csv']; ReportError naming what is accepted otherwise."""
    formats = [FORMAT_ALIASES.get(f.strip(), f.strip()) for f in text.split(",")]
    if not text.strip() or any(f not in FORMATS for f in formats):
        raise ReportError(
            f"--format got {text!r}; accepted: a comma-separated list of {', '.join(FORMATS)} (latex: tex)"
        )
    return list(dict.fromkeys(formats))
