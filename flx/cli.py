"""The ``flx`` command line. One command = one typed function; torch is imported inside commands only,
so ``flx --help`` answers at once. Bad input raises :class:`flx.errors.FlxError`: one line, exit code 2."""

from __future__ import annotations

import math
import sys

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
