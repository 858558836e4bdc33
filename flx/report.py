"""Tables and figures from stored runs, laid out like the focal-loss paper's Table 1.

``flx report DIR`` reads DIR's store (``runs.sqlite``; it exports every record to ``runs.csv``) or, without a
store, the ``runs.csv`` alone, so a report can be rebuilt from committed records. ``DIR/spec.toml`` (copied by
``flx sweep``) gives the planned grid, so runs still missing are reported as missing, and its ``[report]``
table the layout: ``best_over`` (show each setting with its best value of that parameter, as Table 1b does),
``paper`` (which of the paper's tables to cite beside each row) and ``figures``.

Means are over the ok runs of a setting; std is the sample standard deviation (ddof = 1); n is stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flx.config import CONFIG_FIELDS, DATA_COLUMNS, config_from_record
from flx.errors import ConfigError, ReportError
from flx.metrics import METRICS, PRIMARY, TABLE_METRICS
from flx.summary import STATUSES, cell, format_mean_std, run_label, setting_cell, setting_columns, summarize

RUN_COLUMNS = (
    "key",
    "status",
    *CONFIG_FIELDS,
    *METRICS,
    "epochs_run",
    "steps_run",
    "best_step",
    "wall_time_s",
    "error",
    "flx_version",
    "torch_version",
    "git_commit",
    "host",
    *DATA_COLUMNS,
    *("backbone_test_ap", "backbone_train_s", "backbone_pool", "backbone_cache"),
    "data_time_s",
    "startup_s",
)


# ------------------------------------------------------------------------------------------------------------
# Loading a results directory
# ------------------------------------------------------------------------------------------------------------
@dataclass
class ReportSpec:
    name: str
    description: str = ""
    best_over: str | None = None
    paper: str | None = None
    figures: list[str] = field(default_factory=list)
    planned: list | None = None  # normalized Configs of the grid, when a spec is known
    claims: list[dict] = field(default_factory=list)  # [[report.claims]], declared before the runs


def read_spec(results_dir: Path) -> ReportSpec:
    """The layout and the planned runs of a results directory, from its spec.toml (written by flx sweep)."""
    from flx.config import load_spec
    from flx.sweep import plan

    path = Path(results_dir) / "spec.toml"
    if not path.exists():
        return ReportSpec(name=Path(results_dir).name)
    spec = load_spec(path)
    report = spec["report"]
    return ReportSpec(
        name=Path(results_dir).name,
        description=spec["description"],
        best_over=report.get("best_over"),
        paper=report.get("paper"),
        figures=list(report.get("figures", [])),
        planned=plan(spec, paths=False),  # a report never reads the data
        claims=list(report.get("claims", [])),
    )


def load_runs(results_dir: Path, to: Path | None = None):
    """The runs of a results directory. Its store (if any, opened read-only) is exported to ``to/runs.csv``
    (default: the results directory) and the CSV is read back, so a report from the store and one from the
    committed CSV are the same."""
    from flx.store import Store

    results_dir = Path(results_dir)
    to = Path(to or results_dir)
    if results_dir.exists() and not results_dir.is_dir():
        raise ReportError(f"results folder {results_dir} is a file; give a folder")
    store = Store(results_dir)
    if store.exists():
        df = store.to_dataframe()
        df = df.reindex(columns=[c for c in RUN_COLUMNS if c in df] + [c for c in df if c not in RUN_COLUMNS])
        _write(to / "runs.csv", lambda path: df.sort_values("key").to_csv(path, index=False))
    elif not (results_dir / "runs.csv").exists():
        raise ReportError(
            f"no runs in {results_dir} (neither runs.sqlite nor runs.csv); run `flx sweep --out {results_dir}` first"
        )
    return read_runs_csv(to if store.exists() else results_dir)


def _write(path: Path, write) -> Path:
    """Write a report file atomically; a one-line ReportError if the folder is read-only."""
    from flx.store import write_atomic

    try:
        return write_atomic(path, write)
    except OSError as exc:
        raise ReportError(
            f"cannot write {path}: {exc.strerror or exc}; write the report elsewhere with --to DIR"
        ) from None


def with_missing(df, planned):
    """Planned runs joined with the stored ones (matched by config, so runs on other data files show as their own
    rows); planned runs not stored get status 'missing'; stored runs not planned are left out."""
    import pandas as pd

    if planned is None:
        return df
    try:
        stored_keys = [config_from_record(r).config_key() for r in df.to_dict("records")]
    except (ConfigError, TypeError) as exc:
        raise ReportError(f"a stored run has a config flx cannot read ({exc})") from None
    by_config: dict[str, list[dict]] = {}
    for key, row in zip(stored_keys, df.to_dict("records"), strict=True):
        by_config.setdefault(key, []).append(row)
    rows = []
    for c in planned:
        rows += by_config.get(c.config_key()) or [
            {**c.to_dict(), "key": None, "status": "missing", **{m: math.nan for m in METRICS}}
        ]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------------------
def build_table(df, spec: ReportSpec):
    """Numeric table: one row per setting (each with its best ``best_over`` value, if set), paper AP beside."""
    from flx.paper import paper_ap

    runs = with_missing(df, spec.planned)
    keys = setting_columns(runs)
    table = summarize(runs, keys=keys)
    spec_chooser = None
    if spec.best_over and spec.best_over in keys:
        rest = [k for k in keys if k != spec.best_over]
        grouped = table.groupby([table[k].map(cell) for k in rest], sort=False, dropna=False)
        # chosen on the validation split where runs have one (the test split only reports)
        chooser = "val_ap_mean" if table["val_ap_mean"].notna().any() else f"{PRIMARY}_mean"
        best = [g[chooser].fillna(-math.inf).idxmax() for _, g in grouped]
        spec_chooser = chooser
        table = table.loc[best].reset_index(drop=True)
        table = table[[*rest, spec.best_over, *[c for c in table if c not in keys]]]
    # the constant fields (loss, ...) complete each row for the paper lookup and the rendered cells
    context = {k: runs.iloc[0][k] for k in CONFIG_FIELDS if k in runs and k not in keys}
    if spec.paper:
        table["paper_ap"] = [paper_ap(spec.paper, {**context, **row}) for row in table.to_dict("records")]
    table.attrs["context"] = context  # travels with the table to render_markdown
    table.attrs["chosen_on_val"] = spec.best_over in keys and spec_chooser == "val_ap_mean"
    if spec.claims:
        from flx.claims import judge_all

        table.attrs["verdicts"] = judge_all(spec.claims, runs)
    return table


def table_cells(table) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """The rendered table, whatever the format: (header, rows of cell texts, which cells are best). Cells:
    mean ± std per metric (the best mean of each metric marked), counts, settings, the paper's AP."""
    settings = [
        c for c in table if c not in {"runs", *STATUSES, "paper_ap"} and not c.endswith(("_mean", "_std"))
    ]
    metrics = [m for m in TABLE_METRICS if table[f"{m}_mean"].notna().any()]  # those these runs measure
    best = {}
    for m in metrics:
        values = table[f"{m}_mean"].dropna()
        best[m] = values.max() if METRICS[m].higher_is_better else values.min()
    header = [*settings, "n", "diverged", *(METRICS[m].label for m in metrics)]
    if "paper_ap" in table:
        header.append("paper AP")
    rows, bold = [], []
    for row in table.to_dict("records"):
        cells = [setting_cell({**table.attrs["context"], **row}, c) for c in settings]
        n = f"{row['ok']}"
        if row["missing"]:
            n += f" ({row['missing']} missing)"
        for status in ("failed", "collapsed"):
            if row.get(status):
                n += f" ({row[status]} {status})"
        cells += [n, str(row["diverged"])]
        marks = [False] * len(cells)
        for m in metrics:
            text = format_mean_std(row[f"{m}_mean"], row[f"{m}_std"], METRICS[m].digits)
            if row["ok"] == 0:
                text = "missing" if row["missing"] else "–"
            cells.append(text)
            marks.append(row["ok"] > 0 and m in best and row[f"{m}_mean"] == best[m])
        if "paper_ap" in table:
            cells.append(cell(row["paper_ap"]))
            marks.append(False)
        rows.append(cells)
        bold.append(marks)
    return header, rows, bold


