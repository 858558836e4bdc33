"""CIFAR-10 batch files are data: they load through a restricted unpickler that builds numpy arrays and plain
containers only, and a crafted file is refused in one line before any code in it runs (a dry run included)."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from flx.data.cifar import CIFAR_FILES, load_batch


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _batches(root, protocol: int, payload=None):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = np.repeat(np.arange(10), 4)
    for name in CIFAR_FILES:
        batch = {
            "data": np.zeros((len(labels), 3072), np.uint8),
            "labels": labels.tolist(),
            "batch_label": name,
        }
        if payload is not None and name == "data_batch_1":
            batch["labels"] = payload
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return folder


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_batch_of_numpy_arrays_and_lists_loads_at_every_protocol(tmp_path, protocol):
    folder = _batches(tmp_path, protocol)
    batch = load_batch(folder / "data_batch_1")
    assert (
        batch["data"].shape == (40, 3072) and batch["data"].dtype == np.uint8 and len(batch["labels"]) == 40
    )


@pytest.mark.subprocess
def test_a_crafted_batch_is_refused_before_its_code_runs_even_in_a_dry_run(tmp_path):
    marker = tmp_path / "ran"
    _batches(tmp_path / "data", 2, payload=_Payload(marker))
    with pytest.raises(pickle.UnpicklingError, match="asks to build (posix|os).system"):
        load_batch(tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1")
    args = ["sweep", "--dataset", "cifar_catsdogs", "--data-dir", str(tmp_path / "data"), "--dry-run"]
    args += ["--out", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-m", "flx", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "data_batch_1 is missing or malformed (it asks to build" in done.stderr
    assert not marker.exists()
