"""COCO detection metrics (faster-coco-eval's C++ COCOeval; pycocotools' as the reference) and a detector's
stored test detections."""

from __future__ import annotations

import contextlib
import gc
import io

import numpy as np
import torch

BACKENDS = ("faster", "pycocotools")  # faster-coco-eval's C++ COCOeval (the default), or pycocotools'


def _coco_inputs(boxes_true, detections) -> tuple[list, list, list]:
    """COCO's images, ground-truth annotations and results (x, y, w, h boxes), built from flat arrays."""
    images = [{"id": i + 1, "width": 1, "height": 1} for i in range(len(boxes_true))]

    def flat(parts: list) -> tuple[np.ndarray, np.ndarray]:
        """Per-image tensors concatenated (float64), and the 1-based image id of each row."""
        ids = np.concatenate([np.full(len(p), i + 1, dtype=np.int64) for i, p in enumerate(parts)])
        return ids, torch.cat(parts).double().numpy()

    gt_ids, gt = flat([b.reshape(-1, 4) for b in boxes_true])
    gt_w, gt_h = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    annotations = [
        {"id": n + 1, "image_id": i, "category_id": 1, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
        for n, (i, x, y, w, h) in enumerate(zip(gt_ids.tolist(), gt[:, 0].tolist(), gt[:, 1].tolist(),
                                                gt_w.tolist(), gt_h.tolist(), strict=True))
    ]  # fmt: skip
    det_ids, boxes = flat([d["boxes"].reshape(-1, 4) for d in detections])
    _, scores = flat([d["scores"].reshape(-1) for d in detections])
    results = [
        {"image_id": i, "category_id": 1, "bbox": [x, y, w, h], "score": s}
        for i, x, y, w, h, s in zip(det_ids.tolist(), boxes[:, 0].tolist(), boxes[:, 1].tolist(),
                                    (boxes[:, 2] - boxes[:, 0]).tolist(), (boxes[:, 3] - boxes[:, 1]).tolist(),
                                    scores.tolist(), strict=True)
    ]  # fmt: skip
    return images, annotations, results


def _results(gt, results: list, coco_class):
    """The results as COCO's loadRes makes them for boxes (id, area, iscrowd; no polygon, which bbox
    evaluation never reads), without its per-result Python work."""
    for n, r in enumerate(results):
        w, h = r["bbox"][2], r["bbox"][3]
        r.update(id=n + 1, area=w * h, iscrowd=0)
    dt = coco_class()
    dt.dataset = {"images": list(gt.dataset["images"]), "annotations": results,
                  "categories": list(gt.dataset["categories"])}  # fmt: skip
    dt.createIndex()
    return dt


@contextlib.contextmanager
def _no_gc():
    """The cyclic garbage collector paused: building tens of thousands of small dicts otherwise triggers
    collections that scan them all, for nothing (they hold no cycles); about halves faster-coco-eval's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def coco_metrics(boxes_true, detections, backend: str = "faster") -> dict:
    """COCO AP (IoU 0.50:0.95), AP50 and AP75 for one object class. ``boxes_true``: per image (K, 4) x1y1x2y2
    tensors; ``detections``: per image dicts with boxes and scores. ``backend``: faster-coco-eval's C++
    COCOeval (the default) or pycocotools' (the reference: the same numbers, tested)."""
    with _no_gc():
        return _coco_metrics(boxes_true, detections, backend)


def _coco_metrics(boxes_true, detections, backend: str) -> dict:
    images, annotations, results = _coco_inputs(boxes_true, detections)
    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    if backend == "faster":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "ring"}]}
    with contextlib.redirect_stdout(io.StringIO()):  # both print their progress
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        dt = _results(gt, results, COCO) if backend == "faster" else gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, ap50, ap75 = (max(0.0, float(v)) for v in ev.stats[:3])  # -1 = no ground truth
    return {"ap": ap, "ap50": ap50, "ap75": ap75}


def detection_artefacts(split, dets, logits, labels) -> dict:
    """The stored form of a detector's test evaluation: every detection with the ground truth (COCO AP, the
    examples figure, with the first test images) and the anchors' logit histogram per class (Figure 4)."""
    from flx.results.artefacts import N_EXAMPLE_IMAGES, encode, logit_histogram

    image = np.concatenate([np.full(len(d["scores"]), i, dtype=np.int32) for i, d in enumerate(dets)])
    boxes = torch.cat([d["boxes"] for d in dets]).reshape(-1, 4).float().numpy()
    scores = torch.cat([d["scores"] for d in dets]).float().numpy()
    truth = torch.cat(split.boxes).reshape(-1, 4).float().numpy()
    truth_image = np.concatenate([np.full(len(b), i, dtype=np.int32) for i, b in enumerate(split.boxes)])
    detections = encode(
        {
            "image": image,
            "boxes": boxes,
            "scores": scores,
            "truth_image": truth_image,
            "truth_boxes": truth,
            "n_images": np.array([len(split)]),
            "images": split.images[:N_EXAMPLE_IMAGES].numpy(),
        }
    )
    anchors = encode(logit_histogram(logits.float().numpy(), labels.numpy()))
    return {"detections": detections, "anchors": anchors}


def stored_detections(arrays: dict) -> tuple[list, list]:
    """(ground-truth boxes per image, detections per image) of a ``detections`` artefact, as
    :func:`coco_metrics` takes them."""
    n = int(arrays["n_images"][0])
    truth = [torch.from_numpy(arrays["truth_boxes"][arrays["truth_image"] == i].copy()) for i in range(n)]
    dets = []
    for i in range(n):
        at = arrays["image"] == i
        dets.append(
            {
                "boxes": torch.from_numpy(arrays["boxes"][at].copy()),
                "scores": torch.from_numpy(arrays["scores"][at].copy()),
                "labels": torch.zeros(int(at.sum()), dtype=torch.int64),
            }
        )
    return truth, dets
