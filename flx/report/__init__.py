"""Reports: tables in the paper's layout (:mod:`.tables`), rendered as markdown or LaTeX (:mod:`.render`),
findings, claims judged by paired intervals (:mod:`.claims`), the paper's numbers beside them
(:mod:`flx.experiment.paper`, one data file), figures (:mod:`.figures`), and the index of all tables
(:mod:`.index`). :func:`write_report` writes a folder's report."""

from flx.report.write import report, write_report

__all__ = ["report", "write_report"]
