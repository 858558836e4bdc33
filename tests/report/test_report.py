import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from flx.cli import app
from flx.experiment.config import Config
from flx.experiment.plan import expand
from flx.experiment.spec import load_spec
from flx.report.index import render_index
from flx.report.tables import build_table, read_spec
from flx.report.write import write_report
from flx.results.store import Store
from tests.engine.test_engine import TINY, _write_fake_cifar, _write_images

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
SPECS = sorted((ROOT / "experiments").glob("*.toml"))

FIXTURE_SPEC = """description = "fixture"
seeds = 2
[config]
dataset = "synthetic"
n_samples = 3000
[[grid]]
loss = ["focal"]
gamma = [0.0, 2.0]
alpha = [0.25, 0.75]
[report]
paper = "table1b"
best_over = "alpha"
"""


def _fixture_store(tmp_path):
    """A store with hand-chosen metrics: one setting fully diverged, one run missing."""
    tmp_path.mkdir(parents=True)
    (tmp_path / "spec.toml").write_text(FIXTURE_SPEC)
    spec = load_spec(tmp_path / "spec.toml")
    configs = {
        (c.gamma, c.alpha, c.seed): c for c in expand(Config(**spec["config"]), spec["grid"], range(2))
    }
    ap = {
        (0.0, 0.25, 0): 0.5,
        (0.0, 0.25, 1): 0.7,
        (0.0, 0.75, 0): 0.8,
        (0.0, 0.75, 1): 0.8,
        (2.0, 0.25, 0): 0.9,
    }
    store = Store(tmp_path)
    for (gamma, alpha, seed), c in configs.items():
        if (gamma, alpha, seed) == (2.0, 0.25, 1):
            continue  # missing
        value = ap.get((gamma, alpha, seed))
        status = "ok" if value is not None else "diverged"
        nan = float("nan")
        store.put(
            {
                "key": c.key("fixture-data"),
                **c.to_dict(),
                "status": status,
                "ap": value if value else nan,
                "roc_auc": 0.9 if value else nan,
                "best_f1": value / 2 if value else nan,
                "ece": 0.01 if value else nan,
                "train_loss": 0.1,
                "wall_time_s": 1.0,
            }
        )
    return tmp_path


EXPECTED = """## {name}

fixture.

| gamma   | alpha   | n             | diverged   | AP            | ROC-AUC           | best F1       | ECE                 | paper AP   |
|---------|---------|---------------|------------|---------------|-------------------|---------------|---------------------|------------|
| 0       | 0.75    | 2             | 0          | 0.800 ± 0.000 | **0.900 ± 0.000** | 0.400 ± 0.000 | **0.0100 ± 0.0000** | 31.1       |
| 2       | 0.25    | 1 (1 missing) | 0          | **0.900**     | **0.900**         | **0.450**     | **0.0100**          | 34         |

n = ok runs (seeds) per setting; mean ± sample std (ddof = 1) over them; best value of each column in bold. \
Each row shows the alpha with the highest mean AP for that setting, as the paper does. \
paper AP: Lin et al., Focal Loss for Dense Object Detection, ICCV 2017, Table 1 (COCO detection AP); \
compare the shape, not the values.
"""


