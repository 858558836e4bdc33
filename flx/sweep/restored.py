"""Committed runs reused on another machine.

A run's key hashes its config and its data's fingerprint. A generated data set (``shapes``, ``synthetic``) is
drawn anew by every process from its parameters and seed, and another machine's floating point (its CPU, its
math library) can draw a few pixels differently: the same data set, parameters and seed, another fingerprint,
another key. A fresh clone restoring committed results (``flx runs restore``) on such a machine would then train
every committed run again.

So a sweep reuses a run that ``flx runs restore`` wrote (:meth:`flx.results.store.Store.restored`) in place of a
planned run of generated data with the same config (:meth:`flx.experiment.config.Config.config_key`: data set,
parameters and seed among it) that the store does not hold under this machine's key. The reused run keeps its
own record: its ``data_fingerprint`` says which images it trained on. Runs trained here are keyed (and their
images drawn) here. Nothing else is matched this way: a store this machine wrote, or real data whose content
changed, trains anew.
"""

from __future__ import annotations

import dataclasses

from flx.sweep.worker import Task


def reuse_restored(tasks: list[Task], store, done: set[str]) -> tuple[list[Task], int]:
    """``tasks`` with each planned run of generated data that the store lacks under its key but holds as a
    restored run of the same config (the same :meth:`~flx.experiment.config.Config.config_key`: generated data
    has no paths) re-keyed to that run, and how many were."""
    wanted = [
        i for i, t in enumerate(tasks) if t.key not in done and t.data.get("data_location") == "generated"
    ]
    restored = store.restored() & done if wanted else set()
    if not restored:
        return tasks, 0
    from flx.experiment.config import config_from_record

    stored = {
        config_from_record(r).config_key(): r["key"]
        for r in store.records(keys=sorted(restored))
        if r["data_location"] == "generated"
    }
    tasks, reused = list(tasks), 0
    for i in wanted:
        key = stored.get(tasks[i].config.config_key())
        if key is not None:
            tasks[i], reused = dataclasses.replace(tasks[i], key=key), reused + 1
    return tasks, reused
