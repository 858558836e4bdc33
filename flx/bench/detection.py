"""``flx bench detection``: flx's detection training step and evaluation against torchvision's stock path, side
by side in one process, on the same network, data and batch (8 shapes images), per canvas size and thread count.

- **torchvision**: ``torchvision.models.detection.RetinaNet`` with flx's backbone and head sizes but its own
  transform (normalise, pad to a multiple of 32), ``Matcher`` per image and its own head losses
  (``sigmoid_focal_loss``, L1 boxes): the stock training step;
- **flx**: the padding-free step (:meth:`flx.models.retinanet.Detector.batch_loss`: stored anchor matches, both
  losses over the whole batch), split into batch assembly (images, flips, matches), forward + loss, backward
  and the optimiser step;
- **floor**: forward + backward of flx's network alone on the same batch, no loss: what no step can beat;
- **OHEM**: B = 128 and 512 (NMS 0.5 on the anchor-overlap graph) against FL;
- **evaluation** of a test split (512 images) by a briefly trained detector, on the same predictions: COCO AP
  with pycocotools against faster-coco-eval (``eval_speedup``; ``ap_equal``: the same AP, AP50 and AP75), the
  anchor AP with scikit-learn against flx's exact one (``anchor_ap_speedup``), and the prediction itself.

Times are medians of the measured steps after warm-up steps. Nothing here is asserted in tests.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

BATCH = 8
RUN_STEPS = 1200  # the detection tables' training length, for the per-run estimate


@dataclass
class DetectionRow:
    """One condition: a canvas size (px) and a torch thread count; times in milliseconds (evaluation: s)."""

    canvas: int
    threads: int
    anchors: int
    torchvision_step_ms: float
    flx_step_ms: float
    floor_ms: float
    batch_ms: float
    forward_loss_ms: float
    backward_ms: float
    optimizer_ms: float
    fl_step_ms: float
    ohem128_step_ms: float
    ohem512_step_ms: float
    predict_s: float
    coco_reference_s: float
    coco_flx_s: float
    anchor_ap_reference_s: float
    anchor_ap_flx_s: float
    detections: int
    ap_equal: bool
    step_speedup: float = 0.0
    floor_ratio: float = 0.0
    ohem512_vs_fl: float = 0.0
    eval_speedup: float = 0.0
    anchor_ap_speedup: float = 0.0
    run_estimate_s: float = 0.0

    def __post_init__(self):
        self.step_speedup = self.torchvision_step_ms / self.flx_step_ms
        self.floor_ratio = self.flx_step_ms / self.floor_ms
        self.ohem512_vs_fl = self.ohem512_step_ms / self.fl_step_ms
        self.eval_speedup = self.coco_reference_s / self.coco_flx_s
        self.anchor_ap_speedup = self.anchor_ap_reference_s / self.anchor_ap_flx_s
        # a table run: its steps, then the validation (256 images) and test (512) evaluations
        evaluation = self.predict_s + self.coco_flx_s + self.anchor_ap_flx_s
        self.run_estimate_s = self.flx_step_ms * RUN_STEPS / 1e3 + 1.5 * evaluation

    def as_dict(self) -> dict:
        return asdict(self)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _median_ms(step: Callable[[int], None], steps: int, device: str = "cpu", warmup: int = 3) -> float:
    for i in range(warmup):
        step(i)
    times = []
    for i in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step(warmup + i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _config(canvas: int, **fields):
    from flx.experiment.config import Config

    return Config(dataset="shapes", image_size=canvas, **{"loss": "focal", **fields}).normalized()


def _indices(i: int, n: int):
    import torch

    g = torch.Generator().manual_seed(i)
    return torch.randperm(n, generator=g)[:BATCH], torch.rand(BATCH, generator=g) < 0.5


def _flx_step(model, split, device: str = "cpu", parts: dict | None = None) -> Callable[[int], None]:
    """A training step of flx's path; ``parts`` (if given) collects the time of each part, in seconds."""
    import torch

    from flx.engine.detection import assignment, batch_of

    matches = assignment(split, model.anchors_for(split.images.shape[-1]))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step(i: int) -> None:
        t0 = time.perf_counter()
        images, matched, boxes = batch_of(split, *_indices(i, len(split)), matches, device)
        _sync(device)
        t1 = time.perf_counter()
        out = model.batch_loss(model.inputs(images), matched, boxes)
        loss = out["classification"] + out["bbox_regression"]
        float(loss.detach())  # the training loop reads the loss every step
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _sync(device)
        t3 = time.perf_counter()
        opt.step()
        _sync(device)
        if parts is not None:
            for name, t in (("batch", t1 - t0), ("forward_loss", t2 - t1), ("backward", t3 - t2)):
                parts.setdefault(name, []).append(t)
            parts.setdefault("optimizer", []).append(time.perf_counter() - t3)

    return step


