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


def render_latex(table, spec: ReportSpec) -> str:
    """The table as a booktabs LaTeX table (pandas' Styler): the cells of :func:`table_cells` ("mean ± std",
    the best of each metric in bold), names escaped, settings left-aligned and numbers right-aligned, a caption
    from the spec (its name, description and :func:`table_notes`) and the label ``tab:NAME``. Needs
    ``\\usepackage{booktabs}``."""
    import pandas as pd

    header, rows, bold = table_cells(table)
    frame = pd.DataFrame([[latex_text(c) for c in r] for r in rows], columns=range(len(header)))
    styles = pd.DataFrame([["textbf:--rwrap;" if b else "" for b in m] for m in bold], columns=frame.columns)
    n_settings = header.index("n")
    styler = frame.style.hide(axis="index").apply(lambda _: styles, axis=None)
    styler = styler.format_index(lambda i: LATEX_NAMES.get(header[i], latex_text(header[i])), axis=1)
    caption = f"{spec.name}" + (f": {spec.description}." if spec.description else ".")
    return styler.to_latex(
        environment="table",
        position="t",
        position_float="centering",
        hrules=True,
        column_format="l" * n_settings + "r" * (len(header) - n_settings),
        caption=latex_text(f"{caption} {table_notes(table, spec)}"),
        label=f"tab:{''.join(ch if ch.isalnum() else '-' for ch in spec.name)}",
    )


FORMATS = ("md", "csv", "tex")


def parse_formats(text: str) -> list[str]:
    """'md,csv' -> ['md', 'csv']; ReportError naming what is accepted otherwise."""
    formats = [f.strip() for f in text.split(",")]
    if not text.strip() or any(f not in FORMATS for f in formats):
        raise ReportError(f"--format got {text!r}; accepted: a comma-separated list of {', '.join(FORMATS)}")
    return formats
