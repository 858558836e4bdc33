"""The dense-detection replication: the shapes data set, the tiny RetinaNet, OHEM with NMS, COCO evaluation,
declared claims and their verdicts, and the Poly-1 epsilon bound."""

import math

import pandas as pd
import pytest
import torch

from flx.data.shapes import load_shapes, render
from flx.engine.coco import coco_metrics
from flx.engine.detection import anchor_imbalance, train_detector
from flx.errors import ConfigError
from flx.experiment.config import Config
from flx.experiment.spec import validate_spec
from flx.losses.bounds import epsilon_bound
from flx.losses.functional import poly1_cross_entropy, poly1_focal_loss
from flx.models.anchors import OverlapGraph
from flx.models.retinanet import build_detector
from flx.models.retinanet import ohem_select as select
from flx.report.claims import judge


def test_shapes_boxes_lie_inside_the_image_and_generation_is_deterministic():
    split = render(64, 48, seed=3)
    assert split.images.shape == (64, 3, 48, 48) and split.images.dtype == torch.uint8
    counts = [len(b) for b in split.boxes]
    assert min(counts) >= 1 and max(counts) <= 2 and split.n_pos == sum(counts)
    boxes = torch.cat(split.boxes)
    assert (boxes >= 0).all() and (boxes <= 48).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    again = render(64, 48, seed=3)
    assert torch.equal(split.images, again.images) and all(map(torch.equal, split.boxes, again.boxes))
    assert not torch.equal(render(64, 48, seed=4).images, split.images)


def test_shapes_anchor_imbalance_is_measured():
    config = Config(dataset="shapes", loss="ce").normalized()
    model = build_detector(config)
    stats = anchor_imbalance(render(64, 64, seed=0), config, model)
    assert stats["anchors_per_image"] == (32 * 32 + 16 * 16) * 9 == len(model.anchors_for(64))
    assert 5 < stats["pos_anchors_per_image"] < 60
    # hundreds of background anchors per object anchor, and the count is what the ratio says
    assert 300 < stats["imbalance"] < 800
    neg = stats["anchors_per_image"] - stats["pos_anchors_per_image"] - stats["ignored_anchors_per_image"]
    assert stats["imbalance"] == pytest.approx(neg / stats["pos_anchors_per_image"], rel=1e-6)
    assert 0 < stats["neg_loss_share"] < 1


def test_objects_and_anchors_keep_their_size_so_a_larger_canvas_adds_only_background():
    """The regime map's premise: the same objects and anchors on a larger canvas, so the object anchors per image
    stay put and the imbalance grows with the canvas's area."""
    config = Config(dataset="shapes", loss="ce").normalized()
    model = build_detector(config)
    small, large = render(256, 64, seed=0), render(256, 128, seed=0)
    sides = lambda split: torch.cat(split.boxes)[:, 2:] - torch.cat(split.boxes)[:, :2]  # noqa: E731
    assert sides(small).mean(0).allclose(sides(large).mean(0), rtol=0.1)
    a, b = anchor_imbalance(small, config, model), anchor_imbalance(large, config, model)
    assert b["anchors_per_image"] == 4 * a["anchors_per_image"]
    assert b["pos_anchors_per_image"] == pytest.approx(a["pos_anchors_per_image"], rel=0.15)
    assert 3.2 < b["imbalance"] / a["imbalance"] < 4.8


def test_detector_loss_falls_on_a_tiny_set():
    torch.set_num_threads(1)
    train = render(8, 32, seed=1)
    config = Config(dataset="shapes", loss="focal", image_size=32, batch_size=8).normalized()
    losses = []
    for steps in (1, 40):
        c = Config(**{**config.to_dict(), "steps": steps})
        model, status, loss, run, *_ = train_detector(c, train)
        assert status == "ok" and run == steps
        losses.append(loss)
    assert losses[1] < 0.8 * losses[0]  # 1.22 -> 0.79 when written


def test_prior_sets_the_classifier_bias():
    on = build_detector(Config(dataset="shapes").normalized())
    off = build_detector(Config(dataset="shapes", prior="none").normalized())
    bias_on = on.head.classification_head.cls_logits.bias
    assert torch.allclose(bias_on, torch.full_like(bias_on, -math.log(99)))
    assert (off.head.classification_head.cls_logits.bias == 0).all()


