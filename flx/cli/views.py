"""Views: how the commands render what the library returns (progress, records, plans, summaries, run lists).
They print; they decide nothing.
"""

from __future__ import annotations

import math

import typer


class SweepView:
    """Renders a sweep's events: the data it uses, image decoding, a progress bar with ETA and tallies on a
    terminal, and one line per finished run (above the bar on a terminal, alone in a log)."""

    def __init__(self, console, planned: int = 0):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.planned = planned
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[tally]}"),
            console=console, disable=not self.live,
        )  # fmt: skip
        self.counts = {"ok": 0, "diverged": 0, "collapsed": 0, "failed": 0}
        self.task, self.decode, self.quarters = None, {}, {}
        self.finished = self.pending = 0

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def _tally(self) -> str:
        return " · ".join(f"{k} {v}" for k, v in self.counts.items())

    def _print(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, soft_wrap=True)

    def event(self, kind: str, **f) -> None:
        from flx.data.load import info_line

        if kind == "note":
            self._print(f"note: {f['text']}")
        elif kind == "plan":
            self.planned = f["planned"]
        elif kind == "decode":
            stage = f.get("stage", "decoding images")
            what = "images" if stage == "decoding images" else "epochs"
            if stage not in self.decode:
                self.decode[stage] = self.progress.add_task(stage, total=f["total"], tally="")
                self.quarters[stage] = 0
                if not self.live:
                    self._print(f"{stage}: {f['total']:,} {what} (cached for later runs)...")
            self.progress.update(self.decode[stage], completed=f["done"])
            quarter = 4 * f["done"] // max(1, f["total"])
            if (
                not self.live and quarter > self.quarters[stage]
            ):  # a log gets a line at each quarter, not silence
                self.quarters[stage] = quarter
                self._print(f"{stage}: {f['done']:,} of {f['total']:,} {what} ({25 * quarter}%)")
        elif kind == "data":
            self._print(info_line(f["config"], f["info"]))
        elif kind == "start":
            self.pending = f["pending"]
            done = self.planned - f["pending"]
            self._print(
                f"sweep: {self.planned} runs, {done} already done, {f['pending']} to run on {f['workers']} worker(s), "
                f"device {f.get('device', 'cpu')}"
            )
            if f["pending"]:
                self.task = self.progress.add_task("training", total=f["pending"], tally=self._tally())
        elif kind in ("record", "elsewhere"):
            self.finished += 1
            if kind == "record":
                r = f["record"]
                self.counts[r["status"]] = self.counts.get(r["status"], 0) + 1
                self._print(f"[{self.finished}/{self.pending}] {_record_line(r)}")
            else:
                self._print(f"[{self.finished}/{self.pending}] {f['key']}: stored meanwhile by another sweep")
            self.progress.update(self.task, advance=1, tally=self._tally())
        elif kind == "waiting":
            pass  # another sweep on this store trains these runs; the bar waits for them


def note_printer(console):
    """An ``on_event`` that prints the library's notes and ignores the rest."""

    def on_event(kind: str, **f) -> None:
        if kind == "note":
            console.print(f"note: {f['text']}", highlight=False)

    return on_event


def print_record(console, record, stored: bool) -> None:
    """One run's record (a :class:`~flx.results.record.RunRecord`) as a two-column table, its artefacts by
    size last."""
    from rich.table import Table

    table = Table(title=f"run {record.key}", show_header=False)
    for k, v in record.items():
        if v is not None:
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    if record.artefacts:
        sizes = ", ".join(f"{name} {len(blob) / 1024:.1f} KB" for name, blob in record.artefacts.items())
        table.add_row("artefacts", sizes + ("" if stored else " (not stored: --no-store)"))
    console.print(table)


def _record_line(record) -> str:
    from flx.results.summary import format_mean_std, run_label

    metric = f"AP {format_mean_std(record.ap, math.nan)}" if record.status == "ok" else record.status
    if record.status == "failed" and record.error:
        metric += f" ({record.error[:120]})"
    wall = record.wall_time_s if record.wall_time_s is not None else math.nan
    return f"{run_label(record)} seed={record.seed}: {metric} ({wall:.1f}s)"


