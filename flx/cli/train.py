"""``flx run`` and ``flx sweep``."""

from __future__ import annotations

import typer

from flx.cli.app import app, make_console, user_errors
from flx.cli.options import DataDirOpt, OutOpt, config_options, param_option, parse_fields
from flx.cli.views import SweepView, note_printer, print_plan, print_record, print_summary
from flx.experiment.params import check, check_seeds
from flx.sweep.options import SweepOptions


@app.command()
@user_errors
@config_options(many=False)
def run(
    fields: dict,
    set_: list[str] = typer.Option(
        [], "--set", help="FIELD=VALUE: any config field (repeatable), e.g. data_seed=1."
    ),
    device: str | None = param_option("device", default="auto"),
    data_dir: str | None = DataDirOpt,
    out: str | None = OutOpt,
    store: bool = typer.Option(
        True, show_default=False, help="Also save the record to the results store (--out). (default: on)"
    ),
) -> None:
    """Train one model and print its record (and store it, unless --no-store)."""
    fields = parse_fields(fields, many=False)
    device = check("device", device or "auto", "--device")
    from flx.sweep.commands import train_one  # after the checks: a bad value is refused at once

    console = make_console()
    with console.status("training..."):
        record = train_one(
            fields,
            set_,
            out=out,
            store=store,
            device=device,
            data_dir=data_dir,
            on_event=note_printer(console),
        )
    print_record(console, record, stored=store)
    if record.status == "failed":
        raise typer.Exit(1)


@app.command()
@user_errors
@config_options(many=True)
def sweep(
    fields: dict,
    spec: str | None = typer.Argument(None, help="TOML spec (experiments/NAME.toml); options override it."),
    seeds: str | None = param_option("seeds", default="1, or the spec's"),
    workers: str | None = param_option("workers", default="the available cores; on GPUs --per-gpu per GPU"),
    device: str | None = param_option("device", default="auto"),
    per_gpu: str | None = param_option("per_gpu", default="1"),
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
    mlflow: str | None = typer.Option(
        None,
        "--mlflow",
        help="Log each run to this MLflow tracking URI as it finishes (what flx export mlflow logs), e.g. "
        "sqlite:///mlflow.db.",
    ),
) -> None:
    """Train one model per grid point (loss x hyperparameters x seed), in parallel, skipping stored runs."""
    overrides = parse_fields(fields, many=True)
    if seeds is not None:
        overrides["seeds"] = check_seeds(seeds, "--seeds")
    options = SweepOptions.parse(
        workers=workers,  # None: all cores
        device=device,
        per_gpu=per_gpu,
        executor=executor,
        ray_address=ray_address,
        out=out,
        data_dir=data_dir,
        dry_run=dry_run,
        mlflow=mlflow,
    )
    from flx.sweep.commands import sweep as run  # after the checks: a bad value is refused at once

    console = make_console()
    with SweepView(console) as view:
        done = run(spec, overrides, set_, options, on_event=view.event)
    if dry_run:
        print_plan(console, done.result, done.store)
        return
    print_summary(console, done.records())
    if done.result.interrupted:
        console.print(
            f"interrupted ({done.result.interrupted}): {done.finished()} of {len(done.configs)} runs are in the "
            "store; run the same command again to resume"
        )
        raise typer.Exit(done.result.exit_code)
    if not done.result.succeeded:
        failed = done.result.counts["failed"]
        typer.echo(
            f"flx: sweep: every run failed ({failed} failed); flx runs --status failed shows why", err=True
        )
        raise typer.Exit(1)
