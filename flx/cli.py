"""The ``flx`` command line. One command = one typed function that parses, calls one library function and
renders. Values are checked against :data:`flx.config.PARAMS` before torch is imported, so a typo is refused
at once. Every :class:`flx.errors.UserError` becomes one line on stderr with exit code 2."""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import typer

from flx import __version__
from flx.config import PARAMS, check, parse_list
from flx.errors import FlxError, UserError

app = typer.Typer(
    name="flx",
    help="Experiment runner for focal loss and friends on imbalanced classification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags show as flags, not as <bool> options
)
bench_app = typer.Typer(
    help="Benchmarks: speed and memory, measured (never asserted in tests).", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
export_app = typer.Typer(help="Export stored runs to other tools.", no_args_is_help=True)
app.add_typer(export_app, name="export")


def user_errors(command):
    """Run a command so that the library's UserErrors (bad value, data, store, report) exit 2 in one line."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            raise FlxError(str(exc)) from None

    return wrapper


def parse_floats(text: str, option: str, low: float = -math.inf, high: float = math.inf) -> list[float]:
    """'0,0.5,2' -> [0.0, 0.5, 2.0] for options outside the config table (anatomy, bench)."""
    accepted = f"a number in [{low:g}, {high:g}]"
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise FlxError(f"{option} got {text!r}; accepted: a comma-separated list of {accepted}")
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise FlxError(f"{option} got {item!r}; accepted: {accepted}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise FlxError(f"{option} got {item}; accepted: {accepted}")
        values.append(value)
    return values


def _console():
    """A rich console; in a pipe or CI log it is 120 columns wide instead of rich's 80, so tables do not wrap."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
    plugin: list[str] = typer.Option(
        [],
        "--plugin",
        help="Import this module first: its flx.register_loss/_dataset/_model entries become options "
        "(repeatable; also FLX_PLUGINS=mod1,mod2). Sweep workers import it too.",
    ),
) -> None:
    """Experiment runner for focal loss and friends on imbalanced classification."""
    from flx.registry import use_plugins

    use_plugins(plugin)


# ------------------------------------------------------------------------------------------------------------
# flx anatomy
# ------------------------------------------------------------------------------------------------------------
@app.command()
def anatomy(
    gamma: str = typer.Option(
        "0,0.5,1,2,5",
        show_default=False,
        help="Comma-separated focusing parameters gamma >= 0. (default: 0,0.5,1,2,5)",
    ),
    easy_count: int = typer.Option(
        100_000, min=1, show_default=False, help="Number of easy examples. (default: 100000)"
    ),
    hard_count: int = typer.Option(
        100, min=1, show_default=False, help="Number of hard examples. (default: 100)"
    ),
    easy_pt: float = typer.Option(
        0.9, show_default=False, help="p_t of each easy example, in (0, 1). (default: 0.9)"
    ),
    hard_pt: float = typer.Option(
        0.1, show_default=False, help="p_t of each hard example, in (0, 1). (default: 0.1)"
    ),
) -> None:
    """How the total loss splits between many easy and a few hard examples, for each gamma (alpha off)."""
    from rich.table import Table

    from flx.anatomy import loss_anatomy

    gammas = parse_floats(gamma, "--gamma", 0, math.inf)
    for name, value in (("--easy-pt", easy_pt), ("--hard-pt", hard_pt)):
        if not 0 < value < 1:
            raise FlxError(f"{name} got {value:g}; accepted: a number in (0, 1)")
    table = Table(title=f"{easy_count:,} easy (p_t = {easy_pt:g}) vs {hard_count:,} hard (p_t = {hard_pt:g})")
    for col in ("loss", "easy total", "hard total", "easy / hard", "easy share"):
        table.add_column(col, justify="right")
    for row in loss_anatomy(gammas, easy_count, hard_count, easy_pt, hard_pt):
        share = row.easy_total / (row.easy_total + row.hard_total)
        name = "CE" if row.gamma == 0 else f"FL(γ={row.gamma:g})"
        table.add_row(
            name,
            f"{row.easy_total:,.1f}",
            f"{row.hard_total:,.1f}",
            f"{row.easy_over_hard:.3g}x",
            f"{share:.1%}",
        )
    _console().print(table)


