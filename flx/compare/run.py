"""The comparison: tune each family on the validation split, declare the claims, retrain the finalists on
paired seeds, judge the claims, write the page."""

from __future__ import annotations

import dataclasses
import functools
import signal
import sys
import threading
from pathlib import Path

from flx.compare.result import CompareResult, completed, startup_trials
from flx.compare.space import (
    DETECTION_SPACES,
    FAMILIES,
    SPACES,
    claims,
    paper_trials,
    parse_families,
    parse_queue,
    spaces,
    suggest,
)
from flx.errors import ConfigError
from flx.experiment.config import Config
from flx.experiment.params import LOSS_PARAMS, check

SAMPLER_SEED = 0  # TPE's seed (per family: this plus the family's position in FAMILIES)
TUNING_SEED = 0  # the seed every trial trains with; the finalists' paired seeds are 1..N
RUNG = 4  # a prunable trial first trains 1/RUNG of its steps; Optuna's median pruner then decides


TUNED = (
    "loss",
    "seed",
    *(name for space in (*SPACES.values(), *DETECTION_SPACES.values()) for name in space),
)  # not for --set (lr: a detector's)


def base_config(
    data: str, label: str | None, positive: str | None, sets: list[str] = (), drop: str | None = None
) -> Config:
    """The comparison's data: a table or image folder (a path) or a data set's name, with ``sets`` ("FIELD=VALUE":
    any config field but those the comparison tunes or pairs) and ``drop`` (a table's columns left out), checked
    (before torch)."""
    from flx.experiment.plan import parse_sets
    from flx.experiment.registries import DATASETS

    fields = parse_sets(list(sets), many=False)
    tuned = [name for name in fields if name in TUNED or name in ("dataset", "data")]
    if tuned:
        raise ConfigError(
            f"--set got {tuned[0]}; accepted: a field the comparison does not tune or pair (not "
            f"{', '.join(('dataset', 'data', *TUNED))}: DATA names the data, --families and --budget tune the rest)"
        )
    if drop is not None:
        fields["drop"] = check("drop", drop, "--drop")
    if Path(data).expanduser().exists():
        config = Config(data=data, label=label, positive=positive, **fields)
    elif data in DATASETS:
        config = Config(dataset=data, **({"positive": positive} if positive else {}), **fields)
    else:
        raise ConfigError(
            f"DATA got {data!r}; accepted: a .csv, .tsv or .parquet file, an image folder, or a data set "
            f"({', '.join(DATASETS)})"
        )
    # normalised for the default loss, which blanks the fields of other losses (ohem_norm): put them back, so that
    # each family's runs are built with them (and normalised again, per family)
    config = dataclasses.replace(config.normalized(), **{k: v for k, v in fields.items() if k in LOSS_PARAMS})
    if "lr" in fields and not is_detection(config):
        raise ConfigError(
            "--set got lr; accepted for a detector only (its learning rate is the same for every family): a "
            "classifier's comparison searches the learning rate of each family"
        )
    config.check_runnable()
    return config


def _paired_seeds(value) -> int:
    """``--seeds``: the finalists' paired seeds, 2 at least (the message gives the range that is accepted)."""
    from flx.experiment.params import MAX_RUNS, show_value

    try:
        seeds = check("seeds", value, "--seeds")
    except ConfigError:
        seeds = None
    if seeds is None or seeds < 2:
        raise ConfigError(
            f"--seeds got {show_value(value, int)}; accepted: an integer in [2, {MAX_RUNS:g}] (a paired verdict "
            "needs two seeds)"
        )
    return seeds


def is_detection(config: Config) -> bool:
    from flx.experiment.registries import get_dataset

    return get_dataset(config.dataset).task == "detection"


class CompareInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped a comparison's runs (``signal``: "SIGINT" or "SIGTERM"); what finished is stored."""

    def __init__(self, signal: str):
        super().__init__(signal)
        self.signal = signal


_STOP: dict = {"signal": None, "depth": 0}  # the signal that stopped the comparison; nested wrappers


def check_stopped() -> None:
    """Raise :class:`CompareInterrupted` if a signal came: its exception may have been swallowed where Python
    ignores them (a garbage-collection callback), so every batch of runs checks first."""
    if _STOP["signal"]:
        raise CompareInterrupted(_STOP["signal"])