def ohem_select(losses, boxes, positive, k, nms_thresh, ratio=None):
    """OHEM over one image whose anchors are ``boxes`` (every anchor valid), NMS at ``nms_thresh``."""
    graph = OverlapGraph(boxes, nms_thresh) if nms_thresh is not None else None
    return select(losses, torch.arange(len(boxes)), positive, k, graph, ratio)


def _grid_boxes():
    """Anchors on a 1-D line, 8 px wide, 1 px apart: neighbours overlap with IoU 7/9 = 0.78, two apart 6/10."""
    x = torch.arange(40, dtype=torch.float32)
    return torch.stack([x, torch.zeros(40), x + 8, torch.full((40,), 8.0)], dim=1)


def test_ohem_k_and_the_one_to_three_rule_change_what_is_kept():
    g = torch.Generator().manual_seed(0)
    boxes = torch.stack([torch.tensor([i * 10.0, 0, i * 10 + 8, 8]) for i in range(200)])  # disjoint
    losses = torch.rand(200, generator=g)
    positive = torch.zeros(200, dtype=torch.bool)
    positive[:20] = True
    losses[:20] += 1  # positives are the hardest
    k8, k32 = ohem_select(losses, boxes, positive, 8, 0.5), ohem_select(losses, boxes, positive, 32, 0.5)
    assert len(k8) == 8 and len(k32) == 32 and set(k8.tolist()) < set(k32.tolist())
    assert positive[k8].all()  # without the rule: the 8 hardest, all positives
    ruled = ohem_select(losses, boxes, positive, 8, 0.5, ratio=3.0)
    assert positive[ruled].sum() == 2 and (~positive[ruled]).sum() == 6  # at most 8/4 positives
    hardest_neg = torch.topk(torch.where(positive, -1.0, losses), 6).indices
    assert set(ruled[~positive[ruled]].tolist()) == set(hardest_neg.tolist())


def test_ohem_one_to_three_keeps_at_most_three_negatives_per_positive_and_leaves_the_rest_unfilled():
    """SSD's rule, which the paper's OHEM 1:3 follows: 2 positives survive, so 6 negatives (the hardest) are
    kept of B = 128 and the rest of the minibatch stays empty; an image without positives trains on nothing."""
    boxes = torch.stack([torch.tensor([i * 10.0, 0, i * 10 + 8, 8]) for i in range(200)])  # disjoint
    losses = torch.linspace(2, 0, 200)
    positive = torch.zeros(200, dtype=torch.bool)
    positive[[50, 120]] = True
    kept = ohem_select(losses, boxes, positive, 128, 0.5, ratio=3.0)
    assert sorted(kept[positive[kept]].tolist()) == [50, 120]
    assert kept[~positive[kept]].tolist() == [0, 1, 2, 3, 4, 5]  # the six hardest negatives
    assert len(ohem_select(losses, boxes, torch.zeros(200, dtype=torch.bool), 128, 0.5, ratio=3.0)) == 0
    assert len(ohem_select(losses, boxes, positive, 128, 0.5)) == 128  # plain OHEM fills B


def test_ohem_nms_removes_overlapping_anchors_at_05_and_keeps_them_at_07():
    boxes = _grid_boxes()
    losses = torch.linspace(1, 0, 40)  # the leftmost anchor is the hardest
    positive = torch.zeros(40, dtype=torch.bool)
    at_05 = ohem_select(losses, boxes, positive, 5, 0.5)
    at_07 = ohem_select(losses, boxes, positive, 5, 0.7)
    none = ohem_select(losses, boxes, positive, 5, None)
    assert none.tolist() == [0, 1, 2, 3, 4]
    assert at_07.tolist() == [0, 2, 4, 6, 8]  # IoU 0.78 > 0.7 suppressed, 0.6 kept
    assert at_05.tolist() == [0, 3, 6, 9, 12]  # 0.6 > 0.5 suppressed too, 5/11 = 0.45 kept
    # the fast path (NMS over the top 4k) gives what NMS over every anchor gives
    from torchvision.ops import nms

    full = nms(boxes, losses, 0.5)[:5]
    assert at_05.tolist() == full.tolist()