# ------------------------------------------------------------------------------------------------------------
# flx bench losses
# ------------------------------------------------------------------------------------------------------------
@bench_app.command("losses")
def bench_losses(
    sizes: str = typer.Option(
        "1e5,1e6,1e7", show_default=False, help="Comma-separated numbers of logits. (default: 1e5,1e6,1e7)"
    ),
    min_run_time: float = typer.Option(
        1.0, show_default=False, help="Seconds of repeated timing per measurement. (default: 1)"
    ),
    memory: bool = typer.Option(
        True,
        show_default=False,
        help="Measure peak extra memory (one child process per measurement). (default: on)",
    ),
    busy: bool = typer.Option(
        True, show_default=False, help="Also time with 2 busy background processes. (default: on)"
    ),
) -> None:
    """Time forward+backward and peak extra memory of flx's focal loss against torchvision's (eager and
    compiled) and BCE-with-logits, with 1 and 2 threads, alone and beside 2 busy processes."""
    from rich.table import Table

    from flx.bench import CONDITIONS, IMPLEMENTATIONS
    from flx.bench import bench_losses as run_bench

    ns = [int(v) for v in parse_floats(sizes, "--sizes", 1, 1e9)]
    if min_run_time <= 0:
        raise UserError(f"--min-run-time got {min_run_time:g}; accepted: a number of seconds > 0")
    conditions = tuple(c for c in CONDITIONS if busy or c[1] == 0)
    console = _console()
    console.print(
        f"[dim]timing {len(ns)} sizes x {len(IMPLEMENTATIONS)} implementations x {len(conditions)} conditions "
        "(forward + backward, reduction='mean')...[/]"
    )
    rows = run_bench(
        ns,
        min_run_time=min_run_time,
        measure_memory=memory,
        conditions=conditions,
        progress=lambda line: console.print(f"[dim]  {line}[/]"),
    )
    by_key = {(r.condition, r.n, r.impl): r for r in rows}
    table = Table(
        title="sigmoid focal loss, forward + backward: median ms (CPU), and flx's speed-up vs each",
        caption="thr: torch threads; busy: background processes spinning; compiled: torch.compile(torchvision)",
    )
    for col in ("condition", "logits", *IMPLEMENTATIONS, "vs torchvision", "vs compiled", "vs bce"):
        table.add_column(col, justify="right", no_wrap=True)
    for condition in dict.fromkeys(r.condition for r in rows):
        for n in ns:
            t = {impl: by_key[(condition, n, impl)].median_s for impl in IMPLEMENTATIONS}
            table.add_row(
                condition,
                f"{n:.0e}",
                *(f"{t[impl] * 1e3:.1f}" for impl in IMPLEMENTATIONS),
                f"{t['torchvision'] / t['flx']:.2f}x",
                f"{t['compiled'] / t['flx']:.2f}x",
                f"{t['bce'] / t['flx']:.2f}x",
            )
    console.print(table)
    first = rows[: len(ns) * len(IMPLEMENTATIONS)]  # the first condition's first calls (compilation included)
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


@bench_app.command("executors")
@user_errors
def bench_executors(
    workers: int = typer.Option(2, min=1, show_default=False, help="Workers / Ray CPUs. (default: 2)"),
) -> None:
    """Time the same 40-run sweep with the local process pool and with --executor ray (a local Ray instance
    of --workers CPUs, its start-up included), one after the other."""
    from rich.table import Table

    from flx.bench import bench_executors as run_bench
    from flx.cluster import _import_ray

    _import_ray()
    console = _console()
    rows = run_bench(workers, progress=lambda line: console.print(f"[dim]  {line}[/]"))
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