def table_notes(table, spec: ReportSpec) -> str:
    """What the table's cells mean: one paragraph under (markdown) or in the caption of (LaTeX) the table."""
    from flx.paper import CITATION

    notes = [
        "n = ok runs (seeds) per setting; mean ± sample std (ddof = 1) over them; best value of each column in bold."
    ]
    if spec.best_over and table.attrs.get("chosen_on_val"):
        notes.append(
            f"Each row shows the {spec.best_over} with the highest mean validation AP for that setting (the "
            "paper picks on its own validation set); the other columns are on the test split."
        )
    elif spec.best_over:
        notes.append(
            f"Each row shows the {spec.best_over} with the highest mean AP for that setting, as the paper does."
        )
    datasets = {table.attrs["context"].get("dataset")} | (
        set(table["dataset"]) if "dataset" in table else set()
    )
    if "shapes" in datasets:
        notes.append(
            "AP, AP50, AP75: COCO detection AP (pycocotools) on the 512 test images; anchor AP: object against "
            "background anchors; val AP: COCO AP on the 256 validation images."
        )
    if "paper_ap" in table:
        notes.append(f"paper AP: {CITATION}; compare the shape, not the values.")
    return " ".join(notes)


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
        from flx.claims import render

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


def write_index(path: Path, results_dirs: list[Path]) -> Path:
    """results/README.md: every table with its findings, rendered from the committed records."""
    return _write(Path(path), lambda p: p.write_text(render_index(results_dirs)))