def _stock_model(model):
    """torchvision's RetinaNet with ``model``'s backbone, anchors and head sizes, and its own losses."""
    import copy

    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.retinanet import RetinaNetHead

    from flx.models.retinanet import HEAD_CONVS, norm_layer

    backbone = copy.deepcopy(model.backbone)
    head_norm = model.head.classification_head.head_norm
    head = RetinaNetHead(
        backbone.out_channels, model.anchor_generator.num_anchors_per_location()[0], 1,
        norm_layer=norm_layer(head_norm),
    )  # fmt: skip
    head.classification_head.conv = head.classification_head.conv[:HEAD_CONVS]
    head.regression_head.conv = head.regression_head.conv[:HEAD_CONVS]
    size = model.transform.min_size[0]
    return RetinaNet(
        backbone, num_classes=1, min_size=size, max_size=size, image_mean=[0.5] * 3, image_std=[0.25] * 3,
        anchor_generator=model.anchor_generator, head=head, _skip_resize=True,
    )  # fmt: skip


def _stock_step(model, split, device: str = "cpu") -> Callable[[int], None]:
    import torch

    from flx.models.anchors import flip_boxes

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    size = split.images.shape[-1]

    def step(i: int) -> None:
        idx, flip = _indices(i, len(split))
        images, targets = [], []
        for j, f in zip(idx.tolist(), flip.tolist(), strict=True):
            img, boxes = split.images[j].float().div(255), split.boxes[j]
            images.append((img.flip(-1) if f else img).to(device))
            boxes = (flip_boxes(boxes, size) if f else boxes).to(device)
            targets.append(
                {"boxes": boxes, "labels": torch.zeros(len(boxes), dtype=torch.int64, device=device)}
            )
        out = model(images, targets)
        loss = out["classification"] + out["bbox_regression"]
        float(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _floor(model, split, device: str = "cpu") -> Callable[[int], None]:
    x = model.inputs(split.images[:BATCH].to(device))
    model.train()

    def step(i: int) -> None:
        logits, regression, _ = model.heads(x)
        (logits.sum() + regression.sum()).backward()

    return step


def _evaluation(model, split) -> dict:
    """Seconds to predict ``split``, then for COCO AP and the anchor AP each: the reference (pycocotools,
    scikit-learn) and flx's (faster-coco-eval, :func:`flx.experiment.metrics.average_precision`) on the same
    predictions; whether the COCO numbers are equal (to 1e-9), and how many detections there were."""
    from sklearn.metrics import average_precision_score

    from flx.engine.coco import coco_metrics
    from flx.engine.detection import anchor_labels, predict_split
    from flx.experiment.metrics import average_precision

    t0 = time.perf_counter()
    dets, logits, anchors = predict_split(model, split)
    labels = anchor_labels(split, anchors)
    keep = labels >= 0
    y, scores = labels[keep].numpy(), logits[keep].double().sigmoid().numpy()
    times = {"predict_s": time.perf_counter() - t0}
    runs = {
        "coco_reference_s": lambda: coco_metrics(split.boxes, dets, backend="pycocotools"),
        "coco_flx_s": lambda: coco_metrics(split.boxes, dets),
        "anchor_ap_reference_s": lambda: average_precision_score(y, scores),
        "anchor_ap_flx_s": lambda: average_precision(y, scores),
    }
    results = {}
    for name, run in runs.items():  # the median of 3 (each is a second or two of pure CPU work)
        elapsed = []
        for _ in range(3):
            t0 = time.perf_counter()
            results[name] = run()
            elapsed.append(time.perf_counter() - t0)
        times[name] = statistics.median(elapsed)
    reference, ours = results["coco_reference_s"], results["coco_flx_s"]
    times["ap_equal"] = all(abs(reference[k] - ours[k]) <= 1e-9 for k in ("ap", "ap50", "ap75"))
    times["detections"] = sum(len(d["scores"]) for d in dets)
    return times


def bench_detection(
    canvases=(48, 64, 96),
    threads=(1, 2),
    steps: int = 20,
    progress: Callable[[str], None] | None = None,
    device: str = "cpu",
) -> list[DetectionRow]:
    """Measure every (canvas, threads) condition on ``device`` (threads: the CPU's, for the host side on a
    GPU); see the module's doc for what each number is."""
    import torch

    from flx.engine.device import resolve_device

    device = resolve_device(device)  # a GPU that is not there: one line
    from flx.data.shapes import load_shapes, render
    from flx.engine.detection import train_detector

    previous = torch.get_num_threads()
    rows = []
    try:
        for canvas in canvases:
            train, _, _ = load_shapes(n_images=256, image_size=canvas)
            test = render(512, canvas, seed=10_007)
            torch.set_num_threads(max(threads))
            if progress:
                progress(f"{canvas} px: training a detector for the evaluation (300 steps)...")
            trained, *_ = train_detector(_config(canvas, steps=300), train, device=device)
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                if progress:
                    progress(f"{canvas} px, {n_threads} thread(s): steps...")
                rows.append(_condition(canvas, n_threads, steps, train, test, trained, device))
    finally:
        torch.set_num_threads(previous)
    return rows


def _condition(canvas, n_threads, steps, train, test, trained, device) -> DetectionRow:
    import torch

    from flx.models.retinanet import build_detector

    def built(**fields):
        return build_detector(_config(canvas, **fields)).to(device)

    torch.manual_seed(0)
    model = built()
    parts: dict = {}
    flx_ms = _median_ms(_flx_step(model, train, device, parts), steps, device)
    part_ms = {name: statistics.median(ts[3:]) * 1e3 for name, ts in parts.items()}
    stock = (
        _stock_model(model).to(device).to(memory_format=torch.contiguous_format)
    )  # as torchvision's users run it
    stock_ms = _median_ms(_stock_step(stock, train, device), steps, device)
    floor_ms = _median_ms(_floor(model, train, device), steps, device)
    ohem = {k: _median_ms(_flx_step(built(loss="ohem", ohem_k=k, ohem_nms=0.5), train, device), steps, device)
            for k in (128, 512)}  # fmt: skip
    fl_ms = _median_ms(_flx_step(built(), train, device), steps, device)
    return DetectionRow(
        canvas=canvas, threads=n_threads, anchors=len(model.anchors_for(canvas)),
        torchvision_step_ms=stock_ms, flx_step_ms=flx_ms, floor_ms=floor_ms,
        batch_ms=part_ms["batch"], forward_loss_ms=part_ms["forward_loss"], backward_ms=part_ms["backward"],
        optimizer_ms=part_ms["optimizer"], fl_step_ms=fl_ms, ohem128_step_ms=ohem[128], ohem512_step_ms=ohem[512],
        **_evaluation(trained, test),
    )  # fmt: skip