def print_plan(console, result, store) -> None:
    import pandas as pd
    from rich.table import Table

    from flx.results.summary import cell, setting_columns

    done = store.done()
    df = pd.DataFrame([t.config.to_dict() for t in result.tasks])
    cols = setting_columns(df) + ["seed"]
    table = Table(title="planned runs")
    for col in ["key", *cols, "status"]:
        table.add_column(col)
    for t, row in zip(result.tasks, df.to_dict("records"), strict=True):
        table.add_row(t.key, *(cell(row[k]) for k in cols), "done" if t.key in done else "pending")
    console.print(table)
    console.print(
        f"{len(result.tasks)} runs planned, {result.done_before} already in {store.path}, "
        f"{len(result.tasks) - result.done_before} to run"
    )


def print_summary(console, df) -> None:
    from rich.table import Table

    from flx.experiment.metrics import METRICS, SUMMARY_METRICS
    from flx.results.summary import cell, format_mean_std, setting_columns, still_rising, summarize

    summary = summarize(df)
    if summary.empty:
        console.print("no runs stored yet")
        return
    table = Table(title="summary (mean ± sample std over seeds, ok runs only)")
    cols = setting_columns(df)
    for col in [*cols, "n ok", "not ok", *(METRICS[m].label for m in SUMMARY_METRICS)]:
        table.add_column(col, justify="right")
    for row in summary.to_dict("records"):
        other = ", ".join(f"{row[s]} {s}" for s in ("diverged", "collapsed", "failed") if row[s]) or "–"
        table.add_row(
            *(cell(row[c]) for c in cols),
            str(row["ok"]),
            other,
            *(format_mean_std(row[f"{m}_mean"], row[f"{m}_std"], METRICS[m].digits) for m in SUMMARY_METRICS),
        )
    console.print(table)
    rising = still_rising(df)
    if rising:
        console.print(
            f"note: {rising} of the ok runs had their best validation AP at their last step (still rising): "
            "train longer (--steps) to find where they level off",
            highlight=False,
        )


