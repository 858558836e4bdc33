"""Every command and snippet of the README and the docs site runs as written (issue 22, issue 29): each fenced
block is extracted, page by page, in order, and run in a fresh folder holding a copy of what a clone has (``results/table1b``, ``experiments/``). A command
that needs a long run or a cluster is listed in SLOW with where it is tested instead (or run with --dry-run);
a new README command is run unless it is listed, so the list cannot silently fall behind the README."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# command prefix -> why it is not run as written here ("dry": run with --dry-run added: it plans, trains nothing)
SLOW = {
    "make install": "the set-up: CI's `make test` runs it on a fresh clone",
    "make demo": "its commands (flx anatomy, the demo sweep and report) are blocks of getting-started.md, run here",
    "flx compare cancer.csv": "about 3 minutes; flx compare runs end to end in tests/compare/test_compare.py",
    "flx compare shapes": "detector runs of 1,500 steps; tests/compare/test_study.py runs it with 20 steps and "
    "tests/compare/test_cells.py runs --cell end to end",
    "cat runs/cancer/compare.md": "the page of that flx compare",
    "flx bench losses": "minutes of timing; a small bench runs in tests/test_cli_foundation.py",
    "flx sweep --loss ce,focal,poly1": "dry",
    "flx sweep experiments/table1b.toml": "dry",
    "ray start": "needs a Ray cluster; tests/test_cluster.py runs sweeps on a local Ray",
    "RAY_AUTH_MODE=token flx sweep": "needs a Ray cluster; tests/test_cluster.py runs sweeps on a local Ray",
    "ray stop": "ends that cluster (and would end any Ray instance of this machine's user)",
}
COVERED = {  # python blocks run by their own tests
    "# flx/losses/objectives.py": "tests/docs/test_extending.py (applied to a copy of flx, then swept)",
    "# flx/experiment/registries.py": "tests/docs/test_extending.py",
    "# flx/experiment/config.py": "tests/docs/test_extending.py",
    "# mylab.py": "tests/test_readme.py::test_the_plugin_example_runs_as_written",
    "from flx.experiment.plan import plan": "tests/test_readme.py::test_python_api_snippet_runs_as_a_script",
}


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced block of the README and the docs pages, dedented, in order."""
    text = "\n".join(page.read_text() for page in PAGES)
    return [
        (lang, textwrap.dedent(body))
        for lang, body in re.findall(r"```(\w*)\n(.*?)^\s*```", text, re.S | re.M)
    ]


def commands(lang: str, body: str) -> list[str]:
    """A console block's `$ ` lines (with their backslash continuations); every line of a bash block."""
    lines, out = body.splitlines(), []
    for i, line in enumerate(lines):
        if lang == "console" and not line.startswith("$ "):
            continue
        command = line[2:] if lang == "console" else line
        j = i
        while command.rstrip().endswith("\\") and j + 1 < len(lines):
            j += 1
            command = command.rstrip()[:-1] + " " + lines[j].strip()
        if command.strip():
            out.append(command.strip())
    return out


def test_every_readme_command_and_snippet_runs_as_written(tmp_path):
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    shutil.copytree(
        ROOT / "results" / "table1b",
        tmp_path / "results" / "table1b",
        ignore=shutil.ignore_patterns("runs.sqlite*"),
    )  # fmt: skip  (a clone has no store)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["FLX_CACHE_DIR"] = str(tmp_path / "cache")
    ran, skipped = [], set()
    for lang, body in blocks():
        if lang == "python":
            if any(body.startswith(start) for start in COVERED):
                continue
            script = tmp_path / f"snippet{len(ran)}.py"
            script.write_text(body)
            command = [sys.executable, str(script)]
        elif lang in ("bash", "console"):
            command = None
        else:
            continue
        for line in [None] if command else commands(lang, body):
            if line is not None:
                slow = next((p for p in SLOW if line.startswith(p)), None)
                if slow and SLOW[slow] != "dry":
                    skipped.add(slow)
                    continue
                if slow:
                    skipped.add(slow)
                    line = line.split("#")[0].strip() + " --dry-run"
            argv = command or ["bash", "-c", line]
            proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{line or body}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            ran.append(line or body.splitlines()[0])
    assert skipped == set(SLOW), f"listed but no longer in the README: {set(SLOW) - skipped}"
    assert any(r.startswith("flx runs show fbad42cf runs/digits") for r in ran)  # the key the README prints