# ------------------------------------------------------------------------------------------------------------
# Options of run and sweep: help and checks from the constraint table (flx.config.PARAMS)
# ------------------------------------------------------------------------------------------------------------
# Defaults a config option's help states (None in the option itself: a data set or loss fills it in).
DEFAULTS = {
    "dataset": "synthetic, or table / images with --data",
    "ratio": "1000 synthetic, 10 image sets, your data's own",
    "n_samples": "520000",
    "dim": "16",
    "hard_frac": "0.02",
    "image_size": "32; shapes: 48",
    "n_images": "2048",
    "positive": "dog, or your data's rarest class",
    "backbone": "indomain",
    "weights": "imagenet",
    "model": "mlp for vectors, cnn for images",
    "hidden": "64; shapes: 16",
    "prior": "0.01",
    "anchor_scales": "3",
    "anchor_ratios": "3",
    "loss": "focal",
    "alpha": "the loss's: 0.25 focal losses, 0.75 balanced_ce",
    "gamma": "2",
    "epsilon": "1",
    "ohem_k": "256",
    "optimizer": "adam; shapes: sgd",
    "lr": "0.001; shapes: 0.01",
    "epochs": "3; synthetic",
    "steps": "1500 image sets and shapes, 2000 tables",
    "eval_every": "100; image sets and tables",
    "batch_size": "1024; images 128; tables 256; shapes 8",
    "seed": "0",
}


def _opt(name: str, many: bool = False, default: str | None = None):
    """A Typer option for a constraint-table entry: its help, what it accepts, and its default in words."""
    p = PARAMS[name]
    what = f"Comma-separated: {p.accepted()}." if many else f"{p.accepted()[0].upper()}{p.accepted()[1:]}."
    default = default or DEFAULTS.get(name)
    note = f" (default: {default})" if default else ""
    return typer.Option(None, p.option, help=f"{p.help} {what}{note}", show_default=False)


def config_options(many: bool):
    """Give a command one option per config field (:data:`flx.config.PARAMS` order; ``--seed`` only where
    ``many`` is False: a sweep has ``--seeds``). The command receives those given as ``fields``
    ({name: text}); values are checked by :func:`_fields`."""
    import inspect

    from flx.config import CONFIG_FIELDS

    names = [n for n in PARAMS if n in CONFIG_FIELDS and (n != "seed" or not many)]

    def decorate(command):
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "fields"]
        first = [
            p
            for p in own
            if p.default is inspect.Parameter.empty or isinstance(p.default, typer.models.ArgumentInfo)
        ]
        added = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_opt(n, many), annotation=str | None)
            for n in names
        ]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p not in first]

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            given = {n: kwargs.pop(n, None) for n in names}
            return command(*args, fields={n: v for n, v in given.items() if v is not None}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*first, *added, *rest])
        return wrapper

    return decorate


DataDirOpt = typer.Option(
    None, "--data-dir", envvar="FLX_DATA_DIR", help="Folder with real data (catsdogs, cifar_catsdogs)."
)
OutOpt = typer.Option(None, "--out", envvar="FLX_OUT", help="Results folder. (default: ./runs)")


def _fields(fields: dict, many: bool) -> dict:
    """Config overrides from the options given: lists parsed item by item (``many``) or single values, each
    checked against the constraint table, so a bad value is refused here, before torch is imported."""
    if many:
        return {name: parse_list(name, text) for name, text in fields.items()}
    return {name: check(name, text, PARAMS[name].option) for name, text in fields.items()}


