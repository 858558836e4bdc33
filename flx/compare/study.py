"""The comparison's Optuna studies, stored with its runs: ``DIR/study.db`` (Optuna's SQLite storage), one study
per loss family, named after it. ``optuna-dashboard sqlite:///DIR/study.db`` opens them, and a second
``flx compare`` with a larger ``--budget`` continues each study: only the new trials train.

Each trial carries, as user attributes, what the page needs without the store: the config fields it trained
(``fields``, rounded as stored), its run's ``key``, its ``status`` (ok, failed, diverged, pruned...) and its
``val_ap`` (a failed trial's is 0; a pruned one's the AP where it stopped). A study also records the comparison
it belongs to (``comparison``: the base config's key): a folder holding another comparison's studies is refused.
"""

from __future__ import annotations

from pathlib import Path

from flx.errors import ConfigError

STUDY_FILE = "study.db"


def storage_url(out: Path) -> str:
    return f"sqlite:///{Path(out).resolve() / STUDY_FILE}"


def open_study(out: Path, family: str, comparison: str, sampler, pruner, queued: list[dict]):
    """The family's study in ``out``, created when new, with the ``queued`` settings it has not had yet enqueued
    (a reopened study with a new ``--queue`` item tries it next). Trials that an interrupted call left running are
    closed as failed and their settings queued again, first: the store may already hold their runs, which then
    train nothing."""
    import optuna

    Path(out).mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=family, storage=storage_url(out), sampler=sampler, pruner=pruner, direction="maximize",
        load_if_exists=True,
    )  # fmt: skip
    owner = study.user_attrs.get("comparison")
    if owner is None:
        study.set_user_attr("comparison", comparison)
    elif owner != comparison:
        raise ConfigError(
            f"--out {out} holds a comparison of other data or settings (its study {family!r}); give another "
            "--out, or the same DATA, --set and --drop as before"
        )
    _queue_interrupted_first(study)
    for fields in queued:  # a new study's queue; on a reopened one, the settings it has not had yet
        study.enqueue_trial(fields, skip_if_exists=True)
    return study


def _queue_interrupted_first(study) -> None:
    """Closes the trials an interrupted call left running as failed and queues their settings again, ahead of
    the settings that were waiting behind them. Optuna takes waiting trials oldest first, so those are taken
    out of the queue (asked and closed as failed) and queued again after the interrupted ones: else a queue
    longer than the budget would trade the interrupted settings for its last ones."""
    import optuna

    state = optuna.trial.TrialState
    running = study.get_trials(deepcopy=False, states=(state.RUNNING,))
    if not running:
        return
    for trial in running:
        study.tell(trial.number, state=state.FAIL)
    waiting = study.get_trials(deepcopy=False, states=(state.WAITING,))
    for _ in waiting:
        study.tell(study.ask(), state=state.FAIL)  # the oldest waiting trial, out of the queue
    for trial in [*running, *waiting]:
        params = trial.params or trial.system_attrs.get("fixed_params")
        if params:  # none: a sampled trial stopped before it drew its setting, which the next ask draws anew
            study.enqueue_trial(params, skip_if_exists=False)


def done_trials(study) -> list[dict]:
    """The study's finished trials (complete or pruned), in order, as the comparison records them."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [
        {
            "trial": n,
            "fields": t.user_attrs["fields"],
            "val_ap": t.user_attrs["val_ap"],
            "status": t.user_attrs["status"],
            "key": t.user_attrs["key"],
        }
        for n, t in enumerate(study.get_trials(deepcopy=False, states=states), start=1)
    ]


def finish(study, trial, fields: dict, record, status: str) -> dict:
    """Tell the study how ``trial`` ended (a failed one scores 0; a pruned one is PRUNED) and record it."""
    import optuna

    ok = status in ("ok", "pruned") and record.val_ap == record.val_ap
    value = float(record.val_ap) if ok else 0.0
    try:
        for name, attr in (("fields", fields), ("key", record.key), ("status", status), ("val_ap", value)):
            trial.set_user_attr(name, attr)
        if status == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    except optuna.exceptions.UpdateFinishedTrialError:  # a concurrent call closed it and queued it again
        pass
    return {"fields": fields, "val_ap": value, "status": status, "key": record.key}
