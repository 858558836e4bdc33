"""LaTeX tables that fit a column of a two-column paper as they are (no \\resizebox, 8 pt), the claims exported,
--format latex."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flx.cli import app
from flx.report.latex import COLUMN_PT, FONT_PT, compact, text_width_pt, width_pt

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
runner = CliRunner()
COMMITTED = sorted(p.parent.name for p in RESULTS.glob("*/runs.csv"))


def _copy(name: str, tmp_path: Path) -> Path:
    copy = tmp_path / name
    copy.mkdir()
    for f in ("runs.csv", "spec.toml"):
        shutil.copy(RESULTS / name / f, copy / f)
    return copy


def test_the_width_estimate_grows_with_the_cells_and_reads_computer_modern():
    assert text_width_pt("0") == pytest.approx(0.5 * FONT_PT)  # a digit is half an em
    assert text_width_pt("0.702±.010") < text_width_pt("0.702 ± 0.010")
    assert text_width_pt("8", bold=True) > text_width_pt("8")
    narrow = width_pt(["a", "b"], [["1", "2"]])
    assert width_pt(["a", "b"], [["1", "22222"]]) > narrow
    assert compact("0.702 ± 0.010") == "0.702±.010" and compact("31.1 ± 1.5") == "31.1±1.5"
    assert compact("0.9") == "0.9"


@pytest.mark.parametrize("name", COMMITTED)
def test_every_committed_table_is_set_at_8_pt_without_scaling(name, tmp_path):
    """No table is scaled (today's Table 1d would shrink to about 2.5 pt): each is at \\footnotesize, in one
    column where its default columns fit (the paper's Table 1 always), across both columns (table*) otherwise."""
    from flx.report.latex import table_fits
    from flx.report.tables import build_table, load_runs, read_spec
    from flx.report.write import write_report

    copy = _copy(name, tmp_path)
    notes = []
    write_report(copy, formats=("tex",), plots=False, on_note=notes.append)
    tex = (copy / "table.tex").read_text()
    assert r"\resizebox" not in tex and "\\footnotesize\n" in tex
    width = table_fits(build_table(load_runs(copy), read_spec(copy)))
    one_column = tex.startswith("\\begin{table}[t]")
    assert one_column == (width <= COLUMN_PT)
    assert bool(notes) == (not one_column)  # the report says when a table needs both columns
    if name.startswith("table1"):
        assert one_column, f"{name}: {width:.0f} pt"
    assert "(mean $\\pm$ std over seeds) per setting" in tex  # the caption says what the table holds


def test_claims_are_exported_and_latex_is_a_format_and_more_columns_are_opt_in(tmp_path):
    copy = _copy("table1b", tmp_path)
    result = runner.invoke(app, ["report", str(copy), "--format", "latex", "--no-plots"])
    assert result.exit_code == 0, result.output
    claims = (copy / "claims.tex").read_text()
    assert claims.startswith("\\begin{table*}") and "the claims declared before the runs" in claims
    assert "replicated" in claims or "contradicted" in claims or "inconclusive" in claims
    header = (copy / "table.tex").read_text().split("\\toprule\n")[1].split("\n")[0]
    assert header == r"$\gamma$ & $\alpha$ & n & AP & paper \\"  # the default columns
    result = runner.invoke(app, ["report", str(copy), "--format", "tex", "--no-plots", "--columns", "all"])
    assert result.exit_code == 0 and "table* across both columns" in result.output
    wide = (copy / "table.tex").read_text()
    header = wide.split("\\toprule\n")[1].split("\n")[0]
    assert wide.startswith("\\begin{table*}") and "AP50" in header and "diverged" in header
    bad = runner.invoke(app, ["report", str(copy), "--format", "pdf"])
    assert bad.exit_code == 2 and "(latex: tex)" in bad.output


def test_resampled_pairs_are_one_setting_and_other_files_stay_apart():
    """Seeds that each drew their own data (data_seed = seed) are one setting, their fingerprints aside; runs of
    one seed on two data files are two settings, though their data seed equals their seed."""
    import pandas as pd

    from flx.results.summary import setting_columns

    resampled = pd.DataFrame(
        {"loss": ["ce", "ce", "focal", "focal"], "seed": [1, 2, 1, 2], "data_seed": [1, 2, 1, 2],
         "data_fingerprint": ["a", "b", "a", "b"]}
    )  # fmt: skip
    assert setting_columns(resampled) == ["loss"]
    two_files = pd.DataFrame(
        {"loss": ["ce", "ce"], "seed": [0, 0], "data_seed": [0, 0], "data_fingerprint": ["a", "b"]}
    )
    assert setting_columns(two_files) == ["data_fingerprint"]
