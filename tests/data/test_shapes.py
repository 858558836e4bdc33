"""shapes for replication v4: each data seed its own training images on fixed validation and test images, and
object-like clutter (hard negatives) whose number scales with the canvas, without changing the task it extends."""

import dataclasses

import torch

from flx.data.shapes import load_shapes, render


def test_the_task_without_clutter_is_the_task_as_it_was_image_for_image():
    """Every committed table ran without clutter: none and 0 leave the random stream, and so every image, as before."""
    plain = render(16, 64, seed=7)
    for clutter in (None, 0.0):
        same = render(16, 64, seed=7, clutter=clutter)
        assert torch.equal(same.images, plain.images)
    cluttered = render(16, 64, seed=7, clutter=6.0)
    assert not torch.equal(cluttered.images, plain.images)
    assert all(
        torch.equal(a, b) for a, b in zip(cluttered.boxes, plain.boxes, strict=True)
    )  # clutter is no object


def test_each_data_seed_trains_on_its_own_images_and_all_are_scored_on_the_same():
    a_train, a_test, a_meta = load_shapes(8, 32, data_seed=1)
    b_train, b_test, b_meta = load_shapes(8, 32, data_seed=2)
    assert not torch.equal(a_train.images, b_train.images)
    assert torch.equal(a_test.images, b_test.images) and torch.equal(
        a_meta["val"].images, b_meta["val"].images
    )
    assert a_meta["fingerprint"] != b_meta["fingerprint"]


def _changed(size: int, clutter: float) -> float:
    """The share of pixels that clutter repainted (the same images without it as the reference)."""
    plain, cluttered = render(64, size, seed=3), render(64, size, seed=3, clutter=clutter)
    return (cluttered.images != plain.images).any(1).float().mean().item()


def test_clutter_scales_with_the_canvas_area():
    """A count per 64 x 64 px: the share of the canvas it covers stays about the same on a 4x larger canvas,
    and grows with the level."""
    small, large = _changed(64, 4.0), _changed(128, 4.0)
    assert 0.75 < large / small < 1.33
    assert _changed(64, 8.0) > 1.5 * small


def test_a_process_draws_generated_data_once_for_all_its_batches_of_runs(monkeypatch):
    """A comparison plans its trials batch by batch; each batch describes its data (fingerprint, counts) in the
    parent, which drops the images after. Generated data is drawn once per process, not once per batch (128 px
    shapes with clutter take about 80 s to draw); data kept for in-process runs, or checked for fewer copies, is
    loaded again."""
    from flx.data import load as L
    from flx.experiment.config import Config
    from flx.experiment.registries import DATASETS
    from flx.sweep.worker import prepare

    drawn = []
    spec = DATASETS["shapes"]
    monkeypatch.setattr(
        type(spec), "load", lambda self, **kw: drawn.append(kw["data_seed"]) or load_shapes(**kw)
    )
    config = Config(dataset="shapes", n_images=8, image_size=32, steps=2).normalized()
    first = prepare([config, dataclasses.replace(config, loss="ce")], copies=2)
    again = prepare([dataclasses.replace(config, loss="focal")], copies=2)
    assert drawn == [0] and again[0].data == first[0].data  # drawn once, described the same
    other = prepare([dataclasses.replace(config, data_seed=3)], copies=2)
    assert drawn == [0, 3] and other[0].data["data_fingerprint"] != first[0].data["data_fingerprint"]
    prepare([config], copies=3)  # its memory was checked for 2 processes holding it, not 3
    prepare([config], keep=True)  # in-process runs train on the loaded images
    assert drawn == [0, 3, 0, 0]
    L.forget()
