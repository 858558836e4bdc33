"""``flx anatomy``, ``flx bench losses|executors|detection`` and ``flx download``."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from flx.cli.app import FlxError, app, bench_app, make_console, parse_floats, user_errors
from flx.cli.views import print_anatomy, print_bench_detection, print_bench_executors, print_bench_losses
from flx.errors import UserError
from flx.experiment.params import check


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
    from flx.losses.anatomy import loss_anatomy

    gammas = parse_floats(gamma, "--gamma", 0, math.inf)
    if not 0 < easy_pt < 1:
        raise FlxError(f"--easy-pt got {easy_pt:g}; accepted: a number in (0, 1)")
    if not 0 < hard_pt < 1:
        raise FlxError(f"--hard-pt got {hard_pt:g}; accepted: a number in (0, 1)")
    rows = loss_anatomy(gammas, easy_count, hard_count, easy_pt, hard_pt)
    print_anatomy(make_console(), rows, easy_count, hard_count, easy_pt, hard_pt)


BenchDeviceOpt = typer.Option(
    "cpu",
    "--device",
    show_default=False,
    help="Where to time: cpu, or a CUDA GPU (cuda, cuda:N). (default: cpu)",
)


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
    device: str = BenchDeviceOpt,
) -> None:
    """Time forward+backward and peak extra memory of flx's focal loss (eager and compiled) against
    torchvision's (eager and compiled), BCE-with-logits and the floor (one read, one exp, one log1p, one write per
    logit), with 1 and 2 threads, alone and beside 2 busy processes."""
    from flx.bench.losses import bench_losses as run_bench

    ns = [int(v) for v in parse_floats(sizes, "--sizes", 1, 1e9)]
    if min_run_time <= 0:
        raise UserError(f"--min-run-time got {min_run_time:g}; accepted: a number of seconds > 0")
    device = check("device", device, "--device")
    console = make_console()
    console.print(f"[dim]timing {len(ns)} sizes (forward + backward, reduction='mean')...[/]")
    rows = run_bench(
        ns,
        min_run_time=min_run_time,
        measure_memory=memory,
        busy=busy,
        device=device,
        progress=lambda line: console.print(f"[dim]  {line}[/]"),
    )
    print_bench_losses(console, rows, ns)


@bench_app.command("executors")
@user_errors
def bench_executors(
    workers: int = typer.Option(2, min=1, show_default=False, help="Workers / Ray CPUs. (default: 2)"),
) -> None:
    """Time the same 40-run sweep with the local process pool and with --executor ray (a local Ray instance
    of --workers CPUs, its start-up included), one after the other."""
    from flx.bench.executors import bench_executors as run_bench

    console = make_console()
    rows = run_bench(workers, progress=lambda line: console.print(f"[dim]  {line}[/]"))
    print_bench_executors(console, rows)


@bench_app.command("detection")
@user_errors
def bench_detection(
    canvas: str = typer.Option(
        "48,64,96", show_default=False, help="Comma-separated canvas sizes in px. (default: 48,64,96)"
    ),
    threads: str = typer.Option(
        "1,2", show_default=False, help="Comma-separated torch thread counts. (default: 1,2)"
    ),
    steps: int = typer.Option(20, min=3, show_default=False, help="Measured steps per timing. (default: 20)"),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object per condition instead of tables."
    ),
    device: str = BenchDeviceOpt,
) -> None:
    """Time flx's detection training step against torchvision's stock RetinaNet step and against its own
    network's forward + backward, OHEM (B 128, 512) against FL, and one split's evaluation against pycocotools
    and scikit-learn, per canvas size and thread count, side by side in one process."""
    sizes = [int(v) for v in parse_floats(canvas, "--canvas", 16, 512)]
    counts = [int(v) for v in parse_floats(threads, "--threads", 1, 256)]
    from flx.bench.detection import bench_detection as run_bench

    console = make_console()
    rows = run_bench(
        sizes,
        counts,
        steps,
        device=check("device", device, "--device"),
        progress=None if as_json else lambda line: console.print(f"[dim]  {line}[/]"),
    )
    print_bench_detection(console, rows, as_json)


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
    from flx.data.cifar import download_cifar10

    try:
        download_cifar10(Path(data_dir))
    except OSError as exc:
        raise FlxError(f"download of cifar10 into {data_dir} failed: {exc}") from None
    make_console().print(f"cifar10 is in {data_dir}; use --dataset cifar_catsdogs --data-dir {data_dir}")
