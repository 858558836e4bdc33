"""The lab notebook lives in the specs, not in the library: which findings, paper numbers and figure settings
belong to a table is declared in its spec, never chosen by a folder's or a table's name."""

import shutil
from pathlib import Path

import pytest

from flx.experiment.paper import paper_ap, paper_tables
from flx.report.index import render_index

RESULTS = Path(__file__).resolve().parents[2] / "results"


@pytest.mark.parametrize("table", ["catsdogs", "curves", "table1b"])
def test_a_renamed_results_folder_reports_the_same_findings(tmp_path, table):
    if not (RESULTS / table / "runs.csv").is_file():
        pytest.skip(f"no committed {table}")
    renamed = tmp_path / "my_copy"
    renamed.mkdir()
    for name in ("runs.csv", "spec.toml", "table.md"):
        shutil.copy(RESULTS / table / name, renamed / name)
    original = render_index([RESULTS / table], header=False).split("\n", 1)[1]
    copied = render_index([renamed], header=False).split("\n", 1)[1]
    assert copied.split("\n\n|", 1)[0] == original.split("\n\n|", 1)[0]  # description and findings alike


def test_the_papers_numbers_are_data():
    assert paper_tables() == ("table1a", "table1b", "table1c", "table1d")
    assert paper_ap("table1a", {"loss": "balanced_ce", "alpha": 0.75}) == 31.1
    assert paper_ap("table1c", {"loss": "focal", "anchor_scales": 2.0, "anchor_ratios": 3.0}) == 34.2
    assert paper_ap("table1d", {"loss": "ohem", "ohem_k": 128, "ohem_nms": 0.5, "ohem_ratio": None}) == 32.8
    assert paper_ap("table1d", {"loss": "ohem", "ohem_k": 128, "ohem_nms": 0.5, "ohem_ratio": 3.0}) == 31.1
    assert paper_ap("table1d", {"loss": "focal"}) == 36.0
    assert paper_ap("table1b", {"loss": "ce", "gamma": 2.0}) is None


def test_a_spec_chooses_the_model_its_single_model_figures_show(tmp_path):
    from flx.experiment.spec import validate_spec
    from flx.report.figures import SHOWN, _shown
    from flx.report.tables import ReportSpec

    assert _shown(ReportSpec(name="x")) == SHOWN
    assert _shown(ReportSpec(name="x", shown={"loss": "focal", "gamma": 1.0})) == {
        "loss": "focal",
        "gamma": 1.0,
    }
    with pytest.raises(Exception, match="shown got"):
        validate_spec({"config": {}, "grid": [{}], "report": {"shown": {"gama": 1.0}}}, "s.toml")