def test_coco_evaluation_gives_the_known_ap_on_a_hand_made_case():
    gt = [torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[20.0, 20, 30, 30]])]
    perfect = [{"boxes": g.clone(), "scores": torch.tensor([0.9])} for g in gt]
    assert coco_metrics(gt, perfect) == pytest.approx({"ap": 1.0, "ap50": 1.0, "ap75": 1.0}, abs=1e-6)
    # one perfect hit, one box at IoU 0.6 with a higher score: AP50 1; AP75 and the miss rank below the hit
    shifted = torch.tensor([[22.0, 20, 32, 30]])  # IoU 8x10 / (2*100 - 80) = 0.667
    half = [perfect[0], {"boxes": shifted, "scores": torch.tensor([0.95])}]
    m = coco_metrics(gt, half)
    assert m["ap50"] == pytest.approx(1.0, abs=1e-6)
    # at IoU >= 0.7 only the lower-scored hit counts: precision 1/2 at recall 1/2 -> COCO's 101-point AP 0.5 * 51/101
    assert m["ap75"] == pytest.approx(0.5 * 51 / 101, abs=1e-3)
    assert coco_metrics(gt, [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}] * 2)["ap"] == 0.0


# ------------------------------------------------------------------------------------------------------------
# Claims
# ------------------------------------------------------------------------------------------------------------
def _runs(diffs, val=(0.5, 0.4)):
    rows = []
    for seed, d in enumerate(diffs):
        rows.append({"loss": "focal", "gamma": 2.0, "alpha": 0.25, "seed": seed, "status": "ok",
                     "ap": 0.5 + d, "val_ap": val[0]})  # fmt: skip
        rows.append({"loss": "ohem", "gamma": None, "alpha": None, "ohem_k": 128, "seed": seed, "status": "ok",
                     "ap": 0.5, "val_ap": val[1]})  # fmt: skip
        rows.append({"loss": "ohem", "gamma": None, "alpha": None, "ohem_k": 512, "seed": seed, "status": "ok",
                     "ap": 0.9, "val_ap": 0.1})  # fmt: skip
    return pd.DataFrame(rows)


CLAIM = {"name": "FL beats the best OHEM", "a": {"loss": "focal"}, "b": {"loss": "ohem"}, "min_seeds": 5}


def test_a_claims_verdict_flips_with_the_paired_difference():
    better = judge(CLAIM, _runs([0.05, 0.06, 0.04, 0.05, 0.07]))
    worse = judge(CLAIM, _runs([-0.05, -0.06, -0.04, -0.05, -0.07]))
    mixed = judge(CLAIM, _runs([0.05, -0.06, 0.04, -0.05, 0.01]))
    assert (better.verdict, worse.verdict, mixed.verdict) == ("replicated", "contradicted", "inconclusive")
    assert better.low > 0 and worse.high < 0 and mixed.low < 0 < mixed.high
    assert better.n == 5 and better.mean == pytest.approx(0.054)
    # "less" turns the direction around
    assert (
        judge({**CLAIM, "direction": "less"}, _runs([0.05, 0.06, 0.04, 0.05, 0.07])).verdict == "contradicted"
    )
    # fewer paired seeds than declared: no verdict
    assert judge(CLAIM, _runs([0.05, 0.06, 0.04])).verdict == "too few seeds"


def test_the_best_setting_of_a_side_is_chosen_on_validation_not_test():
    # OHEM k = 512 has the best test AP (0.9) but the worse validation AP: k = 128 stands for OHEM
    verdict = judge(CLAIM, _runs([0.05, 0.06, 0.04, 0.05, 0.07]))
    assert "ohem_k=128" in verdict.b and verdict.verdict == "replicated"


def test_failed_runs_score_as_declared():
    rows = []
    for seed in range(5):
        rows.append({"loss": "ce", "prior": 0.01, "seed": seed, "status": "ok", "ap": 0.3, "val_ap": 0.3})
        rows.append({"loss": "ce", "prior": None, "seed": seed, "status": "collapsed", "ap": math.nan,
                     "val_ap": math.nan})  # fmt: skip
    claim = {"name": "prior", "a": {"loss": "ce", "prior": 0.01}, "b": {"loss": "ce", "prior": "none"}}
    dropped = judge({**claim, "failures": "drop"}, pd.DataFrame(rows))
    assert dropped.verdict == "too few seeds" and dropped.failed == (0, 5) and "left out" in dropped.line()
    scored = judge(claim, pd.DataFrame(rows))  # by default a failed run scores AP 0
    assert scored.verdict == "replicated" and scored.n == 5 and scored.mean == pytest.approx(0.3)
    assert scored.failed == (0, 5) and "0 + 5 failed (scored 0)" in scored.line()