def write_readme(path: Path, results_dirs: list[Path]) -> Path:
    """Splice the generated tables into the results block of the README at ``path``."""
    path = Path(path)
    try:
        text = splice_readme(path.read_text(), results_dirs)
    except (OSError, ValueError) as exc:
        raise ReportError(f"--readme {path}: {exc}") from None
    return _write(path, lambda p: p.write_text(text))


def write_report(
    results_dir: Path, formats=("md", "csv"), plots: bool = True, to: Path | None = None, on_note=None
) -> dict:
    """Write runs.csv, table.csv / table.md (/ table.tex) and the spec's figures into ``to`` (default: the
    results directory). Reads only from ``results_dir`` (records and the runs' stored artefacts: never the
    data), so it works on a read-only store. A figure whose runs have no stored artefacts is left out and
    ``on_note(text)`` says so."""
    results_dir = Path(results_dir)
    to = Path(to or results_dir)
    spec = read_spec(results_dir)
    df = load_runs(results_dir, to)
    table = build_table(df, spec)
    written = {}
    if "csv" in formats:
        written["csv"] = _write(to / "table.csv", lambda p: table.to_csv(p, index=False))
    if "md" in formats:
        written["md"] = _write(to / "table.md", lambda p: p.write_text(render_markdown(table, spec)))
    if "tex" in formats:
        written["tex"] = _write(to / "table.tex", lambda p: p.write_text(render_latex(table, spec)))
    if plots and spec.figures:
        from flx import plots as P

        runs = with_missing(df, spec.planned)
        from flx.store import Store

        store = Store(results_dir) if Store(results_dir).exists() else None
        for name in spec.figures:
            try:
                path = P.FIGURES[name](runs, to, spec, store)
            except P.MissingArtefacts as exc:
                if on_note is not None:
                    on_note(f"figure {name} left out: {exc}")
                continue
            if path is not None:
                written[name] = path
    return written


# ------------------------------------------------------------------------------------------------------------
# results/README.md: every table with what replicated, computed from the numbers
# ------------------------------------------------------------------------------------------------------------
def _ap(row) -> str:
    return format_mean_std(row["ap_mean"], row["ap_std"])


def _best(table, mask=None):
    t = table if mask is None else table[mask]
    t = t[t["ap_mean"].notna()]
    return None if t.empty else t.loc[t["ap_mean"].idxmax()]


def _findings_generic(table, runs) -> list[str]:
    best = _best(table)
    if best is None:
        return []
    keys = [c for c in setting_columns(table) if c in table]
    setting = ", ".join(f"{k} = {setting_cell(best.to_dict(), k)}" for k in keys)
    out = [f"Best setting: {setting} (AP {_ap(best)})."]
    per_setting = summarize(runs)  # every setting, also those a best_over table leaves out
    div = per_setting[(per_setting["diverged"] + per_setting["collapsed"]) > 0]
    if len(div):
        names = [c for c in setting_columns(runs) if c in div]
        out.append(
            "Diverged or collapsed runs: "
            + "; ".join(
                ", ".join(f"{k} = {setting_cell(r, k)}" for k in names)
                + f": {r['diverged']} diverged and {r['collapsed']} collapsed of {r['runs']}"
                for r in div.to_dict("records")
            )
            + "."
        )
    else:
        out.append(f"No run diverged or collapsed (of {len(runs)}).")
    return out


