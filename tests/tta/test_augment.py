"""CoTTA's test-time augmentations (:mod:`lifelong.tta.augment`) and how CoTTA averages over them, against
the reference code (issue 25): shifts that enter the edge's pixels instead of wrapping the opposite side,
shifts scaled to the image, and teacher logits (not probabilities) averaged."""

from __future__ import annotations

import copy

import pytest
import torch

from lifelong.errors import ConfigError
from lifelong.tta.augment import RandomViews, affine_view, shift_hue
from lifelong.tta.methods import CoTTA


def edges(size: int = 8) -> torch.Tensor:
    """(1, 1, size, size): left column 1, right column 0.5, zero between."""
    x = torch.zeros(1, 1, size, size)
    x[..., 0], x[..., -1] = 1.0, 0.5
    return x


def test_a_shift_repeats_the_edge_and_never_wraps_the_opposite_side() -> None:
    x = edges()
    right = affine_view(x, 0.0, (1, 0), 1.0)
    assert torch.allclose(right[..., 0], x[..., 0]) and torch.allclose(right[..., 1], x[..., 0])  # edge repeated
    assert torch.allclose(right[..., 2:], x[..., 1:-1])  # the rest moved one pixel right
    assert not torch.allclose(right, torch.roll(x, 1, dims=3))  # roll brings the right column (0.5) in
    down = affine_view(x, 0.0, (0, -2), 1.0)  # two pixels up: the bottom row repeats
    assert torch.allclose(down[..., -3:, :], x[..., -1:, :].expand(-1, -1, 3, -1))
    assert torch.allclose(affine_view(x, 0.0, (0, 0), 1.0), x, atol=1e-6)


def test_the_largest_shift_is_an_eighth_of_the_image() -> None:
    """The reference pads by half the image and translates by up to 1/16 of the padded size."""
    augment, generator = RandomViews(), torch.Generator().manual_seed(0)
    for size, largest in ((8, 1), (32, 4)):
        shifts = {s for _ in range(400) for s in augment.draw((1, 1, size, size), generator).shift}
        assert max(map(abs, shifts)) == largest and shifts == set(range(-largest, largest + 1))


def test_a_view_stays_in_range_and_a_flat_image_stays_flat_but_for_the_noise() -> None:
    augment = RandomViews(flip_probability=1.0)
    generator = torch.Generator().manual_seed(1)
    flat = torch.full((2, 1, 8, 8), 0.4)
    draw = augment.draw(flat.shape, generator)
    view = augment.apply(flat, draw)
    assert view.min() >= 0 and view.max() <= 1
    assert (view - draw.noise).std() < 1e-5  # geometry, blur and flip move nothing in a flat image


def test_hue_turns_through_the_colour_circle() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(shift_hue(red, 1 / 3), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1), atol=1e-6)
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(shift_hue(x, 0.0), x, atol=1e-5) and torch.allclose(shift_hue(x, 1.0), x, atol=1e-5)


def test_cotta_predicts_the_mean_of_the_teachers_logits_over_the_views(source_model, digits_data) -> None:
    """As the reference code: below the confidence threshold the teacher's logits on the views are averaged
    (the un-augmented batch not among them), and that average is the prediction."""
    x = digits_data.x_test[:16]
    cotta = CoTTA(confidence_threshold=1.01, n_augmentations=3)  # always unsure: always averaged
    cotta.setup(copy.deepcopy(source_model), 0)
    teacher, generator = copy.deepcopy(cotta.teacher), torch.Generator().set_state(cotta.generator.get_state())
    with torch.no_grad():
        expected = torch.stack([teacher(cotta.augment(x, generator)) for _ in range(3)]).mean(dim=0)
    assert torch.allclose(cotta.step(x), expected, atol=1e-5)


@pytest.mark.parametrize("field, value", [("flip_probability", 1.5), ("translate", 0.5)])
def test_bad_augmentation_settings_are_refused(field, value) -> None:
    with pytest.raises(ConfigError, match="tta augmentation"):
        RandomViews(**{field: value})
