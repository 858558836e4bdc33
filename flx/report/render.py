"""A table rendered as markdown or LaTeX (booktabs, from the same cells)."""

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


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


LATEX_UNICODE = {
    "±": r"$\pm$", "–": "--", "—": "---", "−": "-", "≥": r"$\geq$", "≤": r"$\leq$", "≈": r"$\approx$",
    "×": r"$\times$", "→": r"$\rightarrow$", "α": r"$\alpha$", "γ": r"$\gamma$", "ε": r"$\varepsilon$",
    "π": r"$\pi$", "·": r"$\cdot$",
}  # fmt: skip


LATEX_NAMES = {"alpha": r"$\alpha$", "gamma": r"$\gamma$", "epsilon": r"$\varepsilon$"}


def latex_text(text: str) -> str:
    """Plain text as LaTeX that pdflatex takes: special characters escaped, ± and – as LaTeX."""
    return "".join(LATEX_SPECIAL.get(ch, LATEX_UNICODE.get(ch, ch)) for ch in str(text))


def render_latex(table, spec: ReportSpec, columns: list[str] | None = None, wide: bool = False) -> str:
    """The table as a booktabs LaTeX table (pandas' Styler): the cells of :func:`table_cells` ("mean ± std",
    the best of each metric in bold; ``columns``: only these metrics), names escaped, settings left-aligned and
    numbers right-aligned; a short caption (the description's title, e.g. "Table 1a", or the name) with the
    label ``tab:NAME``, the tabular scaled to the column's width (``wide``: a ``table*`` across both columns
    of a two-column page), and the description and :func:`table_notes` in a note below it. Needs
    ``\\usepackage{booktabs,graphicx}``."""
    import pandas as pd

    header, rows, bold = table_cells(table, columns)
    frame = pd.DataFrame([[latex_text(c) for c in r] for r in rows], columns=range(len(header)))
    styles = pd.DataFrame([["textbf:--rwrap;" if b else "" for b in m] for m in bold], columns=frame.columns)
    n_settings = header.index("n")
    styler = frame.style.hide(axis="index").apply(lambda _: styles, axis=None)
    styler = styler.format_index(lambda i: LATEX_NAMES.get(header[i], latex_text(header[i])), axis=1)
    tabular = styler.to_latex(hrules=True, column_format="l" * n_settings + "r" * (len(header) - n_settings))
    title, _, rest = (spec.description or "").partition(": ")
    short = title if rest and len(title) <= 40 else spec.name
    note = (f"{spec.description}. " if spec.description else "") + table_notes(table, spec)
    env, width = ("table*", r"\textwidth") if wide else ("table", r"\linewidth")
    label = "".join(ch if ch.isalnum() else "-" for ch in spec.name)
    return (
        f"\\begin{{{env}}}[t]\n\\centering\n\\caption{{{latex_text(short)}}}\n\\label{{tab:{label}}}\n"
        f"\\resizebox{{{width}}}{{!}}{{%\n{tabular}}}\n"
        f"\\par\\smallskip\\parbox{{{width}}}{{\\footnotesize {latex_text(note)}}}\n\\end{{{env}}}\n"
    )


FORMATS = ("md", "csv", "tex")


def parse_columns(text: str | None) -> list[str] | None:
    """'ap,val_ap' -> the metrics a LaTeX table shows (None: all); ReportError naming what is accepted."""
    from flx.experiment.metrics import TABLE_METRICS

    if text is None:
        return None
    columns = [c.strip() for c in text.split(",")]
    if not text.strip() or any(c not in TABLE_METRICS for c in columns):
        raise ReportError(
            f"--columns got {text!r}; accepted: a comma-separated list of {', '.join(TABLE_METRICS)}"
        )
    return columns


def parse_formats(text: str) -> list[str]:
    """'md,csv' -> ['md', 'csv']; ReportError naming what is accepted otherwise."""
    formats = [f.strip() for f in text.split(",")]
    if not text.strip() or any(f not in FORMATS for f in formats):
        raise ReportError(f"--format got {text!r}; accepted: a comma-separated list of {', '.join(FORMATS)}")
    return formats
