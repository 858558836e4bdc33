"""Committed runs re-run at this code: the same key and bit-identical metrics (the refactors of 0.4 changed
the shape of the code, not its results). One detection run (Table 1b) and one classification run (the
proxy), each the first ``ok`` run of its table by key, on one torch thread as the sweeps ran them."""

import csv
import math
from pathlib import Path

import pytest
import torch

from flx.engine.run import run
from flx.experiment.config import config_from_record
from flx.experiment.metrics import METRICS

RESULTS = Path(__file__).resolve().parents[2] / "results"


def _first_ok_run(table: str) -> dict:
    with open(RESULTS / table / "runs.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    row = min(rows, key=lambda r: r["key"])
    return {k: (None if v == "" else v) for k, v in row.items()}


@pytest.mark.slow
@pytest.mark.parametrize("table", ["table1b", "proxy"])
def test_a_committed_run_reruns_with_its_key_and_bit_identical_metrics(table):
    row = _first_ok_run(table)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = run(config_from_record(row))
    finally:
        torch.set_num_threads(threads)
    assert record.status == "ok" and record.key == row["key"]
    compared = 0
    for metric in METRICS:
        if row.get(metric) is None:
            assert record[metric] is None or math.isnan(record[metric]), metric
            continue
        assert record[metric] == float(row[metric]), (metric, record[metric], row[metric])
        compared += 1
    assert compared >= 5
