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

from flx.engine.status import BACK, FELL
from flx.errors import ConfigError, ReportError
from flx.experiment.config import CONFIG_FIELDS, config_from_record
from flx.experiment.metrics import METRICS, PRIMARY, TABLE_METRICS
from flx.results.records import read_runs_csv
from flx.results.summary import (
    MERGED,
    RUN_MAXIMA,
    STATUSES,
    cell,
    format_mean_std,
    merge_identical,
    setting_cell,
    setting_columns,
    summarize,
)


@dataclass
class ReportSpec:
    name: str
    description: str = ""
    best_over: str | None = None
    paper: str | None = None
    figures: list[str] | None = None  # None (no spec): chosen from what varies (figures.chosen_figures)
    findings: str = "generic"  # the sentences under the table (flx.report.findings.FINDINGS)
    shown: dict | None = None  # the setting the single-model figures show (None: the paper's FL)
    planned: list | None = None  # normalized Configs of the grid, when a spec is known
    claims: list[dict] = field(default_factory=list)  # [[report.claims]], declared before the runs


def read_spec(results_dir: Path) -> ReportSpec:
    """The layout and the planned runs of a results directory, from its spec.toml (written by flx sweep)."""
    from flx.experiment.plan import plan
    from flx.experiment.spec import load_spec

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
        findings=report.get("findings", "generic"),
        shown=report.get("shown"),
        planned=plan(spec, paths=False),  # a report never reads the data
        claims=list(report.get("claims", [])),
    )


def load_runs(results_dir: Path, to: Path | None = None, check=None):
    """The runs of a results directory. Its store (if any, opened read-only) is exported to ``to/runs.csv``
    (default: the results directory) and the CSV is read back, so a report from the store and one from the
    committed CSV are the same. ``check(results_dir, runs)`` may refuse them before anything is written."""
    from flx.results.store import Store

    results_dir = Path(results_dir)
    to = Path(to or results_dir)
    if results_dir.exists() and not results_dir.is_dir():
        raise ReportError(f"results folder {results_dir} is a file; give a folder")
    store = Store(results_dir)
    if store.exists():
        df = store.to_dataframe()
        if check is not None:
            check(results_dir, df)
        write_file(to / "runs.csv", lambda path: df.sort_values("key").to_csv(path, index=False))
    elif not (results_dir / "runs.csv").exists():
        raise ReportError(
            f"no runs in {results_dir} (neither runs.sqlite nor runs.csv); run `flx sweep --out {results_dir}` first"
        )
    df = read_runs_csv(to if store.exists() else results_dir)
    if check is not None and not store.exists():
        check(results_dir, df)
    return df


def write_file(path: Path, write) -> Path:
    """Write a report file atomically; a one-line ReportError if the folder is read-only."""
    from flx.results.store import write_atomic

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


def build_table(df, spec: ReportSpec):
    """Numeric table: one row per setting (each with its best ``best_over`` value, if set), paper AP beside."""
    from flx.experiment.paper import paper_ap
    from flx.report.findings import code_version

    runs = with_missing(df, spec.planned)
    keys = setting_columns(runs)
    shown, merged = merge_identical(runs, keys)
    table = summarize(shown, keys=keys)
    members = _join_merged(table, keys, merged)
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
        table["paper_ap"] = [
            MERGED.join(cell(paper_ap(spec.paper, {**context, **m})) for m in members[i])
            if i in members
            else paper_ap(spec.paper, {**context, **row})
            for i, row in enumerate(table.to_dict("records"))
        ]
    table.attrs["context"] = context  # travels with the table to render_markdown
    table.attrs["code"] = code_version(runs)
    table.attrs["merged"] = [members[i] for i in sorted(members)]
    detector = "anchors_per_image" in runs and runs["anchors_per_image"].notna().any()
    if detector and (runs["loss"] == "ohem").any():  # how OHEM's loss was scaled, at which learning rate
        ohem = runs[runs["loss"] == "ohem"]
        norms = list(ohem["ohem_norm"].fillna("kept")) if "ohem_norm" in ohem else ["kept"]
        rates = sorted({float(x) for x in runs["lr"].dropna()}) if "lr" in runs else []
        table.attrs["ohem"] = (sorted(set(norms)), rates)
    if "pos_anchors_per_image" in runs and runs["pos_anchors_per_image"].notna().any():
        table.attrs["object_anchors"] = float(runs["pos_anchors_per_image"].mean())  # per validation image
    table.attrs["chosen_on_val"] = spec.best_over in keys and spec_chooser == "val_ap_mean"
    if spec.claims:
        from flx.report.claims import judge_all

        table.attrs["verdicts"] = judge_all(spec.claims, runs)
    return table


def _join_merged(table, keys: list[str], merged: dict) -> dict[int, list[dict]]:
    """Write each merged row's differing settings as 'a / b / c' (in place); returns {row position: members}."""
    members = {}
    for i, row in enumerate(table.to_dict("records")):
        label = tuple(cell(row[k]) for k in keys)
        if label not in merged:
            continue
        members[i] = merged[label]
        for k in keys:
            values = [cell(m[k]) for m in merged[label]]
            if len(set(values)) > 1:
                table[k] = table[k].astype(object)
                table.at[i, k] = MERGED.join(values)
    return members


