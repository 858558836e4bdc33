"""Tables as LaTeX (booktabs) that fit a column of a two-column paper as they are: no ``\\resizebox``, type at
\\footnotesize (8 pt in a 10 pt document).

By default a results table shows its settings (with the paper's short names: FL, α-CE, B, NMS...), the ok runs
and test AP as mean ± std, and the paper's AP where the spec cites it: :data:`DEFAULT_COLUMNS`. Every other
column is opt-in (``flx report --columns``). :func:`width_pt` estimates a table's width from its cells (Computer
Modern's glyph widths, rounded up), and ``flx report`` says when a table chosen with more columns will not fit
(:data:`COLUMN_PT`: the narrowest common column, the ``article`` class's two-column layout). The claims are a
``table*`` of their own (``claims.tex``) across both columns.
"""

from __future__ import annotations

import re

from flx.results.summary import MERGED

LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip

LATEX_UNICODE = {
    "±": r"$\pm$", "–": "--", "—": "---", "−": "-", "≥": r"$\geq$", "≤": r"$\leq$", "≈": r"$\approx$",
    "×": r"$\times$", "→": r"$\rightarrow$", "α": r"$\alpha$", "γ": r"$\gamma$", "ε": r"$\varepsilon$",
    "π": r"$\pi$", "·": r"$\cdot$",
}  # fmt: skip

# Column names and loss names as the paper writes them (escaped LaTeX)
LATEX_NAMES = {
    "alpha": r"$\alpha$", "gamma": r"$\gamma$", "epsilon": r"$\varepsilon$", "ohem_k": "B", "ohem_nms": "NMS",
    "ohem_ratio": "neg:pos", "anchor_scales": "scales", "anchor_ratios": "ratios", "image_size": "px",
    "head_norm": "head", "loss_norm": "norm", "paper AP": "paper", "data_fingerprint": "data", "backbone": "features",
}  # fmt: skip
LOSS_NAMES = {
    "ce": "CE", "balanced_ce": r"$\alpha$-CE", "focal": "FL", "ohem": "OHEM", "poly1": "Poly-1",
    "poly1_focal": "Poly-1 FL", "focal_detached": "FL (detached)",
}  # fmt: skip

DEFAULT_COLUMNS = ("ap",)  # the metrics a LaTeX table shows unless --columns says otherwise
EXTRA_COLUMNS = ("diverged", "max_grad_norm", "rebound")  # opt-in beside the metrics
FONT_PT = 8.0  # \footnotesize in a 10 pt document
TABCOLSEP_PT = 3.0
COLUMN_PT = 229.5  # \columnwidth of article's two-column layout (10 pt, US letter): the narrowest common one
# Computer Modern's advance widths in em (rounded up): digits and most lower case 0.5, upper case 0.75, bold 0.575
EM = {"digit": 0.5, "lower": 0.5, "upper": 0.75, "space": 0.34, "other": 0.4, "pm": 0.78}


def latex_text(text: str) -> str:
    """Plain text as LaTeX that pdflatex takes: special characters escaped, ± and – as LaTeX."""
    return "".join(LATEX_SPECIAL.get(ch, LATEX_UNICODE.get(ch, ch)) for ch in str(text))


def text_width_pt(text: str, bold: bool = False) -> float:
    """The printed width of plain ``text`` at :data:`FONT_PT` (an estimate from :data:`EM`, never below it)."""
    em = 0.0
    for ch in str(text):
        if ch == "±":
            em += EM["pm"]
        elif ch.isdigit():
            em += 0.575 if bold else EM["digit"]
        elif ch.isupper():
            em += EM["upper"]
        elif ch.isalpha():
            em += 0.56 if bold else EM["lower"]
        elif ch == " ":
            em += EM["space"]
        else:
            em += EM["other"]
    return em * FONT_PT


def width_pt(header: list[str], rows: list[list[str]], bold: list[list[bool]] | None = None) -> float:
    """A tabular's estimated width: each column's widest cell plus the column separation on both sides."""
    widths = [text_width_pt(h) for h in header]
    for i, row in enumerate(rows):
        for j, c in enumerate(row):
            widths[j] = max(widths[j], text_width_pt(c, bool(bold and bold[i][j])))
    return sum(widths) + 2 * TABCOLSEP_PT * len(widths)


