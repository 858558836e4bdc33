"""The README's Python API snippet runs as written, saved as a script (spawned sweep workers included), and a
sweep from Python through flx.sweep.sweep is the CLI's sweep (the same runs, the same keys)."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from flx.cli import app
from flx.results.store import Store

ROOT = Path(__file__).resolve().parents[1]


def _snippet(start: str) -> str:
    readme = (ROOT / "README.md").read_text()
    begin = readme.index("```python\n" + start)
    return readme[begin + len("```python\n") : readme.index("```\n", begin + 10)]


def test_python_api_snippet_runs_as_a_script(tmp_path):
    script = tmp_path / "api.py"
    script.write_text(_snippet("from flx.experiment.plan import plan"))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "{'ok': 4, 'diverged': 0, 'collapsed': 0, 'failed': 0} None" in proc.stdout
    assert len(Store(tmp_path / "runs/api2").records()) == 4


def test_a_sweep_from_python_is_the_clis_sweep(tmp_path):
    from flx.sweep import sweep

    small = {"n_samples": 3000, "ratio": 20.0, "dim": 4, "epochs": 1, "batch_size": 256}
    done = sweep(None, {"loss": ["ce", "focal"], **small}, ["data_seed=0,1"], out=str(tmp_path), workers=1)
    assert done.result.counts["ok"] == 4 and len(done.records()) == 4
    args = [
        "sweep",
        "--loss",
        "ce,focal",
        "--n-samples",
        "3000",
        "--ratio",
        "20",
        "--dim",
        "4",
        "--epochs",
        "1",
    ]
    args += ["--batch-size", "256", "--set", "data_seed=0,1", "--out", str(tmp_path), "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert (
        result.exit_code == 0
        and "4 runs planned, 4 already in" in result.output
        and "0 to run" in result.output
    )
