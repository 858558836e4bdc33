import inspect
import os
import re
import sys
from pathlib import Path

import pytest

# A tiny synthetic task: one run takes a fraction of a second.
TINY = ["--n-samples", "3000", "--ratio", "20", "--dim", "4", "--epochs", "1", "--batch-size", "256"]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Image caches and the default results store go to temporary folders, never the user's."""
    monkeypatch.setenv("FLX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("FLX_OUT", raising=False)
    monkeypatch.delenv("FLX_DATA_DIR", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    load = sys.modules.get("flx.data.load")
    if load is not None:  # each test draws its generated data anew (a test may patch what drawing checks)
        load.forget()


def flx_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flx", *args]


def sweep_cmd(out, *args: str, workers: int = 1) -> list[str]:
    """`flx sweep ARGS` on the tiny task into ``out``."""
    return flx_cmd("sweep", *args, *TINY, "--workers", str(workers), "--out", str(out))


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# Markers by what a test does, read from its source and that of the test-module helpers it calls (one level):
# `make test-fast` leaves out slow, subprocess, compile and ray tests. A test marked by hand keeps its marks.
_DOES = {
    "subprocess": re.compile(
        r"subprocess\.|Popen\(|flx_cmd\(|sweep_cmd\(|multiprocessing|--workers\", \"[2-9]"
    ),
    "compile": re.compile(r"torch\.compile|compiled|inductor"),
    "ray": re.compile(r"\bray\b|RayExecutor|executor=\"ray\""),
}


def _source_with_helpers(function) -> str:
    module = inspect.getmodule(function)
    source = inspect.getsource(function)
    for name in set(re.findall(r"\b(_\w+)\(", source)):
        helper = getattr(module, name, None)
        if inspect.isfunction(helper):
            source += inspect.getsource(helper)
    return source


def pytest_collection_modifyitems(config, items):
    for item in items:
        function = getattr(item, "function", None)
        if function is None:
            continue
        source = _source_with_helpers(function)
        for marker, pattern in _DOES.items():
            if pattern.search(source):
                item.add_marker(getattr(pytest.mark, marker))
