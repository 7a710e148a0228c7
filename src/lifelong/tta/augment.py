"""CoTTA's test-time augmentations on image tensors (N, C, H, W) in [0, 1], shared by ``cotta`` and ``rmt``.

Wang et al. 2022 ("Continual Test-Time Domain Adaptation") average the teacher's predictions over random
views of the test batch; their code (``get_tta_transforms`` of the CoTTA repository, the non-soft
setting; RMT's code uses the same) draws one view of the whole batch as, in order:

1. a colour jitter in random order: brightness x [0.6, 1.4], contrast x [0.7, 1.3], saturation
   x [0.5, 1.5], hue +- 0.06 (saturation and hue need three channels) and gamma [0.7, 1.3];
2. an edge padding by half the image on every side, then a random affine map of the padded image
   (rotation +- 15 degrees, translation by a whole number of pixels up to 1/16 of the padded size per
   axis, i.e. up to 1/8 of the image's, scale [0.9, 1.1], bilinear), a Gaussian blur (kernel 5, sigma
   [0.001, 0.5]) and a centre crop back to the image's size: pixels that enter the frame repeat its
   edge, never its opposite side;
3. a horizontal flip with probability 1/2, Gaussian noise of std 0.005, and a clip to [0, 1].

Here step 2 samples the affine map straight onto the crop (``grid_sample`` with border padding equals
sampling the edge-padded image) plus the blur's margin, so the blur sees what the reference's padded
image holds there. The flip is a setting: the reference's 1/2 suits natural images, not digits, whose
mirror images are other shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lifelong.errors import ConfigError
from lifelong.tta.corruptions import blur

BLUR_RADIUS = 2
"""The reference's blur kernel of 5 pixels."""


class ViewDraw(NamedTuple):
    """One random view, drawn once for a whole batch (as torchvision's transforms draw for a batch tensor)."""

    colour_order: list[int]
    """Order of brightness (0), contrast (1), saturation (2), hue (3) and gamma (4)."""
    brightness: float
    contrast: float
    saturation: float
    hue: float
    gamma: float
    degrees: float
    shift: tuple[int, int]
    """(right, down) in pixels."""
    scale: float
    blur_sigma: float
    flip: bool
    noise: torch.Tensor
    """(N, C, H, W) Gaussian noise to add."""


def _uniform(bounds: tuple[float, float], generator: torch.Generator) -> float:
    return float(torch.empty(1).uniform_(bounds[0], bounds[1], generator=generator))


