"""The detector is built from plain arguments; an experiment's Config reaches it through one mapping
(from_config), and OHEM reaches the head as a sampler, not as a branch on the loss's name."""

import ast
import functools
import inspect

import torch

from flx.experiment.config import Config
from flx.experiment.registries import get_loss
from flx.models import retinanet as R


def test_the_detector_builds_from_plain_arguments_and_one_mapping_from_config():
    loss = functools.partial(get_loss("focal"), alpha=0.25, gamma=2.0)
    torch.manual_seed(0)
    plain = R.tiny_retinanet(hidden=16, anchor_scales=3, anchor_ratios=3, image_size=32, loss=loss)
    torch.manual_seed(0)
    config = Config(dataset="shapes", image_size=32, hidden=16).normalized()
    built = R.build_detector(config)
    assert set(R.from_config(config)) == set(inspect.signature(R.tiny_retinanet).parameters)
    for (name, a), (_, b) in zip(plain.state_dict().items(), built.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # the same weights: the same parts in the same order
    assert not hasattr(built.head.classification_head, "config")


def test_ohem_is_a_sampler_and_the_head_never_reads_the_loss_name():
    config = Config(dataset="shapes", loss="ohem", ohem_k=64, ohem_ratio=3.0, ohem_nms=0.7).normalized()
    sampler = R.from_config(config)["sampler"]
    assert sampler == R.OhemSampler(k=64, ratio=3.0, nms=0.7)
    assert R.from_config(Config(dataset="shapes").normalized())["sampler"] is None
    code = ast.parse(inspect.getsource(R.ClassificationHead) + inspect.getsource(R.Detector))
    assert "ohem" not in {
        n.value for n in ast.walk(code) if isinstance(n, ast.Constant)
    }  # no branch on a name
    per_anchor = torch.tensor([[0.1, 0.9, 0.5, 0.2]])
    positive = torch.tensor([[True, False, False, False]])
    valid = torch.ones_like(positive)
    loss = R.OhemSampler(k=2).loss(per_anchor, positive, valid, graph=None)
    assert torch.isclose(loss, torch.tensor((0.9 + 0.5) / 2))  # the two highest-loss anchors, averaged