# ------------------------------------------------------------------------------------------------------------
# flx run
# ------------------------------------------------------------------------------------------------------------
@app.command()
@user_errors
@config_options(many=False)
def run(
    fields: dict,
    set_: list[str] = typer.Option(
        [], "--set", help="FIELD=VALUE: any config field (repeatable), e.g. data_seed=1."
    ),
    device: str | None = _opt("device", default="auto"),
    data_dir: str | None = DataDirOpt,
    out: str | None = OutOpt,
    store: bool = typer.Option(
        True, show_default=False, help="Also save the record to the results store (--out). (default: on)"
    ),
) -> None:
    """Train one model and print its record (and store it, unless --no-store)."""
    from flx.config import Config
    from flx.store import ARTEFACTS, Store, default_out
    from flx.sweep import inapplicable, run_one, with_sets

    fields = with_sets(_fields(fields, many=False), set_, many=False)
    device = check("device", device or "auto", "--device")
    config = Config(**fields).normalized()
    config.check_runnable()
    console = _console()
    note = inapplicable([config], [k for k in fields if k != "loss"])
    if note:
        console.print(f"note: {note}", highlight=False)
    with console.status(f"training {config.loss} on {config.dataset}..."):
        record = run_one(config, Store(out or default_out()) if store else None, data_dir, device)
    from rich.table import Table

    table = Table(title=f"run {record['key']}", show_header=False)
    for k, v in record.items():
        if k == ARTEFACTS:
            sizes = ", ".join(f"{name} {len(blob) / 1024:.1f} KB" for name, blob in v.items())
            table.add_row(k, sizes + ("" if store else " (not stored: --no-store)"))
        elif v is not None:
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)
    if record["status"] == "failed":
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------------------
# flx sweep
# ------------------------------------------------------------------------------------------------------------
@app.command()
@user_errors
@config_options(many=True)
def sweep(
    fields: dict,
    spec: str | None = typer.Argument(None, help="TOML spec (experiments/NAME.toml); options override it."),
    seeds: str | None = _opt("seeds", default="1, or the spec's"),
    workers: str | None = _opt("workers", default="the available cores; on GPUs --per-gpu per GPU"),
    device: str | None = _opt("device", default="auto"),
    per_gpu: str | None = _opt("per_gpu", default="1"),
    executor: str = typer.Option(
        "local",
        "--executor",
        show_default=False,
        help="Where runs train: local (worker processes here) or ray (Ray tasks; pip install 'flx[ray]'). "
        "(default: local)",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="With --executor ray: join this cluster (HOST:PORT of `ray start --head`, or auto). "
        "(default: RAY_ADDRESS if set, else start a local Ray instance)",
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="FIELD=V1,V2: any config field, as a comma-separated list (repeatable), e.g. data_seed=0,1.",
    ),
    data_dir: str | None = DataDirOpt,
    out: str | None = OutOpt,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the planned runs and how many are done; run nothing."
    ),
) -> None:
    """Train one model per grid point (loss x hyperparameters x seed), in parallel, skipping stored runs."""
    from flx.config import empty_spec, load_spec
    from flx.store import Store, default_out
    from flx.sweep import inapplicable, merge, plan, run_sweep, with_sets

    overrides = _fields(fields, many=True)
    if seeds is not None:
        overrides["seeds"] = check("seeds", seeds, "--seeds")
    overrides = with_sets(overrides, set_)
    n_workers = check("workers", workers, "--workers") if workers is not None else None  # None: all cores
    device = check("device", device or "auto", "--device")
    n_per_gpu = check("per_gpu", per_gpu or 1, "--per-gpu")
    if ray_address is not None and executor != "ray":
        raise FlxError("--ray-address is for --executor ray; add --executor ray or leave it out")
    loaded = load_spec(spec) if spec else empty_spec()
    effective = merge(loaded, overrides)
    configs = plan(effective)  # checked and sized before torch is imported
    store = Store(out or loaded.get("out") or default_out())
    console = _console()
    note = inapplicable(configs, [f for f in overrides if f != "seeds"])
    if note:
        console.print(f"note: {note}", highlight=False)
    view = SweepView(console, len(configs))
    with view:
        result = run_sweep(
            configs,
            store,
            workers=n_workers,
            data_dir=data_dir,
            spec=effective if spec else None,
            dry_run=dry_run,
            on_event=view.event,
            device=device,
            per_gpu=n_per_gpu,
            backend=executor,
            ray_address=ray_address,
        )
    if dry_run:
        _print_plan(console, result, store)
        return
    df = store.to_dataframe()
    _print_summary(console, df[df["key"].isin(result.keys)] if not df.empty else df)
    if result.interrupted:
        finished = len(store.done() & result.keys)  # read back from the store: exact whenever the signal came
        console.print(
            f"interrupted ({result.interrupted}): {finished} of {len(configs)} runs are in the store; "
            "run the same command again to resume"
        )
        raise typer.Exit(result.exit_code)


