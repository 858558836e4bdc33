"""``flx compare``: does focal loss help on my data?"""

from __future__ import annotations

import typer

from flx.cli.app import app, make_console, user_errors
from flx.cli.options import DataDirOpt

RecheckOpt = typer.Option(
    None,
    "--recheck",
    metavar="A-B",
    help="Then re-run every settled verdict (replicated or contradicted) on fresh seeds A to B, after the "
    "finalists' (e.g. 6-10), each family fixed to its chosen setting: DIR/recheck/recheck.md.",
)
MoreSeedsOpt = typer.Option(
    None,
    "--more-seeds",
    metavar="A-B",
    help="Then re-run every inconclusive verdict on a larger fresh sample, seeds A to B (e.g. 11-20, apart from "
    "--recheck's), each family fixed to its chosen setting, judged on those seeds alone: "
    "DIR/more_seeds/more_seeds.md.",
)


@app.command()
@user_errors
def compare(
    data: str = typer.Argument(
        ..., help="A .csv/.tsv/.parquet table, an image folder, or a data set's name."
    ),
    label: str | None = typer.Option(None, help="Tables: the column holding each row's class."),
    positive: str | None = typer.Option(None, help="The minority (positive) class's label value or folder."),
    families: str = typer.Option(
        "ce,balanced_ce,focal,poly1,poly1_focal",
        show_default=False,
        help="Loss families to compare, comma-separated. (default: ce,balanced_ce,focal,poly1,poly1_focal)",
    ),
    budget: str = typer.Option(
        "12", show_default=False, help="Trials per family, on the validation split. (default: 12)"
    ),
    seeds: str = typer.Option("5", show_default=False, help="Paired seeds of the finalists. (default: 5)"),
    workers: str | None = typer.Option(
        None, help="Worker processes for the finalists, and for a detector's trials. (default: the cores)"
    ),
    out: str = typer.Option("runs/compare", help="Results folder (its store, spec.toml, compare.md)."),
    data_dir: str | None = DataDirOpt,
    mlflow: str | None = typer.Option(
        None,
        "--mlflow",
        help="Log each run to this MLflow tracking URI as it finishes (e.g. sqlite:///mlflow.db).",
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="FIELD=VALUE: a config field fixed for every run (repeatable), e.g. steps=300, image_size=64, "
        "model=linear; not the fields the comparison tunes.",
    ),
    drop: str | None = typer.Option(
        None,
        "--drop",
        metavar="COL,...",
        help="Tables: columns to leave out of the features, comma-separated.",
    ),
    queue: list[str] = typer.Option(
        [],
        "--queue",
        metavar="FAMILY:FIELD=VALUE,...",
        help="A setting tried first in FAMILY's study, within its budget (repeatable), e.g. focal:gamma=1,alpha=0.5.",
    ),
    cell: list[str] = typer.Option(
        [],
        "--cell",
        metavar="FIELD=VALUE,...",
        help="One comparison per cell of a map (repeatable), each in DIR/FIELD-VALUE_.../, then DIR/map.md and "
        "DIR/regime_map.png: e.g. --cell image_size=64,clutter=0 --cell image_size=128,clutter=0.",
    ),
    paper_trials: bool = typer.Option(
        True,
        show_default=False,
        help="Try the focal-loss paper's settings first, within the budget: for a classifier balanced_ce alpha "
        "0.75, focal gamma 2, alpha 0.25; for a detector every point of Table 1a, 1b and 1d, best first. "
        "(default: on)",
    ),
    recheck: str | None = RecheckOpt,
    more_seeds: str | None = MoreSeedsOpt,
    prune: bool = typer.Option(
        True,
        show_default=False,
        help="Stop a trial at a quarter of its steps when its validation AP trails the median of the "
        "complete trials there (Optuna's median pruner). (default: on)",
    ),
) -> None:
    """Each loss family tuned on the same budget (Optuna TPE, seeded), the best of each retrained on paired
    seeds, and claims declared before those runs judged like the paper's: DIR/compare.md. Resumable; the studies
    are stored in DIR/study.db, and a larger --budget later trains only the new trials."""
    from flx.experiment.params import check

    n_workers = check("workers", workers, "--workers") if workers is not None else None

    options = dict(label=label, positive=positive, families=families, budget=budget, seeds=seeds,
                   workers=n_workers, data_dir=data_dir, mlflow=mlflow, prune=prune, sets=set_, drop=drop,
                   queue=queue, queue_paper=paper_trials, recheck=recheck, more_seeds=more_seeds)  # fmt: skip
    _compare(make_console(), data, out, cell, options)


