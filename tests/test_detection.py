"""The dense-detection replication: the shapes data set, the tiny RetinaNet, OHEM with NMS, COCO evaluation,
declared claims and their verdicts, and the Poly-1 epsilon bound."""

import math

import pandas as pd
import pytest
import torch

from flx.data.shapes import render
from flx.engine.coco import coco_metrics
from flx.engine.detection import anchor_imbalance, train_detector
from flx.errors import ConfigError
from flx.experiment.config import Config
from flx.experiment.spec import validate_spec
from flx.losses.bounds import epsilon_bound
from flx.losses.functional import poly1_cross_entropy, poly1_focal_loss
from flx.models.retinanet import build_detector, ohem_select
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
    stats = anchor_imbalance(render(64, 48, seed=0), config)
    assert stats["anchors_per_image"] == (24 * 24 + 12 * 12) * 9
    assert 5 < stats["pos_anchors_per_image"] < 60
    # hundreds of background anchors per object anchor, and the count is what the ratio says
    assert 150 < stats["imbalance"] < 1500
    neg = stats["anchors_per_image"] - stats["pos_anchors_per_image"] - stats["ignored_anchors_per_image"]
    assert stats["imbalance"] == pytest.approx(neg / stats["pos_anchors_per_image"], rel=1e-6)
    assert 0 < stats["neg_loss_share"] < 1


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
    assert judge(claim, pd.DataFrame(rows)).verdict == "too few seeds"  # failures left out by default
    scored = judge({**claim, "failures": 0.0}, pd.DataFrame(rows))
    assert scored.verdict == "replicated" and scored.n == 5 and scored.mean == pytest.approx(0.3)


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