@dataclass(frozen=True)
class RandomViews:
    """CoTTA's augmentation of a batch (module docstring); the defaults are the reference's."""

    brightness: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: tuple[float, float] = (-0.06, 0.06)
    gamma: tuple[float, float] = (0.7, 1.3)
    degrees: float = 15.0
    translate: float = 1 / 16
    """Largest shift per axis as a fraction of the edge-padded image (twice the image's size)."""
    scale: tuple[float, float] = (0.9, 1.1)
    blur_sigma: tuple[float, float] = (0.001, 0.5)
    flip_probability: float = 0.5
    noise_std: float = 0.005

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ConfigError(f"tta augmentation flip_probability must lie in [0, 1], got {self.flip_probability}")
        if not 0.0 <= self.translate < 0.5 or self.degrees < 0 or self.noise_std < 0:
            raise ConfigError("tta augmentation: translate must lie in [0, 0.5), degrees and noise_std be >= 0")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random view of the images ``x`` (N, C, H, W), drawn from ``generator``."""
        return self.apply(x, self.draw(x.shape, generator))

    def draw(self, shape: torch.Size | tuple[int, ...], generator: torch.Generator) -> ViewDraw:
        """The random choices of one view of a batch of ``shape`` (N, C, H, W)."""
        height, width = shape[2], shape[3]
        order = torch.randperm(5, generator=generator).tolist()
        brightness, contrast, saturation, hue, gamma = (
            _uniform(bounds, generator) for bounds in (self.brightness, self.contrast, self.saturation, self.hue,
                                                       self.gamma))
        degrees = _uniform((-self.degrees, self.degrees), generator)
        # the reference's RandomAffine shifts by round(U(-t, t) * padded size) whole pixels
        right, down = (round(_uniform((-1.0, 1.0), generator) * self.translate * (size + 2 * (size // 2)))
                       for size in (width, height))
        scale = _uniform(self.scale, generator)
        sigma = _uniform(self.blur_sigma, generator)
        flip = float(torch.rand(1, generator=generator)) < self.flip_probability
        noise = self.noise_std * torch.randn(tuple(shape), generator=generator)
        return ViewDraw(order, brightness, contrast, saturation, hue, gamma, degrees, (right, down), scale, sigma,
                        flip, noise)

    def apply(self, x: torch.Tensor, draw: ViewDraw) -> torch.Tensor:
        """The view ``draw`` of ``x`` (N, C, H, W)."""
        x = x.clamp(0.0, 1.0)
        for step in draw.colour_order:
            x = _colour_step(x, step, draw)
        x = affine_view(x, draw.degrees, draw.shift, draw.scale, margin=BLUR_RADIUS)
        x = blur(x, draw.blur_sigma, BLUR_RADIUS, padded=True)
        if draw.flip:
            x = x.flip(dims=(3,))
        return (x + draw.noise.to(x)).clamp(0.0, 1.0)


def _colour_step(x: torch.Tensor, step: int, draw: ViewDraw) -> torch.Tensor:
    """One of the jitter's five adjustments, as torchvision's ``adjust_*`` functions make them."""
    colour = x.shape[1] == 3
    if step == 0:
        return (x * draw.brightness).clamp(0.0, 1.0)
    if step == 1:
        mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
        return (draw.contrast * x + (1 - draw.contrast) * mean).clamp(0.0, 1.0)
    if step == 2 and colour:
        return (draw.saturation * x + (1 - draw.saturation) * _grey(x)).clamp(0.0, 1.0)
    if step == 3 and colour:
        return shift_hue(x, draw.hue)
    if step == 4:
        return x.clamp(1e-8, 1.0) ** draw.gamma
    return x


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma (ITU-R 601) of RGB images, or the image itself when it has one channel."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def shift_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """RGB images (N, 3, H, W) with their hue turned by ``shift`` of a full circle (through HSV)."""
    value, _ = x.max(dim=1)  # (N, H, W)
    delta = value - x.min(dim=1).values
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    red, green, blue = ((value - c) / delta.clamp_min(1e-12) for c in x.unbind(dim=1))
    hue = torch.where(x[:, 0] == value, blue - green,
                      torch.where(x[:, 1] == value, 2.0 + red - blue, 4.0 + green - red))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue)).remainder(1.0)
    hue = (hue + shift).remainder(1.0) * 6.0
    sector = hue.floor()
    fraction = hue - sector
    p = value * (1 - saturation)
    q = value * (1 - saturation * fraction)
    t = value * (1 - saturation * (1 - fraction))
    choices = torch.stack([torch.stack(c, dim=1) for c in ((value, t, p), (q, value, p), (p, value, t),
                                                           (p, q, value), (t, p, value), (value, p, q))])
    index = sector.long().remainder(6)  # (N, H, W): which of the six sectors of the hue circle
    return choices.gather(0, index.view(1, index.shape[0], 1, *index.shape[1:]).expand(1, -1, 3, -1, -1))[0]


def affine_view(x: torch.Tensor, degrees: float, shift: tuple[int, int], scale: float, margin: int = 0) -> torch.Tensor:
    """Images (N, C, H, W) rotated by ``degrees`` and scaled by ``scale`` about their centre and shifted by
    ``shift`` = (right, down) pixels, bilinear, with the edge pixels repeated wherever the view reaches
    outside the image (never wrapped around: the pixels that enter are the edge's); the output covers
    the image plus ``margin`` pixels on every side, (N, C, H + 2 margin, W + 2 margin)."""
    height, width = x.shape[2], x.shape[3]
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    rows = torch.arange(-margin, height + margin, dtype=x.dtype) - (height - 1) / 2 - shift[1]
    columns = torch.arange(-margin, width + margin, dtype=x.dtype) - (width - 1) / 2 - shift[0]
    down, right = torch.meshgrid(rows, columns, indexing="ij")  # output pixel centres, relative to the centre
    source_x = cos * right - sin * down  # where each output pixel is read from, in pixels from the centre
    source_y = sin * right + cos * down
    grid = torch.stack([source_x * 2 / width, source_y * 2 / height], dim=-1)  # align_corners=False units
    grid = grid.to(x.device).expand(len(x), -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
