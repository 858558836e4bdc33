"""COCO detection metrics (pycocotools) and a detector's stored test detections."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch


def coco_metrics(boxes_true, detections) -> dict:
    """COCO AP (IoU 0.50:0.95), AP50 and AP75 from pycocotools for one object class. ``boxes_true``: per image
    (K, 4) x1y1x2y2 tensors; ``detections``: per image dicts with boxes and scores."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (gt, det) in enumerate(zip(boxes_true, detections, strict=True)):
        images.append({"id": i + 1, "width": 1, "height": 1})
        for b in gt.tolist():
            w, h = b[2] - b[0], b[3] - b[1]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "bbox": [b[0], b[1], w, h],
                 "area": w * h, "iscrowd": 0}
            )  # fmt: skip
        for b, s in zip(det["boxes"].tolist(), det["scores"].tolist(), strict=True):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": s,
                }
            )
    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "ring"}]}
        gt.createIndex()
        dt = gt.loadRes(results)
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
