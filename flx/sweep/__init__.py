"""Sweeps as a library: :func:`run_sweep` trains the runs of a plan not yet in the store on an executor
(:mod:`.executors`: serial, a local pool of processes, Ray), stores each record as it finishes and resumes
where it stopped; :func:`sweep` is what ``flx sweep`` does (spec, options and ``--set`` merged, planned, a store
chosen, run) with one :class:`SweepOptions`; :func:`run_one` trains one run."""

from flx.sweep.commands import Sweep, sweep, train_one
from flx.sweep.options import SweepOptions
from flx.sweep.run import SweepResult, run_one, run_sweep

__all__ = ["Sweep", "SweepOptions", "SweepResult", "run_one", "run_sweep", "sweep", "train_one"]