def interruptible(function):
    """Ctrl-C and SIGTERM anywhere in ``function`` (between runs too: in Optuna, rendering the page) raise
    :class:`CompareInterrupted`, so a comparison stops in one line and its ``finally`` blocks stop the workers; the
    sweeps inside install their own SIGTERM handler while they train, and put this one back. The signal is also
    noted (:func:`check_stopped`), so an exception Python swallowed still stops the next batch."""

    def on_signal(signum, frame):
        _STOP["signal"] = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
        raise CompareInterrupted(_STOP["signal"]) if signum == signal.SIGTERM else KeyboardInterrupt

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from flx.sweep.run import quiet_unraisable

        previous, hook = {}, sys.unraisablehook
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
            sys.unraisablehook = quiet_unraisable(hook)  # a swallowed stop is noted, not printed
        if _STOP["depth"] == 0:
            _STOP["signal"] = None
        _STOP["depth"] += 1
        try:
            out = function(*args, **kwargs)
            check_stopped()
            return out
        except KeyboardInterrupt:
            raise CompareInterrupted("SIGINT") from None
        finally:
            _STOP["depth"] -= 1
            for s, handler in previous.items():
                signal.signal(s, handler)
            sys.unraisablehook = hook

    return wrapper


@interruptible
def run_compare(
    data: str,
    label: str | None = None,
    positive: str | None = None,
    families: str | list = ",".join(FAMILIES),
    budget: int = 12,
    seeds: int = 5,
    out: str | Path = "runs/compare",
    workers: int | None = None,
    data_dir: str | None = None,
    on_event=lambda kind, **fields: None,
    mlflow: str | None = None,
    prune: bool = True,
    sets: list[str] = (),
    drop: str | None = None,
    queue: list[str] = (),
    queue_paper: bool = True,
    recheck: str | None = None,
    more_seeds: str | None = None,
) -> CompareResult:
    """``flx compare``: each family gets ``budget`` trials (seed 0, chosen on validation AP, a failed trial
    scoring 0), its best configuration is retrained on seeds 1..``seeds`` with the claims of
    :func:`flx.compare.space.claims` written to ``out/spec.toml`` first, and ``out/compare.md`` holds the
    verdicts, the finalists and the figures. Every run is an ordinary run of the store at ``out``: a second
    call trains nothing. ``mlflow``: a tracking URI each run is logged to as it finishes. ``prune``: each trial
    after TPE's random start first trains a quarter of its steps and stops there (status "pruned") when Optuna's
    median pruner, on its validation curve, says it trails the complete trials (:func:`rung_steps`). Events: "trial"
    (family, trial, fields, val_ap, status), "finals" (configs), "page"; "plan" (families, budget, seeds, total:
    runs planned) first and "final" (record) as each finalist finishes, for progress. ``sets``: "FIELD=VALUE"
    items fixed for every run (steps, model, image size...); ``drop``: a table's columns left out. Each family's
    study first tries the paper's settings (``queue_paper``: :func:`flx.compare.space.paper_trials`), then the
    ``queue`` items ("FAMILY:FIELD=VALUE,..."), within its budget. The studies are stored in ``out/study.db``
    (Optuna's SQLite storage, one study per family): a second call with a larger budget trains only the new
    trials. ``recheck`` ("A-B", seeds after the finalists'): every settled verdict re-run on those seeds, each
    family fixed to its chosen setting, in ``out/recheck/``; ``more_seeds`` ("A-B", apart from those): every
    inconclusive verdict re-run on that larger fresh sample, in ``out/more_seeds/`` (:mod:`flx.compare.recheck`)."""
    base = base_config(data, label, positive, sets, drop)
    detection = is_detection(base)
    text = families if isinstance(families, str) else ",".join(families)
    families = parse_families(text, detection)
    queued = parse_queue(list(queue), families, detection)
    budget = check("seeds", budget, "--budget")
    seeds = _paired_seeds(seeds)
    from flx.compare.recheck import MORE_SEEDS, RECHECK, parse_recheck
    from flx.results.store import Store

    fresh = {RECHECK: parse_recheck(recheck, seeds) if recheck is not None else None}
    taken = fresh[RECHECK] or []
    fresh[MORE_SEEDS] = (
        parse_recheck(more_seeds, seeds, MORE_SEEDS, taken) if more_seeds is not None else None
    )
    if mlflow is not None:  # before the data is read: a store MLflow cannot use is refused at once
        from flx.results.export import check_tracking

        check_tracking(mlflow)

    result = CompareResult(Path(out), families, budget, seeds, mlflow=mlflow)
    result.splits = split_counts(base, data_dir)  # refused here when the test split cannot carry a verdict
    result.rung = rung_steps(base) if prune and not detection else None
    result.trial_workers = trial_workers(detection, workers)
    result.detection, result.base_lr = detection, base.lr
    result.queued = {
        f: [*(paper_trials(f, detection) if queue_paper else []), *queued.get(f, [])] for f in families
    }
    result.finals_steps = base.normalized().steps
    on_event("plan", families=families, budget=budget, seeds=seeds, total=len(families) * (budget + seeds))
    from flx.results.lock import hold

    # one comparison at a time writes the folder's spec, studies and page
    with hold(result.out, "flx compare"):
        _compare(base, result, Store(result.out), fresh, workers, data_dir, on_event)
    return result