def test_report_on_fixture_store_gives_exact_table(tmp_path):
    out = _fixture_store(tmp_path / "fx")
    result = runner.invoke(app, ["report", str(out), "--format", "md,csv,tex"])
    assert result.exit_code == 0, result.output
    assert (out / "table.md").read_text() == EXPECTED.format(name="fx")
    assert (out / "table.tex").read_text() == (ROOT / "tests" / "data" / "fixture_table.tex").read_text()
    table = build_table(Store(out).to_dataframe(), read_spec(out))
    full = build_table(
        Store(out).to_dataframe(), read_spec(out).__class__(name="fx", planned=read_spec(out).planned)
    )
    # without best_over every setting shows, the diverged and the missing ones included
    row = full[(full["gamma"] == 2.0) & (full["alpha"] == 0.75)].iloc[0]
    assert row["diverged"] == 2 and row["ok"] == 0
    assert full[(full["gamma"] == 0.0) & (full["alpha"] == 0.25)]["ap_std"].iloc[0] == pytest.approx(
        0.141421356
    )
    assert list(table["paper_ap"]) == [31.1, 34.0]
    # the CSV export holds every stored run, and a report from it alone is the same
    shutil.copy(out / "runs.csv", tmp_path / "runs.csv")
    (tmp_path / "csv_only").mkdir()
    for name in ("runs.csv", "spec.toml"):
        shutil.copy(out / name, tmp_path / "csv_only" / name)
    write_report(tmp_path / "csv_only", formats=("md",), plots=False)
    assert (tmp_path / "csv_only" / "table.md").read_text() == EXPECTED.format(name="csv_only")


LATEX_DOCUMENT = r"""\documentclass[twocolumn]{article}
\usepackage[utf8]{inputenc}
\usepackage{booktabs,graphicx}
\begin{document}
%s
\end{document}
"""


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_the_latex_table_compiles_with_pdflatex(tmp_path):
    import subprocess

    """The fixture and every committed table, as LaTeX, in a two-column article: it compiles, and no table is
    wider than its column (no overfull box)."""
    shutil.copy(ROOT / "tests" / "data" / "fixture_table.tex", tmp_path / "fixture.tex")
    inputs = [r"\input{fixture.tex}"]
    for results in sorted(p.parent for p in RESULTS.glob("*/runs.csv")):
        copy = tmp_path / results.name
        copy.mkdir()
        for name in ("runs.csv", "spec.toml"):
            shutil.copy(results / name, copy / name)
        write_report(copy, formats=("tex",), plots=False)
        inputs.append(rf"\input{{{results.name}/table.tex}}\clearpage")
    (tmp_path / "doc.tex").write_text(LATEX_DOCUMENT % "\n".join(inputs))
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0
    assert "Overfull" not in (tmp_path / "doc.log").read_text(errors="replace")


def test_latex_text_escapes_what_latex_rejects():
    from flx.report.latex import latex_text

    assert latex_text("ohem_k & 50% #1 {x} ~ ^ $ \\") == (
        r"ohem\_k \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \$ \textbackslash{}"
    )
    assert latex_text("0.5 ± 0.1 – ≥ 5") == r"0.5 $\pm$ 0.1 -- $\geq$ 5"


def test_a_table_of_runs_from_two_code_versions_is_refused_unless_allowed(tmp_path):
    import pandas as pd

    out = _fixture_store(tmp_path / "fx")
    runner.invoke(app, ["report", str(out), "--no-plots"])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(out / "spec.toml", mixed / "spec.toml")
    runs = pd.read_csv(out / "runs.csv")
    runs["git_commit"] = ["a" * 40] * (len(runs) - 1) + ["b" * 40]
    runs["code_diff"] = None
    runs.to_csv(mixed / "runs.csv", index=False)
    result = runner.invoke(app, ["report", str(mixed), "--no-plots"])
    assert result.exit_code == 2 and "2 code versions (aaaaaaa" in result.output
    assert "--allow-mixed" in result.output and not (mixed / "table.md").exists()
    result = runner.invoke(app, ["report", str(mixed), "--no-plots", "--allow-mixed"])
    assert result.exit_code == 0, result.output
    assert "Code: MIXED versions (aaaaaaa: " in (mixed / "table.md").read_text()
    # uncommitted changes are a version of their own
    runs["git_commit"] = "a" * 40
    runs["code_diff"] = ["0123456789ab"] + [None] * (len(runs) - 1)
    runs.to_csv(mixed / "runs.csv", index=False)
    result = runner.invoke(app, ["report", str(mixed), "--no-plots"])
    assert result.exit_code == 2 and "aaaaaaa + uncommitted changes 0123456789ab (1 runs)" in result.output