def best_cells(table, metrics) -> set:
    """(row position, metric) of each best mean: compared as shown (rounded to the metric's digits), so every
    tie is marked, and within each data set when a table holds several."""
    groups = (
        table.groupby(table["dataset"].map(cell), sort=False).indices.values()
        if "dataset" in table and table["dataset"].nunique() > 1
        else [range(len(table))]
    )
    out = set()
    for positions in groups:
        for m in metrics:
            shown = table[f"{m}_mean"].iloc[list(positions)].round(METRICS[m].digits)
            if shown.notna().any():
                top = shown.max() if METRICS[m].higher_is_better else shown.min()
                out |= {(int(p), m) for p, v in zip(positions, shown, strict=True) if v == top}
    return out


def table_cells(
    table, columns: list[str] | None = None
) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """The rendered table, whatever the format: (header, rows of cell texts, which cells are best). Cells:
    mean ± std per metric (the best mean of each metric marked; ``columns``: only these metrics), counts,
    settings, the paper's AP."""
    settings = [
        c
        for c in table
        if c not in {"runs", *STATUSES, "paper_ap", *RUN_MAXIMA} and not c.endswith(("_mean", "_std"))
    ]
    maxima = [m for m in RUN_MAXIMA if m in table and table[m].notna().any()]
    metrics = [m for m in TABLE_METRICS if table[f"{m}_mean"].notna().any()]  # those these runs measure
    metrics = [m for m in metrics if columns is None or m in columns]
    best = best_cells(table, metrics)
    header = [*settings, "n", "diverged", *(METRICS[m].label for m in metrics)]
    header += [RUN_MAXIMA[m] for m in maxima]
    if "paper_ap" in table:
        header.append("paper AP")
    rows, bold = [], []
    for i, row in enumerate(table.to_dict("records")):
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
            marks.append(row["ok"] > 0 and (i, m) in best)
        for m in maxima:
            cells.append(f"{row[m]:.3g}" if row[m] == row[m] else "–")
            marks.append(False)
        if "paper_ap" in table:
            cells.append(cell(row["paper_ap"]))
            marks.append(False)
        rows.append(cells)
        bold.append(marks)
    return header, rows, bold


def table_notes(table, spec: ReportSpec) -> str:
    """What the table's cells mean: one paragraph under (markdown) or in the caption of (LaTeX) the table."""
    from flx.experiment.paper import citation

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
    if "max_grad_norm" in table and table["max_grad_norm"].notna().any():
        notes.append(
            "largest grad norm: the largest gradient norm of any of the setting's runs, failed ones too."
        )
    if "rebound" in table and table["rebound"].notna().any():
        notes.append(
            "largest rebound: of any of the setting's runs, how far the loss on object anchors came back up after "
            f"falling below {FELL:g} of its initial level, as a share of that level (a knock-back at {BACK:g})."
        )
    if "ohem" in table.attrs:
        norms, rates = table.attrs["ohem"]
        words = {
            "kept": "the anchors it keeps (as in the paper)",
            "objects": "the object anchors (as focal loss's)",
        }
        lr = (
            f", at the learning rate of every row ({' / '.join(f'{r:g}' for r in rates)}, not tuned)"
            if rates
            else ""
        )
        notes.append(f"OHEM's loss is divided by {' or '.join(words.get(n, n) for n in norms)}{lr}.")
    for members in table.attrs.get("merged", []):
        notes.append(_merged_note(members, table.attrs["context"], table.attrs.get("object_anchors")))
    if "paper_ap" in table:
        notes.append(f"paper AP: {citation()}; compare the shape, not the values.")
    if table.attrs.get("code"):
        notes.append(table.attrs["code"])
    return " ".join(notes)


def _merged_note(members: list[dict], context: dict, objects: float | None = None) -> str:
    """Why one row stands for several settings (``context``: the fields every row shares; ``objects``: the object
    anchors per image, which bound what OHEM's 1:r rule keeps)."""
    varying = [k for k in members[0] if len({cell(m[k]) for m in members}) > 1]
    fixed = [k for k in members[0] if k not in varying and k != "loss" and cell(members[0][k]) != "–"]
    first = {**context, **members[0]}
    what = ", ".join(f"{k} {MERGED.join(cell(m[k]) for m in members)}" for k in varying)
    at = " at " + " and ".join(f"{k} {setting_cell(first, k)}" for k in fixed) if fixed else ""
    note = (
        f"{first.get('loss')}, {what}{at}: identical runs seed by seed (every metric equal), so one row; the "
        "setting did not change what was trained"
    )
    if "ohem_k" in varying and cell(first.get("ohem_ratio")) != "–":
        ratio, smallest = float(first["ohem_ratio"]), min(int(m["ohem_k"]) for m in members)
        kept = f" ({objects:.1f} per image on average: about {(1 + ratio) * objects:.0f})" if objects else ""
        note += (
            f": the 1:{cell(first['ohem_ratio'])} rule keeps at most {1 + ratio:g} x the object anchors{kept}, fewer "
            f"than the smallest B, {smallest}, so B never bound"
        )
    return note + "."