def _compare(console, data: str, out: str, cell: list[str], options: dict) -> None:
    """Run one comparison, or one per cell, with progress lines, and print where the page is; Ctrl-C and SIGTERM
    end it in one line (exit 130 / 143)."""
    from flx.compare.run import CompareInterrupted  # after the checks

    try:
        _run(console, data, out, cell, options)
    except CompareInterrupted as exc:
        console.print(
            f"interrupted ({exc.signal}): the finished runs are stored; run the same command again to resume"
        )
        raise typer.Exit(130 if exc.signal == "SIGINT" else 143) from None


def _run(console, data: str, out: str, cell: list[str], options: dict) -> None:
    from flx.compare import run_compare

    printer = _printer(console)
    if cell:
        from flx.compare.cells import run_cells

        with console.status("comparing..."):
            _, results, page = run_cells(data, cell, out, on_event=printer, **options)
        trained = sum(r.trained for r in results)
        console.print(f"\n{page} ({len(results)} cells, {trained} runs trained now)", highlight=False)
        return
    with console.status("comparing..."):
        result = run_compare(data, out=out, on_event=printer, **options)
    console.print("\n".join(result.summary_lines()), highlight=False, markup=False)
    fresh = "".join(f", {r.page}" for r in result.fresh.values() if r is not None)
    console.print(f"\n{result.page}{fresh} ({result.trained} runs trained now)", highlight=False)


def _printer(console):
    """Progress as log lines (readable in a terminal and in a CI log): each trial and each finalist with how many
    runs of the comparison are done, the family's count, and an ETA from the pace so far."""
    import time

    from flx.compare.result import setting_text

    state = {"done": 0, "total": 0, "budget": 0, "started": time.perf_counter(), "finals": 0}

    def prefix() -> str:
        state["done"] += 1
        done, total = state["done"], max(state["total"], state["done"])
        left = (time.perf_counter() - state["started"]) / done * (total - done)
        eta = f", ETA {left / 60:.0f} min" if left >= 90 else f", ETA {left:.0f} s" if left >= 1 else ""
        return f"[{done}/{total}{eta}]"

    def on_event(kind: str, **f) -> None:
        if kind == "cell":
            state.update(done=0, started=time.perf_counter())
            console.print(f"cell {f['index']}/{f['total']}: {', '.join(f['cell'])}", highlight=False)
        elif kind == "plan":
            state.update(total=f["total"], budget=f["budget"])
        elif kind == "trial":
            fields = setting_text(f["fields"])
            console.print(
                f"{prefix()} {f['family']} trial {f['trial']}/{state['budget']}: {fields}: val AP "
                f"{f['val_ap']:.3f} ({f['status']}{', stored' if f.get('stored') else ''})",
                highlight=False,
            )
        elif kind == "finals":
            state["finals"] = len(f["configs"])
            console.print(f"finalists: {state['finals']} runs (claims written to spec.toml)", highlight=False)
        elif kind == "recheck":
            state["total"] += len(f["configs"])
            console.print(f"{f['option']}: {len(f['configs'])} runs on fresh seeds", highlight=False)
        elif kind == "final":
            r = f["record"]
            ap = f"test AP {r.ap:.3f}" if r.status == "ok" else r.status
            console.print(f"{prefix()} finalist {r.loss} seed {r.seed}: {ap}", highlight=False)

    return on_event