def _findings_catsdogs(table, runs) -> list[str]:
    """The backbone's quality, then per ratio each loss's test AP beside its accuracy at threshold 0.5 (what
    the original experiment reported; its ranking of the losses can differ from AP's), then the from-scratch
    control against the frozen features."""
    from flx.claims import choose

    ok = runs[runs["status"] == "ok"]
    out = []
    if "backbone_test_ap" in ok and ok["backbone_test_ap"].notna().any():
        r = ok[ok["backbone_test_ap"].notna()].iloc[0]
        out.append(
            f"Features: flx's in-domain CNN, trained in {r['backbone_train_s']:.0f} s on a balanced pool of "
            f"{int(r['backbone_pool']):,} training images that no head trains, validates or tests on; with its own "
            f"classifier it scores test AP {r['backbone_test_ap']:.3f} on the balanced test split."
        )
    if "backbone" not in ok or "ratio" not in ok:
        return out + _findings_generic(table, runs)
    for ratio in sorted(ok["ratio"].dropna().unique()):
        rows = []
        for loss in dict.fromkeys(ok["loss"]):
            group = choose(ok, {"loss": loss, "backbone": "indomain", "ratio": float(ratio)})
            if group is not None and len(group):
                label = run_label(group.iloc[0].to_dict())
                rows.append((label, group["ap"].mean(), group["accuracy"].mean()))
        if len(rows) < 2:
            continue
        by_ap = [r[0] for r in sorted(rows, key=lambda r: -r[1])]
        by_acc = [r[0] for r in sorted(rows, key=lambda r: -r[2])]
        same = "the same order" if by_ap == by_acc else f"another order ({' > '.join(by_acc)})"
        out.append(
            f"1:{ratio:g} (frozen features; FL at its best validation α): test AP "
            + ", ".join(f"{label} {ap:.3f}" for label, ap, _ in rows)
            + "; accuracy at threshold 0.5 "
            + ", ".join(f"{label} {acc:.3f}" for label, _, acc in rows)
            + f": AP ranks them {' > '.join(by_ap)}, accuracy gives {same}."
        )
    scratch = ok[ok["backbone"] == "scratch"]
    for (ratio, loss), group in scratch.groupby(["ratio", "loss"], sort=True):
        frozen = choose(ok, {"loss": loss, "backbone": "indomain", "ratio": float(ratio)})
        if frozen is None:
            continue
        out.append(
            f"Control, 1:{ratio:g} {loss}: the CNN trained from scratch on the images (the old design, "
            f"{int(group['steps'].iloc[0])} steps, {len(group)} seeds) reaches test AP {group['ap'].mean():.3f} "
            f"against {frozen['ap'].mean():.3f} on the frozen features."
        )
    return out + _findings_generic(table, runs)


def _findings_curves(table, runs) -> list[str]:
    """Where each learning curve reaches its plateau, the training length the README's rule gives, and how much
    the validation AP still moved over the last sixth of training."""
    from flx.plots import _curve, plateau_steps

    out, steps = [], []
    for row in runs[runs["status"] == "ok"].to_dict("records"):
        step, best = plateau_steps(row, PLATEAU_SHARE)
        curve = _curve(row)
        if step is None:
            continue
        steps.append(step)
        out.append(
            f"{row['loss']}: at the constant lr, validation AP reaches {PLATEAU_SHARE:.0%} of its pre-decay best "
            f"({best:.3f}) at step {step}; over the last sixth of training it moves {_tail_move(curve):+.3f} "
            f"(to {curve[-1][1]:.3f})."
        )
    measured = runs[runs["status"] == "ok"]
    if "imbalance" in measured and measured["imbalance"].notna().any():
        first = measured.iloc[0]
        shares = ", ".join(
            f"{r['loss']} {100 * r['neg_loss_share']:.2g}%"
            for r in measured.to_dict("records")
            if r["loss"] != "ohem"
        )
        out.insert(
            0,
            f"Anchors: {first['anchors_per_image']:,.0f} per image, {first['pos_anchors_per_image']:.1f} of them "
            f"on an object and {first['ignored_anchors_per_image']:.1f} ignored (IoU 0.4-0.5): 1:"
            f"{first['imbalance']:.0f} object to background anchors (the paper: about 1:1000). Share of the "
            f"initial loss (every anchor at p = π = 0.01) carried by the background anchors: {shares}.",
        )
    detection = "steps" in runs and runs["steps"].notna().any()
    if steps and detection:
        length = math.ceil(max(steps) * 1.5 / 100) * 100
        out.append(
            f"Training length by the rule (1.5 x the latest of these steps, so the first lr decay, at 2/3, comes "
            f"where the constant-lr curves level off): {length} steps."
        )
    return out


