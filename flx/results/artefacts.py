"""What a run keeps besides its record: named artefacts, each a few numpy arrays stored compressed in the
results store beside the record (one transaction), so figures and new metrics come from stored runs without
retraining or reading the data again.

- ``test`` (classification): every test example's logit (float32, exact) and label; the record's metrics are
  recomputed from it bit for bit (:func:`stored_scores`).
- ``detections`` (detection): every test detection (image index, box, score), the ground-truth boxes, and the
  first :data:`N_EXAMPLE_IMAGES` test images, for COCO AP and the examples figure.
- ``anchors`` (detection): a histogram of the test anchors' logits per class (object / background) on
  :data:`LOGIT_BINS`: the loss of every anchor under any alpha and gamma, to the bin's width (Figure 4),
  in 64 KB instead of the millions of anchors.

Learning curves (validation AP and training loss) are small and live in the record itself (``curve``,
``train_curve``). Encoding: float arrays byte-shuffled (the bytes of each value's exponent stored together),
then zlib; imports numpy only.
"""

from __future__ import annotations

import io
import zlib

import numpy as np

N_EXAMPLE_IMAGES = 6
LOGIT_RANGE = (-40.0, 40.0)
LOGIT_BINS = 8192  # about 0.01 wide: finer than the figures can show


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays -> one compressed blob (float arrays byte-shuffled first: a third smaller than zlib alone)."""
    buffer = io.BytesIO()
    shuffled = {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.kind == "f" and a.itemsize > 1:
            planes = np.frombuffer(a.tobytes(), np.uint8).reshape(-1, a.itemsize).T
            shuffled[f"{name}|shuffled|{a.dtype.str}|{'x'.join(map(str, a.shape))}"] = planes.copy()
        else:
            shuffled[name] = a
    np.savez(buffer, **shuffled)
    return zlib.compress(buffer.getvalue(), 6)


def decode(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays :func:`encode` stored."""
    out = {}
    with np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False) as npz:
        for name in npz.files:
            if "|shuffled|" in name:
                base, _, dtype, shape = name.split("|")
                planes = npz[name]
                shape = tuple(int(s) for s in shape.split("x")) if shape else ()
                out[base] = np.frombuffer(planes.T.copy().tobytes(), np.dtype(dtype)).reshape(shape)
            else:
                out[name] = npz[name]
    return out


def scores_artefact(logits, y_true) -> bytes:
    """A classifier's test logits (float32) and 0/1 labels (bit-packed)."""
    y = np.asarray(y_true).astype(bool)
    return encode(
        {"logits": np.asarray(logits, dtype=np.float32), "y": np.packbits(y), "n": np.array([len(y)])}
    )


def stored_scores(arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_score) of a ``test`` artefact: the scores as training computed them (float32 sigmoid)."""
    import torch

    y = np.unpackbits(arrays["y"])[: int(arrays["n"][0])].astype(np.float32)
    scores = torch.sigmoid(torch.from_numpy(arrays["logits"].copy())).double().numpy()
    return y, scores


def logit_histogram(logits, labels) -> dict[str, np.ndarray]:
    """Counts of ``logits`` per :data:`LOGIT_BINS` bin, one row per class (0 background, 1 object); logits
    outside :data:`LOGIT_RANGE` fall in the end bins."""
    logits = np.clip(np.asarray(logits, dtype=np.float64), *LOGIT_RANGE)
    labels = np.asarray(labels)
    edges = np.linspace(*LOGIT_RANGE, LOGIT_BINS + 1)
    counts = np.stack([np.histogram(logits[labels == c], bins=edges)[0] for c in (0, 1)])
    return {"counts": counts.astype(np.int64), "range": np.array(LOGIT_RANGE), "bins": np.array([LOGIT_BINS])}


def histogram_centres(arrays: dict) -> np.ndarray:
    lo, hi = arrays["range"]
    n = int(arrays["bins"][0])
    edges = np.linspace(lo, hi, n + 1)
    return (edges[:-1] + edges[1:]) / 2
