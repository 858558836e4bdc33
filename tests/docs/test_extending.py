"""The docs' "three files" recipe, applied as written: a loss with a hyperparameter of its own (the asymmetric
loss's gamma_neg) added to a copy of flx by the three snippets of docs/extending.md, then swept from the command
line with the new option, stored, reported."""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _snippets() -> dict[str, str]:
    """file -> the python snippet of docs/extending.md whose first line names it."""
    page = (ROOT / "docs" / "extending.md").read_text()
    section = page[page.index("## A loss with a hyperparameter of its own") :]
    out = {}
    for body in re.findall(r"```python\n(.*?)```", section, re.S):
        first, rest = body.split("\n", 1)
        out[first.removeprefix("# ").split(":")[0]] = rest
    return out


@pytest.fixture
def flx_with_a_new_loss(tmp_path):
    """A copy of the flx package with the three snippets applied: appended to objectives.py and registries.py,
    the field inserted into Config after ohem_nms. Returns (its root, the files changed)."""
    shutil.copytree(ROOT / "flx", tmp_path / "flx", ignore=shutil.ignore_patterns("__pycache__"))
    snippets = _snippets()
    assert set(snippets) == {
        "flx/losses/objectives.py",
        "flx/experiment/registries.py",
        "flx/experiment/config.py",
    }
    for name in ("flx/losses/objectives.py", "flx/experiment/registries.py"):
        path = tmp_path / name
        path.write_text(path.read_text() + "\n\n" + snippets[name])
    config = tmp_path / "flx/experiment/config.py"
    text = config.read_text()
    anchor = re.search(r"\n    ohem_nms: .*\n", text)
    config.write_text(text[: anchor.end()] + snippets["flx/experiment/config.py"] + text[anchor.end() :])
    return tmp_path, sorted(snippets)


def test_a_loss_with_a_new_hyperparameter_takes_three_files(flx_with_a_new_loss, tmp_path):
    root, changed = flx_with_a_new_loss
    assert len(changed) == 3
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    flx = [sys.executable, "-m", "flx"]
    out = tmp_path / "runs"
    tiny = ["--n-samples", "3000", "--ratio", "20", "--dim", "4", "--epochs", "1", "--batch-size", "256"]
    helped = subprocess.run(
        [*flx, "sweep", "--help"], env=env, cwd=root, capture_output=True, text=True, timeout=120
    )
    assert "--gamma-neg FLOAT,..." in helped.stdout
    bad = subprocess.run(
        [*flx, "sweep", "--loss", "asymmetric", "--gamma-neg", "-1", *tiny], env=env, cwd=root, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "--gamma-neg got -1; accepted: a number in [0, 10]" in bad.stderr
    swept = subprocess.run(
        [*flx, "sweep", "--loss", "asymmetric,focal", "--gamma-neg", "1,4", *tiny, "--workers", "1", "--out",
         str(out)], env=env, cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stdout[-2000:] + swept.stderr[-2000:]
    reported = subprocess.run([*flx, "report", str(out), "--no-plots"], env=env, cwd=root, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    assert reported.returncode == 0, reported.stderr[-2000:]
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    asymmetric = sorted(float(r["gamma_neg"]) for r in rows if r["loss"] == "asymmetric")
    assert asymmetric == [1.0, 4.0] and all(r["status"] == "ok" for r in rows) and len(rows) == 3
    assert "gamma_neg" in (out / "table.md").read_text()
