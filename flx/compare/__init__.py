"""``flx compare``: does focal loss help on my data? Each loss family tuned on the same budget on validation
data (Optuna's TPE, seeded), its best configuration retrained on paired seeds, and claims declared before
those runs judged like the replication's (paired differences, 95% intervals, signed-rank test, failures
counted). :func:`run_compare` is what the command calls."""

from flx.compare.run import CompareResult, run_compare

__all__ = ["CompareResult", "run_compare"]