def test_report_without_runs_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no runs in" in result.output


@pytest.mark.parametrize(
    "results_dir", sorted(p.parent for p in RESULTS.glob("*/runs.csv")), ids=lambda p: p.name
)
def test_committed_tables_are_rendered_from_committed_records(tmp_path, results_dir):
    for name in ("runs.csv", "spec.toml"):
        shutil.copy(results_dir / name, tmp_path / name)
    write_report(tmp_path, formats=("md", "csv"), plots=False)
    expected = (results_dir / "table.md").read_text()
    assert (tmp_path / "table.md").read_text() == expected.replace(
        f"## {results_dir.name}\n", f"## {tmp_path.name}\n"
    )
    assert (tmp_path / "table.csv").read_text() == (results_dir / "table.csv").read_text()


def _makefile_list(name: str) -> list[str]:
    """A `NAME := a b $(OTHER)` list of the Makefile, its $(...) references expanded."""
    text = (ROOT / "Makefile").read_text()
    words = re.search(rf"^{name} := (.*)$", text, re.M).group(1).split()
    out = []
    for word in words:
        ref = re.fullmatch(r"\$\((\w+)\)", word)
        out += _makefile_list(ref.group(1)) if ref else [word]
    return out


def test_committed_results_readme_is_generated():
    dirs = sorted(
        {p.parent for p in RESULTS.glob("*/runs.csv")} | {p.parent for p in RESULTS.glob("*/map.md")}
    )
    if not dirs:
        pytest.skip("no committed results yet")
    order = _makefile_list("INDEXED")
    assert {d.name for d in dirs} <= set(order), "every committed results folder is in the Makefile's INDEXED"
    dirs.sort(key=lambda d: order.index(d.name))
    assert (RESULTS / "README.md").read_text() == render_index(dirs)
    assert "results:start" not in (ROOT / "README.md").read_text()  # the results page is not copied


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_each_spec_smoke_with_tiny_budget(tmp_path, spec):
    """Every ablation spec through the real CLI (tiny data, one epoch, one seed), then its report and figures."""
    images = tmp_path / "images"
    _write_images(images / "train", n=12)
    _write_fake_cifar(images)
    out = tmp_path / spec.stem
    dataset = load_spec(spec)["config"].get("dataset")
    detection, photos = dataset == "shapes", dataset in ("catsdogs", "cifar_catsdogs")
    budget = ["--steps", "2", "--n-images", "8", "--batch-size", "2", "--image-size", "32"]
    if any("image_size" in grid for grid in load_spec(spec)["grid"]):
        # the canvases are what the spec compares (the regime map): two of them, one its claims name (64 px);
        # each 96 or 128 px run evaluates 768 images of up to 46k anchors (7 minutes in all at 64/96/128)
        budget = [*budget[:-1], "32,64"]
    if photos:
        budget = ["--steps", "2", "--eval-every", "1", "--batch-size", "8", "--image-size", "16"]
    args = ["sweep", str(spec), *(budget if detection or photos else [*TINY, "--image-size", "16"])]
    args += ["--seeds", "1", "--workers", "1", "--out", str(out), "--data-dir", str(images)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    effective = load_spec(out / "spec.toml")  # the spec with the command line's overrides
    assert effective["seeds"] == 1
    assert effective["config"]["steps" if detection or photos else "epochs"] == (
        2 if detection or photos else 1
    )
    assert (effective.get("report") or {}) == (load_spec(spec).get("report") or {})
    planned = int(re.search(r"sweep: (\d+) runs", result.output).group(1))
    assert planned >= 2 and len(Store(out).records()) == planned
    result = runner.invoke(app, ["report", str(out)], env={"FLX_DATA_DIR": str(images)})
    assert result.exit_code == 0, result.output
    assert (out / "table.md").exists() and (out / "table.csv").exists() and (out / "runs.csv").exists()
    for figure in load_spec(spec).get("report", {}).get("figures", []):
        pngs = list(out.glob("*.png"))
        assert pngs, figure
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as im:
            im.verify()


def test_every_tie_as_shown_is_bold_and_each_data_set_has_its_own_best():
    import pandas as pd

    from flx.report.tables import ReportSpec, table_cells

    rows = []
    for dataset, aps in (("synthetic", (0.99996, 1.0, 0.99961, 0.9)), ("table", (0.5, 0.6, 0.6, 0.4))):
        for i, ap in enumerate(aps):
            for seed in range(2):
                rows.append({"dataset": dataset, "loss": "focal", "gamma": float(i), "seed": seed,
                             "status": "ok", "key": f"{dataset}{i}{seed}", "ap": ap})  # fmt: skip
    table = build_table(pd.DataFrame(rows), ReportSpec(name="t"))
    header, cells, bold = table_cells(table)
    ap = header.index("AP")
    marked = [(r[0], r[header.index("gamma")]) for r, b in zip(cells, bold, strict=True) if b[ap]]
    assert marked == [
        ("synthetic", "0"),
        ("synthetic", "1"),
        ("synthetic", "2"),
        ("table", "1"),
        ("table", "2"),
    ]


def test_settings_whose_runs_are_identical_seed_by_seed_are_one_row_with_a_note():
    import pandas as pd

    from flx.report.tables import ReportSpec, table_cells, table_notes

    rows = []
    for k, shift in ((128, 0.0), (256, 0.0), (512, 0.0), (1024, 1e-12)):  # 1024 trained (barely) otherwise
        for seed in range(3):
            rows.append({"dataset": "shapes", "loss": "ohem", "ohem_k": k, "ohem_ratio": 3.0, "ohem_nms": 0.5,
                         "seed": seed,
                         "status": "ok", "key": f"{k}{seed}", "ap": 0.5 + seed / 10,
                         "train_loss": 0.1 + seed + shift, "pos_anchors_per_image": 22.0})  # fmt: skip
    rows.append({**rows[0], "ohem_k": 64, "key": "64-0"})  # one seed only: not the same runs
    table = build_table(pd.DataFrame(rows), ReportSpec(name="t", paper="table1d"))
    header, cells, _ = table_cells(table)
    k, n = header.index("ohem_k"), header.index("n")
    assert [(r[k], r[n]) for r in cells] == [("64", "1"), ("128 / 256 / 512", "3"), ("1024", "3")]
    assert cells[1][header.index("paper AP")] == "31.1 / 28.3 / 24"
    note = table_notes(table, ReportSpec(name="t"))
    assert "ohem, ohem_k 128 / 256 / 512: identical runs seed by seed" in note
    assert (
        "the 1:3 rule keeps at most 4 x the object anchors (22.0 per image on average: about 88), fewer than the "
        "smallest B, 128, so B never bound" in note
    )
    # without a training loss nothing shows the training was the same: the rows stay apart
    apart = build_table(pd.DataFrame(rows).drop(columns="train_loss"), ReportSpec(name="t"))
    assert len(apart) == 5


def test_ap_vs_param_marks_a_setting_whose_runs_all_failed(tmp_path, monkeypatch):
    import pandas as pd

    from flx.report import figures
    from flx.report.tables import ReportSpec

    rows = [{"loss": "focal", "gamma": g, "seed": s, "status": "ok", "key": f"{g}{s}", "ap": 0.5 + g / 10}
            for g in (0.0, 2.0) for s in range(2)]  # fmt: skip
    rows += [{"loss": "focal", "gamma": 5.0, "seed": s, "status": "collapsed", "key": f"5{s}", "ap": float("nan")}
             for s in range(3)]  # fmt: skip
    notes = []
    monkeypatch.setattr(figures.plt.Axes, "annotate", lambda self, text, *a, **k: notes.append(text))
    path = figures.ap_vs_param(pd.DataFrame(rows), tmp_path, ReportSpec(name="t"))
    assert path.exists() and notes == ["all 3 failed"]


def test_a_spec_less_folder_gets_the_figures_of_what_varies(tmp_path, monkeypatch):
    """Issue 22, item 19: without a spec, figures are chosen from what varies; no one-point curve, and a
    loss without the swept hyperparameter is a level line, not a legend entry "epsilon=–"."""
    import pandas as pd

    from flx.report import figures

    def rows(**grid):
        (name, values), *_ = grid.items()
        return [{"loss": "focal", "alpha": 0.25, name: v, "seed": s, "status": "ok", "key": f"{v}{s}", "ap": 0.5}
                for v in values for s in range(2)]  # fmt: skip

    ce = [{"loss": "ce", "seed": s, "status": "ok", "key": f"ce{s}", "ap": 0.4} for s in range(2)]
    swept = pd.DataFrame(rows(gamma=[1.0, 2.0]) + ce)
    assert figures.chosen_figures(swept) == ["ap_vs_param"]  # no store: no figure of stored artefacts
    assert figures.chosen_figures(swept, store=object()) == ["ap_vs_param", "pr_curves"]
    assert figures.chosen_figures(pd.DataFrame(rows(gamma=[2.0]) + ce)) == [
        "ap_vs_param"
    ]  # a point and CE's line
    lone = pd.DataFrame(rows(gamma=[2.0]))  # one setting over seeds: a lone point says nothing
    assert figures.chosen_figures(lone) == [] and figures.ap_vs_param(lone, tmp_path, None) is None
    labels = []
    monkeypatch.setattr(figures.plt.Axes, "legend", lambda self, *a, **k: labels.extend(
        self.get_legend_handles_labels()[1]))  # fmt: skip
    spec = type("S", (), {"name": "t"})()
    assert figures.ap_vs_param(swept, tmp_path, spec).name == "ap_vs_gamma.png"
    assert labels == ["loss=ce", "loss=focal, alpha=0.25"]
    out = _fixture_store(tmp_path / "fx")
    (out / "spec.toml").unlink()  # a sweep from flags stores no spec
    assert {p.name for p in write_report(out, plots=True).values()} >= {"ap_vs_gamma.png"}


def test_table_1d_figure_draws_each_ohem_row_once_against_focal_loss(tmp_path):
    import pandas as pd

    from flx.report.ohem_rows import _label, ohem_rows
    from flx.report.tables import ReportSpec

    rows = [{"loss": "ohem", "ohem_k": k, "ohem_ratio": 3.0, "ohem_nms": 0.5, "seed": s, "status": "ok",
             "ap": 0.6 + s / 100, "train_loss": 0.1 + s} for k in (128, 256) for s in range(3)]  # fmt: skip
    rows += [
        {**r, "ohem_ratio": None, "ap": r["ap"] - 0.05, "train_loss": r["train_loss"] + 1} for r in rows[:3]
    ]
    rows += [{"loss": "focal", "seed": s, "status": "ok", "ap": 0.65, "train_loss": 0.2} for s in range(3)]
    runs = pd.DataFrame(rows)
    path = ohem_rows(runs, tmp_path, ReportSpec(name="table1d"))
    assert path == tmp_path / "ohem_rows.png" and path.stat().st_size > 5_000
    members = [
        {"ohem_k": 128, "ohem_nms": 0.5, "ohem_ratio": 3.0},
        {"ohem_k": 256, "ohem_nms": 0.5, "ohem_ratio": 3.0},
    ]
    assert _label(members[0], members) == "B 128 / 256, NMS 0.5, 1:3"
    assert _label({"ohem_k": 512, "ohem_nms": None, "ohem_ratio": None}, None) == "B 512, NMS none"
    assert ohem_rows(runs[runs["loss"] == "focal"], tmp_path, ReportSpec(name="t")) is None


def test_a_full_disk_while_drawing_a_figure_is_one_line_and_leaves_no_half_written_file(
    tmp_path, capsys, monkeypatch
):
    import errno
    import shutil

    from matplotlib.figure import Figure

    from flx.cli import main

    folder = tmp_path / "table1d"
    shutil.copytree(RESULTS / "table1d", folder)
    (folder / "ohem_rows.png").unlink()

    def full(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")  # a part written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(folder)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("flx: error: no space left on the device writing ") and "Traceback" not in err
    assert not (folder / "ohem_rows.png").exists() and not list(folder.glob(".*tmp*"))


def test_index_holds_a_compare_map_as_written(tmp_path):
    """A folder of `flx compare --cell` cells is indexed from its map.md: its links made relative to the index,
    its cells linked to their pages, its sections under the entry's heading; `flx report` writes nothing there."""
    d = tmp_path / "regimes"
    (d / "image_size-64_clutter-0").mkdir(parents=True)
    page = (
        "# flx compare: 1 cells\n\nEach cell is in its own folder (`image_size-64_clutter-0/`).\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n![regime map](regime_map.png)\n\n## Re-checked on fresh seeds\n\n"
        "each cell's `recheck/recheck.md`; see [the paper](https://arxiv.org/abs/1708.02002)\n"
    )
    (d / "map.md").write_text(page)
    entry = render_index([d], prefix="results/", header=False)
    assert entry.startswith("## [regimes](results/regimes/map.md)\n")
    assert "![regime map](results/regimes/regime_map.png)" in entry
    assert "[`image_size-64_clutter-0/`](results/regimes/image_size-64_clutter-0/compare.md)" in entry
    assert "\n### Re-checked on fresh seeds" in entry and "\n## Re" not in entry
    assert "`recheck/recheck.md`" in entry and "(https://arxiv.org/abs/1708.02002)" in entry
    result = runner.invoke(app, ["report", "--index", str(tmp_path / "README.md"), str(d)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in d.iterdir()) == ["image_size-64_clutter-0", "map.md"]
    assert "## [regimes](regimes/map.md)" in (tmp_path / "README.md").read_text()


def test_curve_findings_name_each_run_by_what_varies_and_give_each_canvas_its_anchors():
    """A learning-curve table over canvases and lengths: each run's line says which it is, and each canvas gets
    its own anchors line (one canvas's line stood for all three before)."""
    import json

    import pandas as pd

    from flx.report.findings import findings

    def run(loss, size, steps, imbalance):
        curve = json.dumps([[s, min(0.6, s / 1000)] for s in range(100, steps + 1, 100)])
        return {"loss": loss, "status": "ok", "dataset": "shapes", "image_size": size, "clutter": 8,
                "steps": steps, "curve": curve, "imbalance": imbalance, "anchors_per_image": size * size * 2.8,
                "pos_anchors_per_image": 22.0, "ignored_anchors_per_image": 38.0, "neg_loss_share": 0.2}  # fmt: skip

    runs = pd.DataFrame(
        [run("focal", 64, 1200, 515.0), run("focal", 128, 1200, 2088.0), run("focal", 128, 2400, 2088.0)]
    )
    lines = findings("curves", pd.DataFrame(), runs)
    assert [line.split(":")[0] for line in lines[:2]] == ["Anchors at 64 px", "Anchors at 128 px"]
    assert (
        "1:515 " in lines[0]
        and "1:2088 " in lines[1]
        and "focal (1200 steps) 20%, focal (2400 steps) 20%." in lines[1]
    )
    assert lines[2].startswith("focal (64 px, 1200 steps): at the constant lr")
    assert lines[4].startswith("focal (128 px, 2400 steps): at the constant lr")
    single = findings("curves", pd.DataFrame(), runs.iloc[:1])
    assert single[0].startswith("Anchors: ") and single[1].startswith("focal: at the constant lr")
