"""What ``flx sweep`` and ``flx run`` do, as library calls: a sweep from Python is the CLI's sweep.

:func:`sweep` merges a spec file, option overrides and ``--set`` items, plans the runs (checked and sized before
torch is imported), chooses the store (``out``, else the spec's, else ``FLX_OUT`` / ./runs) and runs the sweep;
:func:`train_one` trains one config. Both tell what they notice through ``on_event`` ("note", text) and the
events of :func:`flx.sweep.run_sweep`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flx.experiment.config import Config
from flx.experiment.plan import inapplicable, merge, plan, with_sets
from flx.experiment.spec import empty_spec, load_spec
from flx.results.store import Store, default_out
from flx.sweep.options import SweepOptions
from flx.sweep.run import SweepResult, run_one, run_sweep
from flx.sweep.worker import Event, quiet


@dataclass
class Sweep:
    """A finished (or dry-run, or interrupted) sweep: its planned configs, its store and its result."""

    configs: list[Config]
    store: Store
    result: SweepResult

    def records(self):
        """This sweep's stored records as a DataFrame (runs of other sweeps on the store left out)."""
        df = self.store.to_dataframe()
        return df[df["key"].isin(self.result.keys)] if not df.empty else df

    def finished(self) -> int:
        """Runs of this sweep in the store, read back from it (exact whenever an interruption came)."""
        return len(self.store.done() & self.result.keys)


def sweep(
    spec: str | None = None,
    overrides: dict | None = None,
    sets: Iterable[str] = (),
    options: SweepOptions | None = None,
    *,
    on_event: Event = quiet,
    **fields,
) -> Sweep:
    """Run the sweep of ``spec`` (a TOML path, or None) with ``overrides`` (config field -> list of values, or
    "seeds" -> a number) and ``sets`` ("FIELD=V1,V2" items), as ``options`` say (:class:`SweepOptions`, the
    CLI's defaults: every core, the best device; ``**fields`` replace single options, e.g. ``workers=2``).
    ``options.mlflow``: a tracking URI that each run is logged to as it finishes (what ``flx export mlflow``
    logs). Emits "plan" (planned) before the sweep starts."""
    options = (options or SweepOptions()).replace(**fields)
    overrides = with_sets(dict(overrides or {}), list(sets))
    loaded = load_spec(spec) if spec else empty_spec()
    effective = merge(loaded, overrides)
    configs = plan(effective)
    store = Store(options.out or loaded.get("out") or default_out())
    note = inapplicable(configs, [f for f in overrides if f != "seeds"])
    if note:
        on_event("note", text=note)
    on_event("plan", planned=len(configs))
    if options.mlflow is not None and not options.dry_run:
        on_event = live_mlflow(store.out, options.mlflow, on_event)
    result = run_sweep(configs, store, options, spec=effective if spec else None, on_event=on_event)
    return Sweep(configs, store, result)


def live_mlflow(out, tracking_uri: str, on_event: Event) -> Event:
    """``on_event`` that also logs each stored run to MLflow at ``tracking_uri`` as it finishes (the tracking
    store is checked first: a bad one is refused before anything trains)."""
    from flx.results.export import check_tracking, export_mlflow

    check_tracking(tracking_uri)

    def logged(kind: str, **fields) -> None:
        on_event(kind, **fields)
        if kind == "record":
            export_mlflow(out, tracking_uri)

    return logged


def train_one(
    fields: dict,
    sets: Iterable[str] = (),
    *,
    out: str | None = None,
    store: bool = True,
    device: str = "auto",
    data_dir: str | None = None,
    on_event: Event = quiet,
) -> dict:
    """``flx run``: the config of ``fields`` (one value each) and ``sets`` ("FIELD=VALUE"), checked, trained in
    this process and stored (unless ``store`` is False); returns its record."""
    fields = with_sets(dict(fields), list(sets), many=False)
    config = Config(**fields).normalized()
    config.check_runnable()
    note = inapplicable([config], [k for k in fields if k != "loss"])
    if note:
        on_event("note", text=note)
    return run_one(config, Store(out or default_out()) if store else None, data_dir, device)
