"""The ``flx`` command line. One command = one typed function; torch is imported inside commands only,
so ``flx --help`` answers at once. Bad input raises :class:`flx.errors.FlxError`: one line, exit code 2."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import typer

from flx import __version__
from flx.errors import FlxError

app = typer.Typer(
    name="flx",
    help="Experiment runner for focal loss and friends on imbalanced classification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    help="Benchmarks: speed and memory, measured (never asserted in tests).", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


# ------------------------------------------------------------------------------------------------------------
# Parsing comma-separated lists (Typer list options with custom parsers misbehave: parse strings ourselves).
# ------------------------------------------------------------------------------------------------------------
def parse_floats(text: str, option: str, low: float = -math.inf, high: float = math.inf) -> list[float]:
    """'0,0.5,2' -> [0.0, 0.5, 2.0]; every value must be a finite number in [low, high]."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise FlxError(f"{option} got {text!r}: give a comma-separated list of numbers, e.g. 0,1,2")
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise FlxError(f"{option} got {item!r}, which is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise FlxError(f"{option} got {item}, outside the accepted range [{low:g}, {high:g}]")
        values.append(value)
    return values


def parse_names(text: str, option: str, known: list[str]) -> list[str]:
    """'ce,focal' -> ['ce', 'focal']; every name must be one of ``known``."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise FlxError(f"{option} got {text!r}: give a comma-separated list, e.g. {','.join(known[:2])}")
    for item in items:
        if item not in known:
            raise FlxError(f"{option} got unknown {item!r}; choose from {', '.join(known)}")
    return list(dict.fromkeys(items))


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
) -> None:
    """Experiment runner for focal loss and friends on imbalanced classification."""


# ------------------------------------------------------------------------------------------------------------
# flx anatomy
# ------------------------------------------------------------------------------------------------------------
@app.command()
def anatomy(
    gamma: str = typer.Option("0,0.5,1,2,5", help="Comma-separated focusing parameters gamma >= 0."),
    easy_count: int = typer.Option(100_000, min=1, help="Number of easy examples."),
    hard_count: int = typer.Option(100, min=1, help="Number of hard examples."),
    easy_pt: float = typer.Option(0.9, help="p_t of each easy example, in (0, 1)."),
    hard_pt: float = typer.Option(0.1, help="p_t of each hard example, in (0, 1)."),
) -> None:
    """How the total loss splits between many easy and a few hard examples, for each gamma (alpha off)."""
    from rich.table import Table

    from flx.anatomy import loss_anatomy

    gammas = parse_floats(gamma, "--gamma", 0, math.inf)
    for name, value in (("--easy-pt", easy_pt), ("--hard-pt", hard_pt)):
        if not 0 < value < 1:
            raise FlxError(f"{name} got {value}, outside the accepted range (0, 1)")
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
    sizes: str = typer.Option("1e5,1e6,1e7", help="Comma-separated numbers of logits."),
    min_run_time: float = typer.Option(1.0, help="Seconds of repeated timing per measurement."),
    memory: bool = typer.Option(True, help="Measure peak extra memory (one child process per measurement)."),
) -> None:
    """Time forward+backward and peak extra memory of flx's focal loss against torchvision's."""
    from rich.table import Table

    from flx.bench import bench_losses as run_bench

    ns = [int(v) for v in parse_floats(sizes, "--sizes", 1, 1e9)]
    console = _console()
    console.print(
        f"[dim]timing {len(ns)} sizes x 2 implementations (forward + backward, reduction='mean')...[/]"
    )
    rows = run_bench(ns, min_run_time=min_run_time, measure_memory=memory)
    table = Table(title="sigmoid focal loss: flx vs torchvision.ops (CPU)")
    for col in ("logits", "impl", "first call", "median", "speed-up", "peak extra MB", "memory ratio"):
        table.add_column(col, justify="right", no_wrap=True)
    by_key = {(r.n, r.impl): r for r in rows}
    for r in rows:
        ref = by_key[(r.n, "torchvision")]
        speed = f"{ref.median_s / r.median_s:.1f}x" if r.impl == "flx" else ""
        mem = f"{r.peak_extra_mb / ref.peak_extra_mb:.2f}" if r.impl == "flx" and ref.peak_extra_mb else ""
        table.add_row(
            f"{r.n:.0e}",
            r.impl,
            f"{r.first_call_s * 1e3:.1f} ms",
            f"{r.median_s * 1e3:.2f} ms",
            speed,
            f"{r.peak_extra_mb:.1f}",
            mem,
        )
    console.print(table)


# ------------------------------------------------------------------------------------------------------------
# Shared options of run and sweep (None = the config's default for that data set / loss)
# ------------------------------------------------------------------------------------------------------------
DatasetOpt = typer.Option(
    None, "--dataset", help="synthetic, catsdogs or cifar_catsdogs. (default: synthetic)"
)
NSamplesOpt = typer.Option(None, "--n-samples", help="synthetic: examples per split. (default: 520000)")
DimOpt = typer.Option(None, "--dim", help="synthetic: feature dimension. (default: 16)")
HardFracOpt = typer.Option(None, "--hard-frac", help="synthetic: fraction of hard negatives. (default: 0.02)")
ImageSizeOpt = typer.Option(None, "--image-size", help="catsdogs: image side in pixels. (default: 64)")
ModelOpt = typer.Option(None, "--model", help="mlp or cnn. (default: mlp for synthetic, cnn for images)")
HiddenOpt = typer.Option(None, "--hidden", help="MLP width (CNN width = hidden/4). (default: 64)")
OptimizerOpt = typer.Option(None, "--optimizer", help="adam or sgd. (default: adam)")
LrOpt = typer.Option(None, "--lr", help="Learning rate. (default: 0.001)")
EpochsOpt = typer.Option(None, "--epochs", help="Training epochs. (default: 3)")
BatchSizeOpt = typer.Option(None, "--batch-size", help="Minibatch size. (default: 1024)")
DataDirOpt = typer.Option(None, "--data-dir", envvar="FLX_DATA_DIR", help="Folder with real data (catsdogs).")
OutOpt = typer.Option(None, "--out", envvar="FLX_OUT", help="Results directory. (default: ./runs)")


def _prior(text: str | None):
    if text is None:
        return None
    if text.strip().lower() == "none":
        return "none"
    return parse_floats(text, "--prior", 0, 1)[0]


def _config_fields(**options) -> dict:
    """Config fields from CLI options that were given (None = not given); 'none' means the value None."""
    return {k: (None if v == "none" else v) for k, v in options.items() if v is not None}


def _to_config(fields: dict):
    from flx.train import Config

    try:
        return Config(**fields).normalized()
    except ValueError as exc:
        raise FlxError(str(exc)) from None


def _check_data(configs, data_dir) -> None:
    """Load each real data set once here, so a missing folder fails before anything runs or is written."""
    from flx.data import DataError, get_dataset, load

    seen = set()
    for c in configs:
        ident = (c.dataset, c.data_params(), c.data_seed)
        if ident in seen or not get_dataset(c.dataset).needs_data_dir:
            continue
        seen.add(ident)
        try:
            load(c.dataset, c.data_params(), c.data_seed, data_dir)
        except DataError as exc:
            raise FlxError(str(exc)) from None


def _record_line(record: dict) -> str:
    from flx.report import format_mean_std, run_label

    metric = format_mean_std(record["ap"], float("nan")) if record["status"] == "ok" else record["status"]
    return f"{run_label(record)} seed={record['seed']}: AP {metric} ({record['wall_time_s']:.1f}s)"


# ------------------------------------------------------------------------------------------------------------
# flx run
# ------------------------------------------------------------------------------------------------------------
@app.command()
def run(
    loss: str = typer.Option("focal", help="Loss: ce, balanced_ce, focal, poly1, poly1_focal, ohem."),
    gamma: float | None = typer.Option(None, help="Focusing parameter in [0, 10] (focal losses)."),
    alpha: float | None = typer.Option(None, help="Positive-class weight in [0, 1] (balanced_ce, focal)."),
    epsilon: float | None = typer.Option(None, help="Poly-1 epsilon (poly1, poly1_focal)."),
    ohem_k: int | None = typer.Option(None, "--ohem-k", help="OHEM: examples kept per batch. (default: 256)"),
    ohem_ratio: float | None = typer.Option(None, "--ohem-ratio", help="OHEM: max negatives per positive."),
    dataset: str | None = DatasetOpt,
    ratio: float | None = typer.Option(
        None, help="Negatives per positive. (default: 1000 synthetic, 10 images)"
    ),
    n_samples: int | None = NSamplesOpt,
    dim: int | None = DimOpt,
    hard_frac: float | None = HardFracOpt,
    image_size: int | None = ImageSizeOpt,
    model: str | None = ModelOpt,
    hidden: int | None = HiddenOpt,
    prior: str | None = typer.Option(None, help="Bias-init prior pi in (0, 1), or none. (default: 0.01)"),
    optimizer: str | None = OptimizerOpt,
    lr: float | None = LrOpt,
    epochs: int | None = EpochsOpt,
    batch_size: int | None = BatchSizeOpt,
    seed: int = typer.Option(0, help="Seed of initialisation and batch order."),
    data_dir: str | None = DataDirOpt,
    out: str | None = OutOpt,
    store: bool = typer.Option(True, help="Also save the record to the results store (--out)."),
) -> None:
    """Train one model and print its record (and store it, unless --no-store)."""
    from rich.table import Table

    from flx.store import Store, default_out
    from flx.train import run as run_one

    fields = _config_fields(
        loss=loss,
        gamma=gamma,
        alpha=alpha,
        epsilon=epsilon,
        ohem_k=ohem_k,
        ohem_ratio=ohem_ratio,
        dataset=dataset,
        ratio=ratio,
        n_samples=n_samples,
        dim=dim,
        hard_frac=hard_frac,
        image_size=image_size,
        model=model,
        hidden=hidden,
        prior=_prior(prior),
        optimizer=optimizer,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
    )
    config = _to_config(fields)
    _check_data([config], data_dir)
    console = _console()
    with console.status(f"training {config.loss} on {config.dataset}..."):
        record = run_one(config, data_dir)
    if store:
        Store(out or default_out()).put(record)
    table = Table(title=f"run {record['key']}", show_header=False)
    for k, v in record.items():
        if v is not None:
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)
    if record["status"] == "failed":
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------------------
# flx sweep
# ------------------------------------------------------------------------------------------------------------
@app.command()
def sweep(
    spec: str | None = typer.Argument(None, help="TOML spec (experiments/NAME.toml); options override it."),
    loss: str | None = typer.Option(None, help="Comma-separated losses. (default: focal)"),
    gamma: str | None = typer.Option(None, help="Comma-separated gammas in [0, 10]."),
    alpha: str | None = typer.Option(None, help="Comma-separated alphas in [0, 1]."),
    epsilon: str | None = typer.Option(None, help="Comma-separated Poly-1 epsilons."),
    ohem_k: str | None = typer.Option(None, "--ohem-k", help="Comma-separated OHEM batch sizes."),
    ohem_ratio: str | None = typer.Option(
        None, "--ohem-ratio", help="Comma-separated OHEM neg:pos caps, or none."
    ),
    ratio: str | None = typer.Option(None, help="Comma-separated negatives-per-positive ratios."),
    prior: str | None = typer.Option(None, help="Comma-separated bias-init priors, or none."),
    seeds: int | None = typer.Option(
        None, min=1, help="Seeds 0..N-1 per setting. (default: 1, or the spec's)"
    ),
    dataset: str | None = DatasetOpt,
    n_samples: int | None = NSamplesOpt,
    dim: int | None = DimOpt,
    hard_frac: float | None = HardFracOpt,
    image_size: int | None = ImageSizeOpt,
    model: str | None = ModelOpt,
    hidden: int | None = HiddenOpt,
    optimizer: str | None = OptimizerOpt,
    lr: float | None = LrOpt,
    epochs: int | None = EpochsOpt,
    batch_size: int | None = BatchSizeOpt,
    workers: int = typer.Option(os.cpu_count() or 1, min=1, help="Parallel worker processes."),
    data_dir: str | None = DataDirOpt,
    out: str | None = OutOpt,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the planned runs and how many are done; run nothing."
    ),
) -> None:
    """Train one model per grid point (loss x hyperparameters x seed), in parallel, skipping stored runs."""
    from flx.losses import LOSSES
    from flx.store import Store, default_out
    from flx.sweep import SpecError, dump_spec, expand, load_spec
    from flx.train import Config

    try:
        spec_data = load_spec(spec) if spec else {"config": {}, "grid": [{}], "seeds": 1}
    except SpecError as exc:
        raise FlxError(str(exc)) from None
    lists = {
        "loss": parse_names(loss, "--loss", list(LOSSES)) if loss is not None else None,
        "gamma": parse_floats(gamma, "--gamma", 0, 10) if gamma is not None else None,
        "alpha": parse_floats(alpha, "--alpha", 0, 1) if alpha is not None else None,
        "epsilon": parse_floats(epsilon, "--epsilon", -100, 100) if epsilon is not None else None,
        "ohem_k": [int(v) for v in parse_floats(ohem_k, "--ohem-k", 1, 1e9)] if ohem_k is not None else None,
        "ohem_ratio": _none_or_floats(ohem_ratio, "--ohem-ratio", 1e-9, 1e9),
        "ratio": parse_floats(ratio, "--ratio", 1, 1e9) if ratio is not None else None,
        "prior": _none_or_floats(prior, "--prior", 1e-9, 1 - 1e-9),
    }
    grids = [{**g, **{k: v for k, v in lists.items() if v is not None}} for g in spec_data["grid"]]
    grids = [g if "loss" in g or "loss" in spec_data["config"] else {**g, "loss": ["focal"]} for g in grids]
    base = {
        **spec_data["config"],
        **_config_fields(
            dataset=dataset,
            n_samples=n_samples,
            dim=dim,
            hard_frac=hard_frac,
            image_size=image_size,
            model=model,
            hidden=hidden,
            optimizer=optimizer,
            lr=lr,
            epochs=epochs,
            batch_size=batch_size,
        ),
    }
    try:
        configs = expand(Config(**base), grids, range(seeds or spec_data["seeds"]))
    except (TypeError, ValueError) as exc:
        raise FlxError(f"{spec or 'sweep'}: {exc}") from None
    store = Store(out or spec_data.get("out") or default_out())
    done = store.done()
    pending = [c for c in configs if c.key() not in done]
    console = _console()
    if dry_run:
        _print_plan(console, configs, done)
        console.print(
            f"{len(configs)} runs planned, {len(configs) - len(pending)} already in {store.path}, "
            f"{len(pending)} to run"
        )
        return
    _check_data(pending, data_dir)
    if spec:  # provenance: the grid that really runs (overrides included); flx report reads it back
        effective = {**spec_data, "config": base, "grid": grids, "seeds": seeds or spec_data["seeds"]}
        store.out.mkdir(parents=True, exist_ok=True)
        (store.out / "spec.toml").write_text(dump_spec(effective))
    console.print(
        f"sweep: {len(configs)} runs, {len(configs) - len(pending)} already done, {len(pending)} to run "
        f"on {min(workers, max(len(pending), 1))} worker(s) -> {store.path}"
    )
    counts = _run_pending(console, store, pending, workers, data_dir)
    df = store.to_dataframe()
    keys = {c.key() for c in configs}
    _print_summary(console, df[df["key"].isin(keys)] if not df.empty else df)
    if counts.get("interrupted"):
        finished = len(store.done() & keys)  # read back from the store: exact whenever the signal arrived
        console.print(
            f"interrupted: {finished} of {len(configs)} runs are in the store; run the same command again to resume"
        )
        raise typer.Exit(130)


def _none_or_floats(text: str | None, option: str, low: float, high: float):
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    nums = ",".join(t for t in items if t.lower() != "none")
    values = parse_floats(nums, option, low, high) if nums else []
    return values + [None] * sum(t.lower() == "none" for t in items)


def _print_plan(console, configs, done) -> None:
    import pandas as pd
    from rich.table import Table

    from flx.report import cell, setting_columns

    df = pd.DataFrame([c.to_dict() for c in configs])
    cols = setting_columns(df) + ["seed"]
    table = Table(title="planned runs")
    for col in ["key", *cols, "status"]:
        table.add_column(col)
    for c, row in zip(configs, df.to_dict("records"), strict=True):
        table.add_row(c.key(), *(cell(row[k]) for k in cols), "done" if c.key() in done else "pending")
    console.print(table)


def _run_pending(console, store, pending, workers, data_dir) -> dict:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from flx.sweep import make_executor

    counts = {"ok": 0, "diverged": 0, "failed": 0}
    if not pending:
        return counts
    executor = make_executor(min(workers, len(pending)))
    live = console.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[tally]}"),
        console=console,
        disable=not live,
    )
    tally = lambda: f"ok {counts['ok']} · diverged {counts['diverged']} · failed {counts['failed']}"  # noqa: E731
    with progress:
        task = progress.add_task("training", total=len(pending), tally=tally())
        try:
            for i, record in enumerate(executor.map(pending, data_dir), 1):
                store.put(record)
                counts[record["status"]] += 1
                progress.update(task, advance=1, tally=tally())
                if not live:
                    console.print(f"[{i}/{len(pending)}] {_record_line(record)}", highlight=False)
        except KeyboardInterrupt:
            counts["interrupted"] = 1
            if hasattr(executor, "shutdown"):
                executor.shutdown()
    return counts


def _print_summary(console, df) -> None:
    from rich.table import Table

    from flx.report import cell, format_mean_std, setting_columns, summarize

    summary = summarize(df)
    if summary.empty:
        console.print("no runs stored yet")
        return
    table = Table(title="summary (mean ± sample std over seeds, ok runs)")
    cols = setting_columns(df)
    for col in [*cols, "n", "diverged", "failed", "AP", "ROC-AUC", "ECE"]:
        table.add_column(col, justify="right")
    for row in summary.to_dict("records"):
        table.add_row(
            *(cell(row[c]) for c in cols),
            str(row["ok"]),
            str(row["diverged"]),
            str(row["failed"]),
            format_mean_std(row["ap_mean"], row["ap_std"]),
            format_mean_std(row["roc_auc_mean"], row["roc_auc_std"]),
            format_mean_std(row["ece_mean"], row["ece_std"], 4),
        )
    console.print(table)


# ------------------------------------------------------------------------------------------------------------
# flx report
# ------------------------------------------------------------------------------------------------------------
REPORT_FORMATS = ("md", "csv", "tex")


@app.command()
def report(
    results_dirs: list[str] | None = typer.Argument(
        None, help="Results directories. (default: --out / ./runs)"
    ),
    fmt: str = typer.Option("md,csv", "--format", help="Comma-separated: md, csv, tex."),
    plots: bool = typer.Option(True, help="Write the figures the spec asks for (some retrain a few models)."),
    index: str | None = typer.Option(
        None, help="Also write an index of all the tables here (results/README.md)."
    ),
    readme: str | None = typer.Option(None, help="Also splice the tables into this README's results block."),
    out: str | None = OutOpt,
) -> None:
    """Tables (mean ± std over seeds, best in bold, paper AP beside) and figures from stored runs."""
    from flx.report import render_index, splice_readme, write_report
    from flx.store import default_out

    formats = parse_names(fmt, "--format", list(REPORT_FORMATS))
    dirs = [Path(d) for d in (results_dirs or [out or default_out()])]
    for d in dirs:
        if not ((d / "runs.sqlite").exists() or (d / "runs.csv").exists()):
            raise FlxError(
                f"no runs in {d} (neither runs.sqlite nor runs.csv); run `flx sweep --out {d}` first"
            )
    console = _console()
    for d in dirs:
        with console.status(f"report {d}..."):
            written = write_report(d, formats=formats, plots=plots)
        console.print(f"{d}: " + ", ".join(str(p.name) for p in written.values()))
    if index:
        Path(index).write_text(render_index(dirs))
        console.print(f"index: {index}")
    if readme:
        try:
            Path(readme).write_text(splice_readme(Path(readme).read_text(), dirs))
        except (OSError, ValueError) as exc:
            raise FlxError(f"--readme {readme}: {exc}") from None
        console.print(f"readme: {readme}")


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
    except Exception as exc:  # Typer's usage errors and FlxError: anything that knows how to show itself
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        print(f"flx: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