def _compare(base: Config, result: CompareResult, store, fresh, workers, data_dir, on_event) -> None:
    """Tune, retrain the finalists, judge, write the page (and the fresh seeds: ``fresh``, kind -> seeds)."""
    from flx.compare.baselines import fit_baselines
    from flx.compare.page import write_page
    from flx.report.tables import load_runs

    _tune_all(base, store, data_dir, result, on_event)
    _finals(base, result, store, workers, data_dir, on_event)
    finals = list(range(1, result.seeds + 1))  # each seed on its own split where they resample
    result.baselines = fit_baselines(base, data_dir, finals, resampled=result.resampled is not None)
    result.page = write_page(result)
    load_runs(result.out)  # every run, trials too, in out/runs.csv: the committed record
    on_event("page", path=result.page)
    for kind, seeds in fresh.items():
        result.fresh[kind.folder] = _recheck(base, result, kind, seeds, workers, data_dir, on_event)


def _recheck(base: Config, result: CompareResult, kind, seeds, workers, data_dir, on_event):
    """``kind``'s verdicts on the fresh ``seeds`` (--recheck, --more-seeds), else those stored by an earlier
    call."""
    from flx.compare.recheck import run_recheck, stored_recheck

    if seeds is None:
        return stored_recheck(result, kind)

    def train(configs, store, spec):
        on_event("recheck", configs=configs, option=kind.option)
        on_record = lambda record: on_event("final", record=record)  # noqa: E731
        return _train(configs, store, data_dir, result, workers=workers, spec=spec, on_record=on_record)

    return run_recheck(base, result, seeds, train, kind)


def _train(
    configs: list, store, data_dir, result: CompareResult, workers=1, spec=None, on_record=None, runner=None
) -> list[dict]:
    """The records of ``configs`` (trained unless the store has them), in order; ``on_record(record)`` as each
    finishes. ``runner``: an executor to train on (a kept pool), else one made for ``workers``. Raises
    :class:`CompareInterrupted` when Ctrl-C or SIGTERM stopped them."""
    from flx.sweep.executors import SerialExecutor
    from flx.sweep.run import run_sweep

    check_stopped()

    def on_event(kind, **fields):
        if kind == "record" and on_record is not None:
            on_record(fields["record"])

    executor = runner or (SerialExecutor() if workers == 1 else None)
    done = run_sweep(
        configs, store, workers=workers, data_dir=data_dir, runner=executor, spec=spec, on_event=on_event
    )
    result.trained += sum(done.counts.values())
    if done.interrupted:
        raise CompareInterrupted(done.interrupted)
    if result.mlflow is not None and sum(done.counts.values()):
        from flx.results.export import export_mlflow

        export_mlflow(store.out, result.mlflow)
    records = {r.key: r for r in store.records(keys=[t.key for t in done.tasks])}  # these runs only
    return [records[t.key] for t in done.tasks]


MIN_TEST_POSITIVES = 10  # below this a test split cannot carry a verdict: flx compare refuses


def resampled_ratio(base: Config, splits: dict) -> float | None:
    """The test-to-training rows ratio when the finalists' seeds each draw their own split (a table flx splits
    itself, whose ``data_seed`` draws the split; synthetic data, drawn anew, whose splits never overlap: 0), for
    the corrected resampled t; None when the split is given (a split column, a test file, an image folder's own
    folders) and the pairs carry initialisation and batch order only."""
    if base.dataset == "synthetic" or is_detection(base):  # generated anew for each data_seed
        return 0.0
    if base.dataset == "table" and base.split_column is None and base.test is None and splits:
        return splits["test"][0] / splits["train"][0]
    return None