def test_a_side_is_chosen_with_its_failed_runs_counted():
    """Two OHEM settings: k = 512 has the best validation AP over its ok runs but 2 of its 5 seeds collapsed;
    scored as AP 0 they make k = 128 the better choice on validation."""
    rows = []
    for seed in range(5):
        rows.append({"loss": "focal", "seed": seed, "status": "ok", "ap": 0.5, "val_ap": 0.5})
        rows.append({"loss": "ohem", "ohem_k": 128, "seed": seed, "status": "ok", "ap": 0.4, "val_ap": 0.4})
        failed = seed < 2
        rows.append({"loss": "ohem", "ohem_k": 512, "seed": seed, "status": "collapsed" if failed else "ok",
                     "ap": math.nan if failed else 0.45, "val_ap": math.nan if failed else 0.45})  # fmt: skip
    runs = pd.DataFrame(rows)
    assert "ohem_k=128" in judge(CLAIM, runs).b
    assert "ohem_k=512" in judge({**CLAIM, "failures": "drop"}, runs).b


def test_a_verdict_shows_the_signed_rank_test_beside_the_interval():
    from scipy import stats

    diffs = [0.05, 0.06, 0.04, 0.05, 0.07, 0.03, 0.08]
    verdict = judge({**CLAIM, "min_seeds": 7}, _runs(diffs))
    assert verdict.p == pytest.approx(stats.wilcoxon(diffs).pvalue) and verdict.p < 0.05
    assert f"signed-rank p = {verdict.p:.3g}" in verdict.line()
    assert judge(CLAIM, _runs([0.05, 0.06, 0.04, 0.05, 0.07])).p == pytest.approx(
        0.0625
    )  # its floor at n = 5


def test_claims_are_validated_in_the_spec():
    base = {"grid": [{"loss": ["focal"]}]}
    ok = {"name": "x", "a": {"loss": "focal"}, "b": {"loss": "ce"}}
    assert validate_spec({**base, "report": {"claims": [ok]}})["report"]["claims"][0]["min_seeds"] == 3
    for bad, message in (
        ({**ok, "a": {"gama": 2}}, "unknown config field 'gama'"),
        ({**ok, "b": {"gamma": -1}}, "b.gamma got -1"),
        ({**ok, "direction": "up"}, "direction got 'up'"),
        ({**ok, "metric": "auc"}, "metric got 'auc'"),
        ({"name": "x", "a": {"loss": "focal"}}, "b is missing"),
        ({**ok, "verdict": "replicated"}, "unknown key(s) ['verdict']"),
    ):
        with pytest.raises(ConfigError, match=None) as err:
            validate_spec({**base, "report": {"claims": [bad]}}, "s.toml")
        assert message in str(err.value) and "s.toml" in str(err.value)


# ------------------------------------------------------------------------------------------------------------
# Poly-1: the epsilon range for which it is a loss
# ------------------------------------------------------------------------------------------------------------
def test_poly1_epsilon_bound_is_where_the_loss_stops_falling_as_predictions_get_worse():
    x = torch.linspace(-12, 12, 2001, dtype=torch.float64)  # logit of a positive: p_t rises with x
    y = torch.ones_like(x)
    for alpha in (0.25, 0.5, 0.9):
        bound = epsilon_bound(alpha)
        assert bound == -min(alpha, 1 - alpha)
        at = poly1_focal_loss(x, y, alpha=alpha, gamma=2.0, epsilon=bound, reduction="none")
        assert (at.diff() <= 1e-12).all()  # falls as p_t rises: a loss
    ce = poly1_cross_entropy(x, y, epsilon=-1.0, reduction="none")
    assert (ce.diff() <= 1e-12).all()
    with pytest.raises(ValueError, match="epsilon got -1; accepted: a number >= -0.25"):
        poly1_focal_loss(x, y, alpha=0.25, gamma=2.0, epsilon=-1.0)
    with pytest.raises(ValueError, match="accepted: a number >= -1"):
        poly1_cross_entropy(x, y, epsilon=-1.5)
    with pytest.raises(ConfigError, match="epsilon got -1; accepted: a number >= -0.25 for poly1_focal"):
        Config(loss="poly1_focal", epsilon=-1.0).normalized()
    assert Config(loss="poly1_focal", epsilon=-0.25).normalized().epsilon == -0.25