PLATEAU_SHARE = 0.95
FINDINGS = {"catsdogs": _findings_catsdogs, "curves": _findings_curves}


def findings(name: str, table, runs) -> list[str]:
    """What a results folder shows: its claims' verdicts, then its own findings (or the generic ones), then how
    its learning curves level off where its runs store them."""
    out = [v.line() for v in table.attrs.get("verdicts", [])]
    out += FINDINGS.get(name, _findings_generic)(table, runs)
    if name != "curves" and "curve" in runs and runs["curve"].notna().any():
        out += _plateau_summary(runs)
    return out


def _tail_move(curve: list) -> float:
    """How far a stored curve's validation AP moved over its last sixth (its last step when that holds one)."""
    tail = [c[1] for c in curve if c[0] >= curve[-1][0] * 5 / 6]
    if len(tail) > 1 or len(curve) < 2:
        return tail[-1] - tail[0]
    return curve[-1][1] - curve[-2][1]


def _plateau_summary(runs) -> list[str]:
    """How much the ok runs' validation AP still moved over the last sixth of their stored curves."""
    from flx.plots import _curve

    moves = []
    for row in runs[runs["status"] == "ok"].to_dict("records"):
        curve = _curve(row)
        if curve and len(curve) > 1:
            moves.append(_tail_move(curve))
    if not moves:
        return []
    unit = "steps" if "steps" in runs and runs["steps"].notna().any() else "epochs"
    return [
        f"Plateau: over the last sixth of training ({unit}) the validation AP of the {len(moves)} ok runs moved by "
        f"{min(moves):+.3f} to {max(moves):+.3f} (median {float(np.median(moves)):+.3f})."
    ]


INDEX_HEADER = [
    "# Results",
    "",
    "Generated by `make ablations` (`flx report --index results/README.md`) from the run records in each "
    "folder's `runs.csv`; do not edit by hand. Each folder holds the spec that produced it (`spec.toml`), the "
    "per-run records (`runs.csv`), the table (`table.md`, `table.csv`) and its figures.",
    "",
]
README_START = "<!-- results:start (generated by make ablations; do not edit) -->"
README_END = "<!-- results:end -->"


def splice_readme(readme: str, results_dirs: list[Path], prefix: str = "results/") -> str:
    """README.md with the block between the results markers replaced by the generated tables."""
    if README_START not in readme or README_END not in readme:
        raise ValueError(f"README has no {README_START} ... {README_END} block")
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    body = render_index(results_dirs, prefix=prefix, header=False).replace("\n## ", "\n### ")
    body = "#" + body if body.startswith("## ") else body
    return f"{head}{README_START}\n{body}{README_END}{tail}"


def render_index(results_dirs: list[Path], prefix: str = "", header: bool = True) -> str:
    """results/README.md: generated from the committed tables and records, never typed."""
    lines = list(INDEX_HEADER) if header else []
    for d in results_dirs:
        spec = read_spec(d)
        df = read_runs_csv(d)
        table = build_table(df, spec)
        hours = df["wall_time_s"].sum() / 3600 if "wall_time_s" in df else math.nan
        lines += [f"## [{spec.name}]({prefix}{d.name}/table.md)", ""]
        if spec.description:
            lines += [spec.description + ".", ""]
        found = findings(spec.name, table, with_missing(df, spec.planned))
        lines += [f"- {f}" for f in found]
        lines += [f"- {len(df)} runs, {hours * 60:.1f} CPU-minutes of training (sum of run wall times).", ""]
        table_md = (d / "table.md").read_text() if (d / "table.md").exists() else render_markdown(table, spec)
        body = table_md.split("\n", 1)[1].lstrip("\n")  # drop the table's own heading
        if spec.description and body.startswith(spec.description):
            body = body[len(spec.description) + 1 :].lstrip("\n")
        lines += [body.rstrip(), ""]
        for png in sorted(d.glob("*.png")):
            lines += [f"![{png.stem}]({prefix}{d.name}/{png.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def read_runs_csv(results_dir: Path):
    """The per-run records of a results directory's runs.csv (what every table is rendered from)."""
    import pandas as pd

    path = Path(results_dir) / "runs.csv"
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportError(
            f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    missing = {"key", "status", "loss", "seed"} - set(df.columns)
    if missing:
        raise ReportError(f"{path} is not an flx runs file: it lacks the column(s) {sorted(missing)}")
    return df
