"""Committed runs re-run at this code. One detection run (Table 1b) and one classification run (the proxy), each
the first ``ok`` run of its table by key, on one torch thread as the sweeps ran them.

The standard is "same config, data and seed, same metrics on the same machine": torch's CPU kernels round
differently under each instruction set they dispatch to (``cpu_capability``: DEFAULT, AVX2, AVX512), and the
generated shapes data goes through them too. So:

- the config part of a run's identity must not change: the committed config and fingerprint give the committed
  key, on any machine;
- where this machine generates the committed data (the same fingerprint), the rerun has the committed key;
- where it also ran on the committed instruction set, every metric is bit-identical;
- anywhere else each summary of a ranking (AP, AP50, ROC-AUC, best F1, ECE...) lies within ``ACROSS_MACHINES`` of
  the committed one: a refactor that changed what is trained moves them further than rounding does. Measured on
  AVX512 against the machine that made the tables: the proxy's test AP moved 0.0006 (its data identical); the
  Table 1b run (its data a few ulps apart) moved 0.0056 in AP and at most 0.021 (validation AP50). Rounding in
  the loss moves that short detection run further: with the old kernel computing in float64 and rounding its
  gradient once to float32 (more exact, nothing else changed) it moved 0.010 in AP and 0.049 in validation
  AP50; with issue 33's numba kernel (a few ulps from the old one) 0.017 and 0.038 (0.026 in AP75). Hence 0.06. The metrics read at one threshold (precision and recall at the best F1, balanced
  accuracy at 0.5) jump as a few examples cross it (0.067, 0.054 and 0.027 on the proxy) and are compared only
  where the rerun is exact, as is the training loss (not on a [0, 1] scale).

Same-machine bit-identity itself is tested in ``test_engine.py`` (the same config twice).
"""

import csv
import math
from pathlib import Path

import pytest
import torch

from flx.engine.run import run
from flx.experiment.config import config_from_record
from flx.experiment.metrics import METRICS

RESULTS = Path(__file__).resolve().parents[2] / "results"
ACROSS_MACHINES = 0.06  # a ranking's summary after a rounding-level change (instruction set, loss kernel)
EXACT_ONLY = {"precision", "recall", "balanced_accuracy", "train_loss"}


def _first_ok_run(table: str) -> dict:
    with open(RESULTS / table / "runs.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    row = min(rows, key=lambda r: r["key"])
    return {k: (None if v == "" else v) for k, v in row.items()}


def test_committed_configs_give_their_committed_keys():
    for table in sorted(p.name for p in RESULTS.iterdir() if (p / "runs.csv").exists()):
        with open(RESULTS / table / "runs.csv") as f:
            rows = [{k: (None if v == "" else v) for k, v in r.items()} for r in csv.DictReader(f)]
        for row in rows:
            assert config_from_record(row).key(row["data_fingerprint"]) == row["key"], (table, row["key"])


@pytest.mark.slow
@pytest.mark.parametrize("table", ["table1b", "proxy"])
def test_a_committed_run_reruns_with_its_metrics(table):
    row = _first_ok_run(table)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = run(config_from_record(row))
    finally:
        torch.set_num_threads(threads)
    assert record.status == "ok"
    same_data = record["data_fingerprint"] == row["data_fingerprint"]
    if same_data:
        assert record.key == row["key"]
    exact = same_data and row.get("cpu_capability") == record["cpu_capability"]
    compared = 0
    for metric in METRICS:
        if row.get(metric) is None:
            assert record[metric] is None or math.isnan(record[metric]), metric
            continue
        if exact:
            assert record[metric] == float(row[metric]), (metric, record[metric], row[metric])
        elif metric not in EXACT_ONLY:
            assert abs(record[metric] - float(row[metric])) <= ACROSS_MACHINES, (
                metric,
                record[metric],
                row[metric],
            )
        compared += 1
    assert compared >= 5