def test_below_the_bound_the_poly1_focal_loss_falls_as_a_positive_gets_more_wrong():
    """Why the bound exists: at epsilon = -1 with alpha 0.25 (the stored run that was an inverted classifier)."""
    from flx.losses.functional import sigmoid_focal_loss

    x = torch.linspace(2, 12, 101, dtype=torch.float64)
    fl = sigmoid_focal_loss(x, torch.ones_like(x), alpha=0.25, gamma=2.0)
    poly = fl - torch.sigmoid(-x).pow(3)  # FL + epsilon (1 - p_t)^3 at epsilon = -1, computed by hand
    assert (poly.diff() > 0).any()  # the "loss" rises as the positive gets more right


# ------------------------------------------------------------------------------------------------------------
# Detection at speed: static assignment, batched losses, NMS on the anchor-overlap graph, no padding
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "loss,extra",
    [
        ("focal", {}),
        ("focal", {"loss_norm": "image"}),
        ("balanced_ce", {"alpha": 0.75}),
        ("ohem", {"ohem_k": 128, "ohem_nms": 0.5}),
        ("ohem", {"ohem_k": 64, "ohem_nms": 0.7, "ohem_ratio": 3.0}),
    ],
)
def test_batched_losses_equal_torchvision_per_image_path(loss, extra):
    """On 64 px images (no padding either way) flx's batched losses from the stored anchor matches equal
    torchvision's forward (its transform, Matcher and per-image head losses, normalised per ``loss_norm``) on
    random batches."""
    from flx.engine.detection import assignment

    torch.manual_seed(0)
    split = render(16, 64, seed=5)
    config = Config(dataset="shapes", loss=loss, image_size=64, **extra).normalized()
    model = build_detector(config).train()
    matches = assignment(split, model.anchors_for(64))
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        idx = torch.randperm(16, generator=g)[:8]
        flip = torch.rand(8, generator=g) < 0.5
        images = torch.where(flip[:, None, None, None], split.images[idx].flip(-1), split.images[idx])
        matched, boxes = matches.batch(idx, flip)
        ours = model.batch_loss(model.inputs(images), matched, boxes)
        targets = [
            {
                "boxes": boxes[i, : int(matches.counts[j])],
                "labels": torch.zeros(int(matches.counts[j]), dtype=torch.int64),
            }
            for i, j in enumerate(idx.tolist())
        ]
        stock = model([img.float() / 255 for img in images], targets)
        for name in ("classification", "bbox_regression"):
            assert float(ours[name].detach()) == pytest.approx(
                float(stock[name].detach()), rel=1e-6, abs=1e-7
            )


def test_loss_norm_divides_by_the_batch_or_by_each_image():
    """A hand case: two images with 1 and 9 object anchors and summed losses 4 and 9. ``batch`` (Detectron,
    detectron2, mmdetection) divides the 13 by the 10 object anchors; ``image`` (torchvision) averages 4 / 1 and
    9 / 9, so the image with one object anchor weighs its loss 9 times as much as the other."""
    from flx.models.retinanet import normalise

    per_image, positives = torch.tensor([4.0, 9.0]), torch.tensor([1, 9])
    assert float(normalise(per_image, positives, "batch")) == pytest.approx(1.3)
    assert float(normalise(per_image, positives, "image")) == pytest.approx(2.5)
    assert float(normalise(torch.tensor([2.0]), torch.tensor([0]), "batch")) == 2.0  # no object: divided by 1
    assert Config(dataset="shapes").normalized().loss_norm == "batch"
    assert Config(dataset="synthetic").normalized().loss_norm is None


