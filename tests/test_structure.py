"""The package's shape, checked: layers import downward only and no import circle (import-linter), flx.losses
stands alone, no module over 500 lines or function over 80, privates stay inside their subpackage, and CLI
commands only parse, call one library function and render."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flx"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # this tree's flx before the installed one
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )


def test_import_contracts_are_kept():
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(
    "module,line",
    [
        ("flx/losses/bounds.py", "import flx.experiment.params  # noqa"),  # the loss library reaching up
        ("flx/results/store.py", "import flx.sweep.run  # noqa"),  # results importing the sweep above it
        ("flx/compare/result.py", "import flx.compare.page  # noqa"),  # a circle inside one package
    ],
)
def test_an_upward_import_breaks_the_contracts(tmp_path, module, line):
    for item in ("flx", "pyproject.toml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout.upper(), proc.stdout


def test_import_flx_losses_imports_no_other_flx_module():
    code = (
        "import sys, torch, flx.losses as L\n"
        "L.sigmoid_focal_loss(torch.zeros(4), torch.ones(4)); L.FocalLoss(); L.ohem_select\n"
        "print(sorted(m for m in sys.modules if m == 'flx' or m.startswith('flx.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)
    assert loaded and all(m in ("flx", "flx.losses") or m.startswith("flx.losses.") for m in loaded), loaded


def test_no_module_over_500_lines_and_no_function_over_80():
    long_modules, long_functions = [], []
    for path, name in _modules():
        text = path.read_text()
        if len(text.splitlines()) > 500:
            long_modules.append(name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 80:
                    long_functions.append(f"{name}.{node.name}")
    assert not long_modules and not long_functions, (long_modules, long_functions)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_privates_stay_inside_their_subpackage():
    """No ``_name`` imported from another module, and no ``_module`` imported from outside its package."""
    leaks = []
    for path, name in _modules():
        package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flx")):
                continue
            parts = node.module.split(".")
            for i, part in enumerate(parts):
                owner = ".".join(parts[:i])
                if _private(part) and not (package == owner or package.startswith(owner + ".")):
                    leaks.append(f"{name}: {node.module}")
            leaks += [f"{name}: {node.module}.{a.name}" for a in node.names if _private(a.name)]
    assert not leaks, leaks


# What a command may import besides its one library call: the CLI's own modules, errors and the value checks.
CLI_ALLOWED = ("flx.cli", "flx.errors", "flx.experiment.params")


def test_cli_commands_parse_call_one_library_function_and_render():
    """Every command body imports at most one name from the library (its one call) and has no loops: the
    loops and decisions live in the library, the printing in flx.cli.views."""
    offenders = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            commands = [
                d
                for d in getattr(node, "decorator_list", [])
                if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command"
            ]
            if not commands:
                continue
            calls = [
                f"{imp.module}.{a.name}"
                for imp in ast.walk(node)
                if isinstance(imp, ast.ImportFrom)
                and imp.module.startswith("flx")
                and not imp.module.startswith(CLI_ALLOWED)
                for a in imp.names
            ]
            loops = [n for n in ast.walk(node) if isinstance(n, (ast.For, ast.While))]
            if len(calls) > 1 or loops:
                offenders.append(f"{path.name}:{node.name} imports {calls}, {len(loops)} loop(s)")
    assert not offenders, offenders


def test_the_tables_that_must_agree_agree():
    """What once were import-time asserts: every config field has a constraint; the registries' parameters are
    in the constraint table's groups; the figures and findings a spec may name are those the report draws."""
    from flx.experiment.config import CONFIG_FIELDS
    from flx.experiment.params import DATA_PARAMS, LOSS_PARAMS, PARAMS, RUN_PARAMS
    from flx.experiment.registries import DATASETS, LOSSES
    from flx.experiment.spec import FIGURES, FINDINGS
    from flx.report.figures import FIGURES as DRAWN
    from flx.report.findings import FINDINGS as WRITTEN

    assert set(PARAMS) >= set(CONFIG_FIELDS)
    assert set(RUN_PARAMS) >= {p for spec in DATASETS.values() for p in spec.defaults}
    assert set(LOSS_PARAMS) >= {p for spec in LOSSES.values() for p in spec.params}
    assert set(DATA_PARAMS) >= {p for spec in DATASETS.values() for p in spec.params}
    assert set(DRAWN) == set(FIGURES) and set(WRITTEN) == set(FINDINGS)


def test_one_training_loop():
    """Every model trains through flx/engine/fit.py: no other module of the library steps an optimizer. The
    benchmarks are the exception they say they are: they time one step of flx's path part by part, beside
    torchvision's stock step."""
    stepping = sorted(
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if ".step()" in path.read_text() and "bench" not in path.parts
    )
    assert stepping == ["flx/engine/fit.py"]
