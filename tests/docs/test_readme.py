"""The README's Python API snippet runs as written, saved as a script (spawned sweep workers included), and a
sweep from Python through flx.sweep.sweep is the CLI's sweep (the same runs, the same keys)."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from flx.cli import app
from flx.results.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _docs() -> str:
    """The README and every page of the docs site: where the snippets live."""
    return "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def _snippet(start: str) -> str:
    readme = _docs()
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


def test_a_script_without_the_main_guard_is_told_what_to_add(tmp_path):
    """Issue 22, item 12: without `if __name__ == "__main__":` every spawned worker re-ran the script; each now
    stops at once with a line saying what to add, and the runs are stored failed with the same hint."""
    script = tmp_path / "noguard.py"
    script.write_text(
        "from flx.experiment.plan import plan\nfrom flx.results.store import Store\nfrom flx.sweep import run_sweep\n"
        "configs = plan(None, {'loss': ['ce', 'focal'], 'gamma': [2.0], 'n_samples': 3000, 'ratio': 20.0, "
        "'dim': 4, 'epochs': 1})\n"
        "print(run_sweep(configs, Store('runs'), workers=2).counts)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert "'failed': 2" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert 'put the sweep under `if __name__ == "__main__":`' in proc.stderr
    errors = {r["error"] for r in Store(tmp_path / "runs").records()}
    assert len(errors) == 1 and 'a sweep outside `if __name__ == "__main__":`' in errors.pop()


def test_the_plugin_example_runs_as_written(tmp_path):
    """Issue 22, item 14: the README's mylab.py (its data set's body was `...`) and its command (which named an
    undefined mylab:other), run as written in a fresh folder."""
    import re
    import textwrap

    readme = _docs()
    begin = readme.index("  ```python\n  # mylab.py\n") + len("  ```python\n")
    (tmp_path / "mylab.py").write_text(textwrap.dedent(readme[begin : readme.index("  ```\n", begin)]))
    command = re.search(r"`flx (--plugin mylab sweep [^`]*)`", readme).group(1).split()
    proc = subprocess.run([sys.executable, "-m", "flx", *command], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = Store(tmp_path / "runs").to_dataframe()
    assert len(runs) == 4 and set(runs["status"]) == {"ok"} and set(runs["dataset"]) == {"blobs"}