def cell_text(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return "–" if value is None else str(value)


def records_csv(records: list) -> str:
    import pandas as pd

    return pd.DataFrame([dict(r) for r in records]).to_csv(index=False)


def print_run(console, record, parts: dict[str, dict], fmt: str) -> None:
    """One stored run: as JSON, CSV, or section by section (curves on wrapped lines, by step or epoch)."""
    import json

    if fmt != "table":
        typer.echo(
            json.dumps(record.to_dict(), indent=2, default=str) if fmt == "json" else records_csv([record])
        )
        return
    for title, fields in parts.items():
        console.print(f"[bold]{title}[/]")
        if title in ("curve", "train_curve"):
            what = "validation AP" if title == "curve" else "training loss"
            text = ", ".join(f"{step}: {cell_text(value)}" for step, value in fields.items())
            console.print(f"  {what} by step: {text}", markup=False, highlight=False)
            continue
        for name, value in fields.items():
            console.print(f"  {name}: {cell_text(value)}", markup=False, highlight=False)


def print_runs(console, store, df, fmt: str) -> None:
    """Stored runs: as JSON, CSV, or a table of the columns that tell them apart."""
    import json

    from rich.table import Table

    from flx.results.browse import list_columns

    if fmt == "json":
        typer.echo(json.dumps(df.to_dict(orient="records"), indent=2, default=str))
        return
    if fmt == "csv":
        typer.echo(df.to_csv(index=False), nl=False)
        return
    if df.empty:
        console.print(f"no runs in {store.out} match")
        return
    columns = list_columns(df)
    table = Table(title=f"{len(df)} runs in {store.out}")
    for col in columns:
        table.add_column(col, justify="left" if col in ("key", "status", "dataset", "loss") else "right")
    for row in df[columns].itertuples(index=False):
        table.add_row(
            *(str(v)[:10] if c == "key" else cell_text(v) for c, v in zip(columns, row, strict=True))
        )
    console.print(table)


def report_printer(console):
    """``on_event`` of :func:`flx.report.report`: notes, then what was written where."""

    def on_event(kind: str, **f) -> None:
        if kind == "note":
            console.print(f"note: {f['text']}", markup=False, highlight=False)
        elif kind == "written":
            console.print(f"{f['folder']}: " + ", ".join(str(p) for p in f["paths"]))
        else:
            console.print(f"{kind}: {f['path']}")

    return on_event


def print_anatomy(console, rows, easy_count: int, hard_count: int, easy_pt: float, hard_pt: float) -> None:
    """flx anatomy's table: each gamma's easy and hard totals, their ratio and the easy share."""
    from rich.table import Table

    table = Table(title=f"{easy_count:,} easy (p_t = {easy_pt:g}) vs {hard_count:,} hard (p_t = {hard_pt:g})")
    for col in ("loss", "easy total", "hard total", "easy / hard", "easy share"):
        table.add_column(col, justify="right")
    for row in rows:
        share = row.easy_total / (row.easy_total + row.hard_total)
        name = "CE" if row.gamma == 0 else f"FL(γ={row.gamma:g})"
        table.add_row(
            name,
            f"{row.easy_total:,.1f}",
            f"{row.hard_total:,.1f}",
            f"{row.easy_over_hard:.3g}x",
            f"{share:.1%}",
        )
    console.print(table)


def print_bench_losses(console, rows, ns: list[int]) -> None:
    """flx bench losses: median times and speed-ups per condition, then first calls and peak memory."""
    from rich.table import Table

    from flx.bench.losses import IMPLEMENTATIONS

    by_key = {(r.condition, r.n, r.impl): r for r in rows}
    impls = [i for i in IMPLEMENTATIONS if any(r.impl == i for r in rows)]  # a GPU has no floor
    times = Table(
        title="sigmoid focal loss, forward + backward: median ms",
        caption="thr: torch threads; busy: background processes spinning; tv: torchvision; comp: torch.compile; "
        "floor: one read, one exp, one log1p and one write per logit",
    )
    short = {"flx_compiled": "flx_comp", "torchvision": "tv", "tv_compiled": "tv_comp"}
    ratios = {
        "vs tv": ("torchvision", "flx"),
        "vs tv_comp": ("tv_compiled", "flx"),
        "comp vs tv_comp": ("tv_compiled", "flx_compiled"),
        "vs bce": ("bce", "flx"),
        "/ floor": ("flx", "floor"),
    }
    ratios = {k: v for k, v in ratios.items() if v[0] in impls and v[1] in impls}
    speed = Table(
        title="flx's speed-ups (time of the other over flx's) and flx's time over the floor's",
        caption="comp vs tv_comp: torch.compile(flx) against torch.compile(torchvision)",
    )
    for col in ("condition", "logits", *(short.get(i, i) for i in impls)):
        times.add_column(col, justify="right", no_wrap=True)
    for col in ("condition", "logits", *ratios):
        speed.add_column(col, justify="right", no_wrap=True)
    for condition in dict.fromkeys(r.condition for r in rows):
        for n in ns:
            t = {impl: by_key[(condition, n, impl)].median_s for impl in impls}
            times.add_row(condition, f"{n:.0e}", *(f"{t[impl] * 1e3:.1f}" for impl in impls))
            speed.add_row(condition, f"{n:.0e}", *(f"{t[a] / t[b]:.2f}x" for a, b in ratios.values()))
    console.print(times)
    console.print(speed)
    first = rows[: len(ns) * len(impls)]  # the first condition's first calls (compilation included)
    extra = Table(title="first call (ms) and peak extra memory (MB, one call in a fresh process, 1 thread)")
    for col in ("logits", "impl", "first call", "peak extra MB", "vs torchvision"):
        extra.add_column(col, justify="right", no_wrap=True)
    for r in first:
        ref = by_key[(r.condition, r.n, "torchvision")].peak_extra_mb
        ratio = (
            f"{r.peak_extra_mb / ref:.2f}"
            if ref and ref == ref and r.peak_extra_mb == r.peak_extra_mb
            else ""
        )
        extra.add_row(f"{r.n:.0e}", r.impl, f"{r.first_call_s * 1e3:.1f}", f"{r.peak_extra_mb:.1f}", ratio)
    console.print(extra)


def print_bench_executors(console, rows) -> None:
    """flx bench executors: the same sweep's wall time with each executor."""
    from rich.table import Table

    table = Table(
        title="the same 40-run sweep (focal, 5 gammas x 2 alphas x 4 seeds, 50,000 examples, 3 epochs)"
    )
    for col in ("executor", "runs ok", "wall s", "sum of run times s", "vs local"):
        table.add_column(col, justify="right")
    local = rows[0].wall_s
    for r in rows:
        table.add_row(
            r.executor, f"{r.ok}/{r.runs}", f"{r.wall_s:.1f}", f"{r.train_s:.1f}", f"{r.wall_s / local:.2f}x"
        )
    console.print(table)


def print_counts(console, counts: dict, what: str) -> None:
    """One line per folder: how many ``what`` it holds."""
    for path, n in counts.items():
        console.print(f"{path}: {n} {what}")


def print_bench_detection(console, rows, as_json: bool) -> None:
    """flx bench detection: one JSON object per condition, or three tables (steps; flx's step split;
    evaluation)."""
    import json

    from rich.table import Table

    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_dict()))
        return
    steps = Table(
        title="detection training step, 8 images: median ms (tv: torchvision's stock RetinaNet; floor: flx's "
        "network alone; run s: one 1,200-step run with its evaluations)"
    )
    for col in ("px", "thr", "anchors", "tv", "flx", "floor", "tv/flx", "flx/floor",
                "FL", "OHEM128", "OHEM512", "512/FL", "run s"):  # fmt: skip
        steps.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        steps.add_row(
            f"{r.canvas}", f"{r.threads}", f"{r.anchors:,}", f"{r.torchvision_step_ms:.1f}", f"{r.flx_step_ms:.1f}",
            f"{r.floor_ms:.1f}", f"{r.step_speedup:.2f}x", f"{r.floor_ratio:.2f}x", f"{r.fl_step_ms:.1f}",
            f"{r.ohem128_step_ms:.1f}", f"{r.ohem512_step_ms:.1f}", f"{r.ohem512_vs_fl:.2f}x", f"{r.run_estimate_s:.0f}",
        )  # fmt: skip
    console.print(steps)
    parts = Table(title="flx's step, split: median ms")
    for col in ("px", "thr", "batch + matches", "forward + loss", "backward", "optimiser"):
        parts.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        parts.add_row(
            f"{r.canvas}", f"{r.threads}", f"{r.batch_ms:.2f}", f"{r.forward_loss_ms:.1f}", f"{r.backward_ms:.1f}",
            f"{r.optimizer_ms:.2f}",
        )  # fmt: skip
    console.print(parts)
    evaluation = Table(
        title="evaluation of 512 test images: s (COCO AP and anchor AP, each pair on the same predictions)"
    )
    for col in ("px", "thr", "detections", "predict", "pycocotools", "faster", "speed-up", "same AP",
                "sklearn AP", "flx AP", "speed-up"):  # fmt: skip
        evaluation.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        evaluation.add_row(
            f"{r.canvas}", f"{r.threads}", f"{r.detections:,}", f"{r.predict_s:.2f}", f"{r.coco_reference_s:.2f}",
            f"{r.coco_flx_s:.2f}", f"{r.eval_speedup:.1f}x", "yes" if r.ap_equal else "NO",
            f"{r.anchor_ap_reference_s:.2f}", f"{r.anchor_ap_flx_s:.2f}", f"{r.anchor_ap_speedup:.1f}x",
        )  # fmt: skip
    console.print(evaluation)