def test_static_matches_equal_torchvision_matcher_with_low_quality_matches():
    from torchvision.models.detection import _utils as det_utils
    from torchvision.ops import box_iou

    from flx.models.anchors import match, pad_boxes

    matcher = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
    anchors = build_detector(Config(dataset="shapes").normalized()).anchors_for(64)
    g = torch.Generator().manual_seed(2)
    boxes = []
    for i in range(40):
        k = i % 4  # 0 to 3 boxes, some tiny (matched only as low-quality matches), some empty images
        lo = torch.rand(k, 2, generator=g) * 40
        wh = torch.rand(k, 2, generator=g) * (12 if i % 3 else 2) + 0.5
        boxes.append(torch.cat([lo, lo + wh], dim=1))
    padded, counts = pad_boxes(boxes)
    ours = match(anchors, padded, counts)
    for i, b in enumerate(boxes):
        expected = matcher(box_iou(b, anchors)) if len(b) else torch.full((len(anchors),), -1)
        assert torch.equal(ours[i], expected), i


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_graph_nms_equals_torchvision_nms(threshold):
    from torchvision.ops import nms

    anchors = build_detector(Config(dataset="shapes").normalized()).anchors_for(64)
    graph = OverlapGraph(anchors, threshold)
    g = torch.Generator().manual_seed(3)
    for _ in range(12):
        scores = torch.rand(len(anchors), generator=g)
        ranked = torch.topk(scores, int(torch.randint(20, len(anchors), (1,), generator=g))).indices
        expected = ranked[nms(anchors[ranked], scores[ranked], threshold)]
        assert torch.equal(graph.nms(ranked), expected)
        assert torch.equal(graph.nms(ranked, limit=7), expected[:7])  # it stops at the survivors asked for


def test_the_model_trains_on_the_anchors_the_record_counts():
    """No padding: a 48 px image gives 24x24 and 12x12 feature maps, 6,480 anchors, and the record says so
    (torchvision's transform would pad to 64 px: 11,520 anchors, 5,040 of them on padding)."""
    config = Config(dataset="shapes", image_size=48).normalized()
    model = build_detector(config)
    split = render(4, 48, seed=0)
    dets, logits, anchors = model.predict(split.images)
    assert logits.shape == (4, 6480) and len(anchors) == 6480
    assert anchor_imbalance(split, config, model)["anchors_per_image"] == logits.shape[1]
    assert model.transform([split.images[0].float() / 255])[0].tensors.shape[-1] == 64  # the stock path pads


def test_faster_coco_eval_gives_pycocotools_numbers():
    """The C++ COCOeval (the default) against pycocotools on detections of every kind: hits, near misses,
    duplicates, images without detections, tied scores."""
    g = torch.Generator().manual_seed(4)
    truth, dets = [], []
    for i in range(60):
        gt = torch.rand(i % 3, 2, generator=g) * 40
        gt = torch.cat([gt, gt + 4 + torch.rand(len(gt), 2, generator=g) * 10], dim=1)
        noisy = gt.repeat(3, 1) + torch.randn(3 * len(gt), 4, generator=g) * 0.7
        junk = torch.rand(i % 7, 2, generator=g) * 40
        boxes = torch.cat([noisy, torch.cat([junk, junk + 5], dim=1)])
        scores = torch.round(torch.rand(len(boxes), generator=g) * 20) / 20  # ties
        truth.append(gt)
        dets.append({"boxes": boxes if i % 11 else boxes[:0], "scores": scores if i % 11 else scores[:0]})
    faster, reference = coco_metrics(truth, dets), coco_metrics(truth, dets, backend="pycocotools")
    assert 0.05 < reference["ap"] < 0.95
    assert faster == pytest.approx(reference, abs=1e-9)


def test_anchor_average_precision_equals_scikit_learn():
    import numpy as np
    from sklearn.metrics import average_precision_score

    from flx.experiment.metrics import average_precision

    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(2, 3000))
        y = rng.random(n) < rng.random() * 0.3
        scores = rng.random(n) if trial % 2 else np.round(rng.random(n) * 10) / 10  # ties half the time
        if y.any():
            assert average_precision(y, scores) == pytest.approx(
                average_precision_score(y, scores), abs=1e-12
            )