class SweepView:
    """Renders a sweep's events: the data it uses, image decoding, a progress bar with ETA and tallies on a
    terminal, and one line per finished run (above the bar on a terminal, alone in a log)."""

    def __init__(self, console, planned: int):
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
        self.task, self.decode = None, {}
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
        from flx.data import info_line

        if kind == "note":
            self._print(f"note: {f['text']}")
        elif kind == "decode":
            stage = f.get("stage", "decoding images")
            if stage not in self.decode:
                self.decode[stage] = self.progress.add_task(stage, total=f["total"], tally="")
                if not self.live:
                    what = "images" if stage == "decoding images" else "epochs"
                    self._print(f"{stage}: {f['total']:,} {what} (cached for later runs)...")
            self.progress.update(self.decode[stage], completed=f["done"])
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


def _record_line(record: dict) -> str:
    from flx.summary import format_mean_std, run_label

    metric = f"AP {format_mean_std(record['ap'], math.nan)}" if record["status"] == "ok" else record["status"]
    if record["status"] == "failed" and record.get("error"):
        metric += f" ({record['error'][:120]})"
    return f"{run_label(record)} seed={record['seed']}: {metric} ({record.get('wall_time_s', math.nan):.1f}s)"


def _print_plan(console, result, store) -> None:
    import pandas as pd
    from rich.table import Table

    from flx.summary import cell, setting_columns

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


def _print_summary(console, df) -> None:
    from rich.table import Table

    from flx.metrics import METRICS, SUMMARY_METRICS
    from flx.summary import cell, format_mean_std, setting_columns, summarize

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


# ------------------------------------------------------------------------------------------------------------
# flx report
# ------------------------------------------------------------------------------------------------------------
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
        None, help="Also write an index of all the tables here (results/README.md)."
    ),
    readme: str | None = typer.Option(None, help="Also splice the tables into this README's results block."),
    out: str | None = OutOpt,
) -> None:
    """Tables (mean ± std over seeds, best in bold, paper AP beside) and figures from stored runs. Only reads
    the results folders (a read-only store is fine); writes runs.csv, table.* and figures (there, or --to)."""
    from flx.report import parse_formats, write_index, write_readme, write_report
    from flx.store import default_out

    formats = parse_formats(fmt)
    dirs = [Path(d) for d in (results_dirs or [out or default_out()])]
    if to and len(dirs) > 1:
        raise FlxError(f"--to takes the report of one results folder; {len(dirs)} were given")
    console = _console()
    for d in dirs:
        notes: list[str] = []
        with console.status(f"report {d}..."):
            written = write_report(
                d, formats=formats, plots=plots, to=Path(to) if to else None, on_note=notes.append
            )
        for note in notes:
            console.print(f"note: {note}", markup=False, highlight=False)
        console.print(f"{d}: " + ", ".join(str(p) for p in written.values()))
    if index:
        console.print(f"index: {write_index(Path(index), dirs)}")
    if readme:
        console.print(f"readme: {write_readme(Path(readme), dirs)}")