def split_counts(base: Config, data_dir: str | None) -> dict[str, tuple[int, int]]:
    """(rows, positives) of the train, validation and test splits of the comparison's data (loaded once; the
    trials reuse it). DataError, before anything trains, when the test split holds fewer than
    :data:`MIN_TEST_POSITIVES` positives."""
    from flx.data.load import load
    from flx.errors import DataError

    train, test, meta = load(base.dataset, base.data_params(), base.data_seed, data_dir)
    splits = {"train": train, "validation": meta.get("val"), "test": test}
    counts = {name: (len(s), int(s.n_pos)) for name, s in splits.items() if s is not None}
    rows, positives = counts["test"]
    if positives < MIN_TEST_POSITIVES:
        raise DataError(
            f"{meta['location']}: the test split holds {positives} positive(s) in {rows} rows; a verdict needs at "
            f"least {MIN_TEST_POSITIVES} (a larger table, or a test split of your own with --test)"
        )
    return counts


def trial_workers(detection: bool, workers: int | None) -> int:
    """How many trials train side by side: ``workers`` (default: the cores) for a detector, whose runs take
    minutes, so that every core trains; one for a classifier, whose runs are often shorter than a worker
    process's start."""
    if not detection:
        return 1
    import os

    return max(1, workers if workers is not None else (os.cpu_count() or 1))


def rung_steps(config: Config) -> int | None:
    """The step where a trial may be pruned: a quarter of its steps, on its validation curve's grid (None for
    a config without a curve, or too short to have a point before its end). The training rate is constant for
    classifiers and the run's batches are drawn in the same order however long it is, so a run of this many
    steps is exactly the start of the full one: its curve is the full curve's first points."""
    config = config.normalized()
    if not (config.steps and config.eval_every):
        return None
    rung = config.steps // RUNG // config.eval_every * config.eval_every
    return rung if 0 < rung < config.steps else None


def _report(trial, record, after: int) -> int:
    """Report the run's validation curve past step ``after`` to the Optuna trial; returns its last step."""
    from flx.report.figures import val_curve

    curve = [(step, ap) for step, ap in val_curve(record) or [] if step > after]
    for step, ap in curve:
        trial.report(ap if ap == ap else 0.0, step)  # a NaN point (a failed evaluation) counts as 0
    return curve[-1][0] if curve else after


def _tune_all(base: Config, store, data_dir, result: CompareResult, on_event) -> None:
    """Every family's trials and its finalist (its best complete trial on validation), on one pool of workers
    kept across them where trials train side by side (each worker renders or loads the data once)."""
    pool = None
    if result.trial_workers > 1:
        from flx.sweep.executors import KeptPoolExecutor

        pool = KeptPoolExecutor(result.trial_workers)
    try:
        for family in result.families:
            result.trials[family] = _tune(
                base, family, result.budget, store, data_dir, result, on_event, pool
            )
            best = max(completed(result.trials[family]), key=lambda t: t["val_ap"])
            result.finalists[family] = best["fields"]
    finally:
        if pool is not None:
            pool.close()  # no worker outlives the trials, Ctrl-C and errors included


def _tune(base: Config, family: str, budget: int, store, data_dir, result, on_event, pool=None) -> list[dict]:
    """The family's first ``budget`` finished trials, trained unless its stored study has them (TPE, seeded; its
    queued settings first), ``result.trial_workers`` at a time (Optuna's constant liar stands in for the ones
    still training). With a rung (:func:`rung_steps`), each trial after as many as TPE's random start first
    trains to it and reports its validation curve to Optuna's median pruner; a pruned trial ends there, the
    others train in full."""
    import optuna

    from flx.compare.study import done_trials, open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = startup_trials(budget)
    parallel = result.trial_workers > 1
    sampler = optuna.samplers.TPESampler(
        seed=SAMPLER_SEED + FAMILIES.index(family), n_startup_trials=startup, constant_liar=parallel
    )
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=startup) if result.rung else optuna.pruners.NopPruner()
    )
    lr = {"lr": base.lr} if result.search_lr else {}
    queued = [{**lr, **fields} for fields in result.queued.get(family, [])]
    study = open_study(result.out, family, base.config_key(), sampler, pruner, queued)
    trials = done_trials(study)[:budget]
    for t in trials:
        on_event("trial", family=family, stored=True, **t)
    seen = [t["fields"] for t in trials]
    while len(trials) < budget:
        batch = []
        for n in range(len(trials) + 1, min(budget, len(trials) + result.trial_workers) + 1):
            trial, fields = _ask_new(study, family, result.detection, seen)
            seen.append(fields)
            config = Config(**{**base.to_dict(), "loss": family, "seed": TUNING_SEED, **fields})
            batch.append((n, trial, fields, config))
        for entry in _trial_batch(study, batch, startup, store, data_dir, result, pool):
            trials.append(entry)
            on_event("trial", family=family, stored=False, **entry)
    return trials