@pytest.mark.parametrize(
    "k,threshold,ratio",
    [(16, 0.5, None), (512, 0.5, None), (1500, 0.5, None), (64, 0.7, None), (64, 0.5, 3.0)],
)
def test_ohem_keep_is_nms_over_every_anchor_of_each_image(k, threshold, ratio):
    """The batched, compiled OHEM choice against the definition: each image's valid anchors ranked by loss,
    torchvision's NMS over all of them, the k best survivors (with a ratio: positives first, capped, then at most
    ratio negatives per positive)."""
    from torchvision.ops import nms

    from flx.models.anchors import ohem_keep

    anchors = build_detector(Config(dataset="shapes").normalized()).anchors_for(64)
    graph = OverlapGraph(anchors, threshold)
    g = torch.Generator().manual_seed(5)
    losses = torch.rand(4, len(anchors), generator=g)
    valid = torch.rand(4, len(anchors), generator=g) > 0.05
    positive = (torch.rand(4, len(anchors), generator=g) < 0.01) & valid
    keep, count = ohem_keep(losses, valid, positive, k, ratio, graph)
    for i in range(4):
        idx = valid[i].nonzero().squeeze(1)
        order = idx[torch.argsort(losses[i, idx], descending=True)]
        survivors = order[nms(anchors[order], losses[i, order], threshold)]
        if ratio is None:
            expected = survivors[:k]
        else:
            pos = survivors[positive[i, survivors]][: int(k // (1 + ratio))]
            most = min(k - len(pos), int(ratio * len(pos)))
            expected = torch.cat([pos, survivors[~positive[i, survivors]][:most]])
        assert int(count[i]) == len(expected) and torch.equal(keep[i, : int(count[i])], expected)


def test_the_watch_flags_a_knock_back_with_its_step_and_not_a_run_that_trains():
    """A knock-back: the object-anchor loss falls, then returns to its initial level (the classifier back at
    the prior) with nothing non-finite. A normal run's loss falls and stays down; noise is not a knock-back."""
    from flx.engine.status import WINDOW, Watcher, near_chance

    g = torch.Generator().manual_seed(0)
    trains, knocked = Watcher(), Watcher()
    for step in range(400):
        noise = 0.05 * float(torch.rand(1, generator=g))
        falling = 1.06 * math.exp(-step / 60) + 0.05
        trains.gradients(step, falling + noise, 5.0 + step % 7)
        knocked.gradients(step, (falling if step < 200 else 1.06) + noise, 369.0 if step == 205 else 5.0)
    assert trains.knocked_back is None and trains.max_grad_norm == 11.0
    assert 0.05 < trains.rebound < 0.5 and knocked.rebound >= 0.9 and math.isnan(Watcher().rebound)
    assert 200 <= knocked.knocked_back < 200 + WINDOW and knocked.max_grad_norm == 369.0
    assert f"knocked back at step {knocked.knocked_back}" in knocked.message()
    assert near_chance(0.014, 1 / 500) and not near_chance(0.3, 1 / 500)


def test_clip_grad_caps_each_step_and_the_watch_sees_the_norm_before_clipping():
    """One SGD step moves the weights by lr x (clipped gradient + weight decay); the Watch records the gradient
    norm before clipping. clip_grad = 0 turns clipping off (a far larger step); detection clips at 10 by
    default, and a record older than the field (no clip_grad) reads as not clipped."""
    from flx.experiment.config import config_from_record

    train, _, _ = load_shapes(16, 32)
    moved = {}
    for clip in (1e-4, 0.0):
        config = Config(dataset="shapes", steps=1, image_size=32, n_images=16, lr=0.1, clip_grad=clip)
        config = config.normalized()
        torch.manual_seed(config.seed)
        before = [p.detach().clone() for p in build_detector(config).parameters()]
        model, status, _, _, watch = train_detector(config, train)
        after = [p.detach() for p in model.parameters()]
        moved[clip] = math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in zip(after, before, strict=True)))
        weights = math.sqrt(sum(float(b.pow(2).sum()) for b in before))
        assert status == "ok" and watch.max_grad_norm > 1e-3
    assert moved[1e-4] <= 0.1 * (1e-4 + 1e-4 * weights) * 1.001 and moved[0.0] > 100 * moved[1e-4]
    assert Config(dataset="shapes").normalized().clip_grad == 10.0
    assert config_from_record({"dataset": "shapes"}).normalized().clip_grad == 0.0