def latex_cells(table, columns: list[str] | None = None):
    """(header, rows, bold) of the LaTeX table: the settings (loss names as the paper's), ``n`` (diverged runs
    written in it unless the ``diverged`` column is asked for), the chosen metrics (default
    :data:`DEFAULT_COLUMNS`), the run maxima asked for, the paper's AP."""
    from flx.report.tables import table_cells
    from flx.results.summary import RUN_MAXIMA

    columns = list(DEFAULT_COLUMNS) if columns is None else columns
    header, rows, bold = table_cells(table, [c for c in columns if c not in EXTRA_COLUMNS])
    maxima = {RUN_MAXIMA[m] for m in RUN_MAXIMA if m not in columns}
    drop = {j for j, h in enumerate(header) if h in maxima or (h == "diverged" and "diverged" not in columns)}
    n, diverged, loss = (
        header.index("n"),
        header.index("diverged"),
        header.index("loss") if "loss" in header else -1,
    )
    fingerprint = header.index("data_fingerprint") if "data_fingerprint" in header else -1
    out_rows, out_bold = [], []
    for row, marks in zip(*_unmerged(rows, bold), strict=True):
        out_bold.append(marks)
        row = [compact(c) for c in row]
        if "diverged" not in columns and row[diverged] not in ("0", "–", ""):
            row[n] += f" ({row[diverged]} diverged)"
        if fingerprint >= 0:  # runs on other data files: told apart by the fingerprint's first 8 hex digits
            row[fingerprint] = row[fingerprint].split(":")[-1][:8]
        out_rows.append(row)
    keep = [j for j in range(len(header)) if j not in drop]
    pick = lambda row: [row[j] for j in keep]  # noqa: E731
    return pick(header), [pick(r) for r in out_rows], [pick(b) for b in out_bold], keep.index(n), loss


def _unmerged(rows: list[list[str]], bold: list[list[bool]]) -> tuple[list, list]:
    """A row that stands for several identical settings ('128 / 256 / 512', paper AP '31.1 / 28.3 / 24') as one
    line per setting, as a column of print holds it: the first with the results, the others with only what
    differs (the results are the same runs)."""
    out_rows, out_bold = [], []
    for row, marks in zip(rows, bold, strict=True):
        parts = [c.split(MERGED) for c in row]
        lines = max(len(p) for p in parts)
        for k in range(lines):
            out_rows.append([p[k] if len(p) == lines else (p[0] if k == 0 else "") for p in parts])
            out_bold.append(marks if k == 0 else [False] * len(marks))
    return out_rows, out_bold


def compact(cell: str) -> str:
    """'0.702 ± 0.010' -> '0.702±.010': a mean ± std as papers print it in a narrow column."""
    return re.sub(r" ± 0\.", "±.", cell).replace(" ± ", "±")


def render_latex(table, spec, columns: list[str] | None = None, wide: bool = False) -> str:
    """The table as a booktabs LaTeX table at \\footnotesize, no scaling: :func:`latex_cells`, names escaped
    (the paper's short names), settings left-aligned and numbers right-aligned; a caption that says what the
    table holds, the label ``tab:NAME``, and the description and notes below it; a ``table*`` across both columns
    when asked (``wide``) or when it would not fit one (:func:`table_fits`). Needs ``\\usepackage{booktabs}``."""
    from flx.report.tables import table_notes

    header, rows, bold, n, loss = latex_cells(table, columns)
    fits = _printed_width(header, rows, bold, n, loss) <= COLUMN_PT
    cells = [
        [
            _bold(LOSS_NAMES.get(c, latex_text(c)) if j == loss else latex_text(c), bold[i][j])
            for j, c in enumerate(row)
        ]
        for i, row in enumerate(rows)
    ]
    names = [LATEX_NAMES.get(h, latex_text(h)) for h in header]
    spec_line = "l" * n + "r" * (len(header) - n)
    body = "\n".join(" & ".join(r) + r" \\" for r in cells)
    tabular = (
        f"\\begin{{tabular}}{{{spec_line}}}\n\\toprule\n{' & '.join(names)} \\\\\n\\midrule\n{body}\n"
        "\\bottomrule\n\\end{tabular}\n"
    )
    note = (f"{spec.description}. " if spec.description else "") + table_notes(table, spec)
    note = note.replace("paper AP: ", "paper: the paper's AP, ")  # the column's short name
    env = "table*" if wide or not fits else "table"
    label = "".join(ch if ch.isalnum() else "-" for ch in spec.name)
    return (
        f"\\begin{{{env}}}[t]\n\\centering\n\\footnotesize\n\\setlength{{\\tabcolsep}}{{{TABCOLSEP_PT:g}pt}}\n"
        f"\\caption{{{latex_text(caption(spec, header))}}}\n\\label{{tab:{label}}}\n{tabular}"
        f"\\par\\smallskip\\parbox{{\\linewidth}}{{\\scriptsize {latex_text(note)}}}\n\\end{{{env}}}\n"
    )