# ------------------------------------------------------------------------------------------------------------
# flx runs
# ------------------------------------------------------------------------------------------------------------
@app.command()
@user_errors
def runs(
    args: list[str] | None = typer.Argument(
        None,
        help="[DIR] to list the runs of a results folder, or: show KEY [DIR] for one run. (default: ./runs)",
    ),
    where: list[str] = typer.Option(
        [], "--where", help="Keep runs with FIELD=VALUE (=a,b: any of; also !=, >=, <=, >, <). Repeatable."
    ),
    status: str | None = typer.Option(
        None, help="Keep runs with these statuses: ok, diverged, collapsed, failed."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON instead of a table."),
    as_csv: bool = typer.Option(False, "--csv", help="Print the runs as CSV instead of a table."),
    out: str | None = OutOpt,
) -> None:
    """List stored runs (filtered by --where and --status) or show one: `flx runs show KEY` prints its config,
    metrics, learning curve, data and provenance. Only reads the store."""
    import json

    from flx.runs import find, list_columns, open_store, parse_statuses, sections, select
    from flx.store import default_out

    args = list(args or [])
    if as_json and as_csv:
        raise FlxError("--json and --csv: give one of them")
    if args[:1] == ["show"]:
        if len(args) not in (2, 3):
            raise FlxError(
                "flx runs show takes a run key and, optionally, a results folder: flx runs show KEY [DIR]"
            )
        store = open_store(args[2] if len(args) == 3 else out or default_out())
        record = find(store, args[1])
        parts = sections(record, store.artefact_sizes(record["key"]))
        if as_json or as_csv:
            typer.echo(json.dumps(record, indent=2, default=str) if as_json else _csv([record]))
            return
        console = _console()
        for title, fields in parts.items():
            console.print(f"[bold]{title}[/]")
            if title in ("curve", "train_curve"):  # by step or epoch, on wrapped lines
                what = "validation AP" if title == "curve" else "training loss"
                text = ", ".join(f"{step}: {_cell(value)}" for step, value in fields.items())
                console.print(f"  {what} by step: {text}", markup=False, highlight=False)
                continue
            for name, value in fields.items():
                console.print(f"  {name}: {_cell(value)}", markup=False, highlight=False)
        return
    if len(args) > 1:
        raise FlxError(f"flx runs takes one results folder, got {len(args)}: {' '.join(args)}")
    store = open_store(args[0] if args else out or default_out())
    df = select(store, where, parse_statuses(status))
    if as_json:
        typer.echo(json.dumps(df.to_dict(orient="records"), indent=2, default=str))
        return
    if as_csv:
        typer.echo(df.to_csv(index=False), nl=False)
        return
    from rich.table import Table

    console = _console()
    if df.empty:
        console.print(f"no runs in {store.out} match")
        return
    columns = list_columns(df)
    table = Table(title=f"{len(df)} runs in {store.out}")
    for col in columns:
        table.add_column(col, justify="left" if col in ("key", "status", "dataset", "loss") else "right")
    for row in df[columns].itertuples(index=False):
        table.add_row(*(str(v)[:10] if c == "key" else _cell(v) for c, v in zip(columns, row, strict=True)))
    console.print(table)


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return "–" if value is None else str(value)


def _csv(records: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame(records).to_csv(index=False)


# ------------------------------------------------------------------------------------------------------------
# flx export mlflow
# ------------------------------------------------------------------------------------------------------------
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
    from flx.export import export_mlflow as export
    from flx.store import default_out

    folder = results_dir or out or default_out()
    console = _console()
    with console.status(f"exporting {folder} to MLflow..."):
        counts = export(folder, tracking_uri, experiment)
    console.print(
        f"{folder}: {counts['logged']} runs logged, {counts['replaced']} replaced (status changed), "
        f"{counts['skipped']} already in MLflow",
        soft_wrap=True,
        highlight=False,
    )


# ------------------------------------------------------------------------------------------------------------
# flx migrate
# ------------------------------------------------------------------------------------------------------------
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
    from flx.sweep import migrate as migrate_dirs

    console = _console()
    for path, n in migrate_dirs([Path(d) for d in results_dirs], data_dir).items():
        console.print(f"{path}: {n} records")


# ------------------------------------------------------------------------------------------------------------
# flx download
# ------------------------------------------------------------------------------------------------------------
@app.command()
def download(
    name: str = typer.Argument(..., help="Data set to download: cifar10."),
    data_dir: str = typer.Option(..., "--data-dir", envvar="FLX_DATA_DIR", help="Where to put it."),
) -> None:
    """Download a public data set with torchvision (needs internet). Kaggle's Dogs vs. Cats needs a Kaggle
    account: download train.zip from https://www.kaggle.com/c/dogs-vs-cats/data and unzip it into DATA_DIR."""
    if name != "cifar10":
        raise FlxError(
            f"cannot download {name!r}; flx downloads cifar10 (Dogs vs. Cats comes from Kaggle by hand)"
        )
    from flx.data import download_cifar10

    try:
        download_cifar10(Path(data_dir))
    except OSError as exc:
        raise FlxError(f"download of cifar10 into {data_dir} failed: {exc}") from None
    _console().print(f"cifar10 is in {data_dir}; use --dataset cifar_catsdogs --data-dir {data_dir}")


# ------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Console entry point: Click's and flx's errors become one line on stderr with exit code 2."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="flx", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        print("flx: interrupted", file=sys.stderr)
        sys.exit(130)
    except UserError as exc:  # raised outside a command (e.g. by an option callback)
        print(f"flx: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # Typer's usage errors and FlxError: anything that knows how to show itself
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        print(f"flx: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