REPEATS = 50  # asks for a setting the study has not tried before a repeat is taken (a space it has exhausted)


def _ask_new(study, family: str, detection: bool, seen: list[dict]):
    """The next trial and its fields, never a setting this study has tried (or is training) while the space has
    another: a repeat TPE proposes is closed as failed (it neither counts against the budget nor trains again);
    after :data:`REPEATS` of them, on a space of choices only, the first setting not tried is queued (TPE settles on
    the best choice and seldom proposes the rest)."""
    import itertools

    import optuna

    for attempt in range(REPEATS + 1):
        trial = study.ask()
        fields = suggest(trial, family, detection)
        if fields not in seen or attempt == REPEATS:
            return trial, fields
        trial.set_user_attr("repeat", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        space = spaces(detection)[family]
        if attempt == REPEATS - 1 and all(isinstance(v, list) for v in space.values()):
            settings = (
                dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())
            )
            untried = next((f for f in settings if f not in seen), None)
            if untried is not None:
                study.enqueue_trial(untried)
    return trial, fields


def _trial_batch(study, batch: list, startup: int, store, data_dir, result, pool=None) -> list[dict]:
    """Train a batch of asked trials ``[(number, trial, fields, config)]`` side by side on ``pool`` (their rung
    runs first, where they have one) and tell the study how each ended."""
    from flx.compare.study import finish

    records, status, reported = {}, {}, {}
    rung = [b for b in batch if result.rung and b[0] > startup]  # the pruner's first trials: no rung run
    if rung:
        configs = [dataclasses.replace(b[3], steps=result.rung) for b in rung]
        for (n, trial, _, _), record in zip(
            rung, _train(configs, store, data_dir, result, len(rung), runner=pool), strict=True
        ):
            records[n], reported[n] = record, _report(trial, record, 0)
            if record.status != "ok":  # the full run would start the same way: the trial ends here
                status[n] = record.status
            elif trial.should_prune():
                status[n] = "pruned"
    full = [b for b in batch if b[0] not in status]
    if full:
        done = _train([b[3] for b in full], store, data_dir, result, len(full), runner=pool)
        for (n, trial, _, _), record in zip(full, done, strict=True):
            records[n], status[n] = record, record.status
            _report(trial, record, reported.get(n, 0))
    return [{"trial": n, **finish(study, t, f, records[n], status[n])} for n, t, f, _ in batch]


def _finals(base: Config, result: CompareResult, store, workers, data_dir, on_event) -> None:
    """The finalists on seeds 1..N, the claims written to the store's spec before they train, then judged."""
    import pandas as pd

    from flx.report.claims import judge_all

    seeds = f"1-{result.seeds}"
    result.resampled = resampled_ratio(base, result.splits)
    declared = claims(result.families, result.seeds, result.resampled)
    spec = result.finals_spec(
        base, result.families, seeds, declared, name="compare",
        description=f"flx compare: each family's best of {result.budget} trials on validation, on seeds {seeds}"
        + (", each seed on its own split (data_seed = seed)" if result.resampled is not None else ""),
    )  # fmt: skip
    configs = [result.finalist(base, f, s) for f in result.families for s in range(1, result.seeds + 1)]
    on_event("finals", configs=configs)
    records = _train(
        configs, store, data_dir, result, workers=workers, spec=spec,
        on_record=lambda record: on_event("final", record=record),
    )  # fmt: skip
    result.runs = pd.DataFrame(records)
    result.verdicts = judge_all(declared, result.runs)