def _bold(text: str, bold: bool) -> str:
    return f"\\textbf{{{text}}}" if bold else text


def caption(spec, header: list[str]) -> str:
    """What the table is: 'Table 1d: test AP (mean ± std over seeds) per setting, beside the paper's AP'."""
    from flx.experiment.metrics import METRICS

    title, _, rest = (spec.description or "").partition(": ")
    short = title if rest and len(title) <= 40 else spec.name
    shown = [h for h in header if h in {m.label for m in METRICS.values()}]
    what = ", ".join(shown) or "the runs"
    paper = ", beside the paper's AP" if "paper AP" in header else ""
    return f"{short}: {what} (mean ± std over seeds) per setting{paper}"


def table_fits(table, columns: list[str] | None = None) -> float:
    """The estimated width (pt) of the table's LaTeX tabular (compare with :data:`COLUMN_PT`)."""
    return _printed_width(*latex_cells(table, columns))


def _printed_width(header, rows, bold, n, loss) -> float:
    """:func:`width_pt` of :func:`latex_cells`' cells as they print (the paper's names, symbols as one glyph)."""
    shown = [[LOSS_TEXT.get(c, c) if j == loss else c for j, c in enumerate(r)] for r in rows]
    return width_pt([LATEX_TEXT.get(h, h) for h in header], shown, bold)


LOSS_TEXT = {k: v.replace(r"$\alpha$", "α") for k, v in LOSS_NAMES.items()}
LATEX_TEXT = {
    "alpha": "α",
    "gamma": "γ",
    "epsilon": "ε",
    **{k: v for k, v in LATEX_NAMES.items() if "$" not in v},
}


def render_claims_latex(verdicts, spec) -> str:
    """The claims as a ``table*`` (booktabs): claim, a, b, paired seeds, failed, mean a − b [95% CI], signed-rank
    p, verdict."""
    rows = []
    for v in verdicts:
        diff = f"{v.mean:+.3f} [{v.low:+.3f}, {v.high:+.3f}]" if v.low == v.low else "–"
        name = v.name + (f" (within ±{v.margin:g})" if v.margin is not None else "")
        cells = [name, v.a, v.b, f"{v.n}", f"{v.failed[0]} / {v.failed[1]}", diff]
        cells += [f"{v.p:.2g}" if v.p == v.p else "–", v.verdict]
        rows.append(" & ".join(latex_text(c) for c in cells) + r" \\")
    header = "claim & a & b & seeds & failed & mean a $-$ b [95\\% CI] & p & verdict"
    label = "".join(ch if ch.isalnum() else "-" for ch in spec.name)
    return (
        "\\begin{table*}[t]\n\\centering\n\\footnotesize\n\\setlength{\\tabcolsep}{4pt}\n"
        f"\\caption{{{latex_text(spec.name)}: the claims declared before the runs, judged on paired seeds}}\n"
        f"\\label{{tab:{label}-claims}}\n"
        "\\begin{tabular}{p{0.25\\textwidth}p{0.17\\textwidth}p{0.17\\textwidth}rrlrl}\n\\toprule\n"
        f"{header} \\\\\n\\midrule\n" + "\n".join(rows) + "\n\\bottomrule\n\\end{tabular}\n"
        "\\par\\smallskip\\parbox{\\textwidth}{\\scriptsize Replicated: the 95\\% t interval of the paired "
        "difference (a $-$ b, test AP; corrected for resampling where the claim says so) lies above 0; "
        "contradicted: below 0; inconclusive: it contains 0. p: Wilcoxon signed-rank, two-sided. A failed run "
        "scores what its claim declares (AP 0 unless it says otherwise).}\n\\end{table*}\n"
    )
