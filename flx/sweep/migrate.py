"""Re-keying runs stored by flx < 0.2 by config and data fingerprint."""

from __future__ import annotations

import math
from pathlib import Path

from flx.errors import StoreError
from flx.results.store import Store, write_atomic
from flx.sweep.worker import Event, prepare, quiet


def migrate(results_dirs: list, data_dir: str | None = None, on_event: Event = quiet) -> dict:
    """Re-key every record of each results folder (its runs.sqlite and runs.csv) by config and data fingerprint
    and add the data columns (location, fingerprint, examples per class). Records of file-backed data get the
    fingerprint of the files under ``data_dir`` (old records did not say which files they used). Every folder is
    checked before any is changed; each file is rewritten atomically; records already migrated are left as they
    are. Returns the number of records per file."""
    for d in results_dirs:
        if not (Store(d).exists() or (Path(d) / "runs.csv").exists()):
            raise StoreError(f"no runs in {d} (neither runs.sqlite nor runs.csv)")
    infos: dict = {}
    counts: dict = {}
    for d in results_dirs:
        counts |= _migrate_dir(Store(d), data_dir, infos, on_event)
    return counts


def _migrate_dir(store: Store, data_dir: str | None, infos: dict, on_event: Event) -> dict:
    import pandas as pd

    from flx.experiment.config import config_from_record
    from flx.experiment.params import DATA_COLUMNS

    def upgrade(record: dict) -> dict:
        if record.get("data_fingerprint"):
            return record
        config = config_from_record(record).normalized()
        ident = (config.dataset, config.data_params(), config.data_seed)
        if ident not in infos:
            infos[ident] = prepare([config], data_dir, on_event=on_event)[0].data
        return {**record, "key": config.key(infos[ident]["data_fingerprint"]), **infos[ident]}

    counts = {}
    if store.exists():
        store.done()  # corrupt -> StoreError before anything changes
        records = [upgrade(r) for r in store.records(with_time=True)]
        store.replace_all(records)
        counts[str(store.path)] = len(records)
    csv = store.out / "runs.csv"
    if csv.exists():
        from flx.results.records import read_runs_csv

        df = read_runs_csv(store.out)
        rows = [
            upgrade({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
            for r in df.to_dict("records")
        ]
        new = pd.DataFrame(rows)
        cols = [c for c in df.columns if c not in DATA_COLUMNS] + [c for c in DATA_COLUMNS if c in new]
        new = new.reindex(columns=cols + [c for c in new.columns if c not in cols])
        write_atomic(csv, lambda p: new.sort_values("key").to_csv(p, index=False))
        counts[str(csv)] = len(new)
    return counts