def test_a_detection_record_has_its_largest_gradient_norm_and_a_failure_has_its_step():
    from flx.engine.detection import run_detection

    train, test, meta = load_shapes(16, 32)
    ok, _ = run_detection(
        Config(dataset="shapes", steps=3, image_size=32, n_images=16).normalized(), train, test, meta
    )
    assert ok["max_grad_norm"] > 0 and ok["anchors_per_image"] == (16 * 16 + 8 * 8) * 9
    blown = Config(
        dataset="shapes", steps=5, image_size=32, n_images=16, lr=1e6, head_norm="off"
    ).normalized()
    failed, _ = run_detection(blown, train, test, meta)
    assert failed["status"] in ("diverged", "collapsed") and failed["collapse_step"] <= 5
    assert f"at step {failed['collapse_step']}" in failed["error"]


def test_the_regime_map_draws_each_canvas_claim_at_its_measured_imbalance(tmp_path):
    from flx.report.figures import regime_map
    from flx.report.tables import ReportSpec

    rows, claims = [], []
    for size, imbalance, gain in ((64, 515.0, 0.01), (96, 1172.0, 0.03), (128, 2089.0, 0.05)):
        for seed in range(5):
            common = {"image_size": size, "seed": seed, "status": "ok", "imbalance": imbalance}
            rows.append({**common, "loss": "focal", "ap": 0.6 + gain + 0.001 * seed, "val_ap": 0.6})
            rows.append({**common, "loss": "balanced_ce", "ap": 0.6, "val_ap": 0.6})
        claims.append({"name": f"{size} px: FL beats CE", "a": {"loss": "focal", "image_size": size},
                       "b": {"loss": "balanced_ce", "image_size": size}})  # fmt: skip
    spec = ReportSpec(name="regimes", claims=claims)
    path = regime_map(pd.DataFrame(rows), tmp_path, spec)
    assert path == tmp_path / "regime_map.png" and path.stat().st_size > 10_000
    no_canvas = ReportSpec(name="x", claims=[{**CLAIM}])
    assert regime_map(_runs([0.05] * 5), tmp_path, no_canvas) is None


def test_ohem_normalised_by_the_object_anchors_has_focal_losss_scale():
    """ohem_norm = objects divides the kept anchors' loss by the object anchors, as focal loss's is: with B = 128
    and 4 object anchors, 32 times the loss (and gradient) of dividing by the 128 kept."""
    from flx.models.retinanet import OhemSampler

    per_anchor = torch.rand(2, 500, generator=torch.Generator().manual_seed(0))
    positive = torch.zeros(2, 500, dtype=torch.bool)
    positive[:, :4] = True
    valid = torch.ones(2, 500, dtype=torch.bool)
    kept = OhemSampler(128).loss(per_anchor, positive, valid, None)
    objects = OhemSampler(128, norm="objects").loss(per_anchor, positive, valid, None, "batch")
    assert objects.item() == pytest.approx(32 * kept.item())
    config = Config(dataset="shapes", loss="ohem", ohem_k=128, ohem_norm="objects").normalized()
    assert (
        config.ohem_norm == "objects" and Config(dataset="shapes", loss="ohem").normalized().ohem_norm is None
    )
    assert Config(dataset="shapes", loss="ohem").key("x") == Config(
        dataset="shapes", loss="ohem", ohem_norm=None
    ).key("x")


def test_hard_negatives_count_the_background_anchors_a_model_still_scores_above_p_005():
    """An untrained detector with prior 0.01 scores every anchor near 0.01: no hard negatives; with its classifier
    bias at p 0.5, every background anchor of a test image is one."""
    from flx.engine.detection import evaluate

    config = Config(dataset="shapes", image_size=32, hidden=8).normalized()
    model = build_detector(config)
    split = render(4, 32, seed=1)
    assert evaluate(model, split)["hard_negatives"] == 0.0
    model.head.classification_head.cls_logits.bias.data.fill_(0.0)
    model.head.classification_head.cls_logits.weight.data.zero_()
    from flx.engine.detection import anchor_labels, predict_split

    _, _, anchors = predict_split(model, split)
    background = int((anchor_labels(split, anchors) == 0).sum())
    assert evaluate(model, split)["hard_negatives"] == background / 4
