"""Corruptions of images (N, C, H, W) in [0, 1] at severities 1..5, and streams of corrupted domains.

After Hendrycks & Dietterich 2019 (CIFAR-10-C, the benchmark of Tent and CoTTA), scaled for small
images: Gaussian noise, Gaussian blur, contrast loss, rotation and pixel dropout. A stream is abrupt
(each domain at the set severity, as in CoTTA's continual setting) or gradual (inside each domain the
severity climbs from 1 to the set severity and back, as in CoTTA's gradual setting).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lifelong.data.scenarios import rotate
from lifelong.data.streams import TensorSet
from lifelong.errors import ConfigError

NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
BLUR_SIGMA = (0.4, 0.6, 0.8, 1.0, 1.3)
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
ROTATION_DEGREES = (10.0, 20.0, 30.0, 45.0, 60.0)
DROPOUT = (0.1, 0.2, 0.3, 0.4, 0.5)


def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator) * NOISE_STD[severity - 1]
    return (x + noise).clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    sigma = BLUR_SIGMA[severity - 1]
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()  # (K,)
    channels = x.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    columns = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(F.conv2d(padded, rows, groups=channels), columns, groups=channels)


def contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return (x - mean) * CONTRAST[severity - 1] + mean


def rotation(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    return rotate(x, ROTATION_DEGREES[severity - 1])


def pixel_dropout(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    keep = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator) >= DROPOUT[severity - 1]
    return x * keep


CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "blur": gaussian_blur,
    "contrast": contrast,
    "rotation": rotation,
    "pixel_dropout": pixel_dropout,
}


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``x`` (N, C, H, W) under corruption ``name`` at ``severity`` (1..5)."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"tta corruption {name!r} is unknown; allowed: {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise ConfigError(f"tta severity must lie in [1, 5], got {severity}")
    if x.ndim != 4:
        raise ConfigError(f"tta corruptions need image inputs (C, H, W), got shape {tuple(x.shape[1:])}")
    return CORRUPTIONS[name](x, severity, generator)


@dataclass(frozen=True)
class Domain:
    """One shifted domain of the test stream, in arrival order: inputs (N, C, H, W), labels (N,), and
    the severity of each sample (N,)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    severity: torch.Tensor


def gradual_severities(n: int, severity: int) -> torch.Tensor:
    """(n,) severities rising 1, 2, ..., ``severity`` and back to 1 in equal runs."""
    ramp = list(range(1, severity + 1)) + list(range(severity - 1, 0, -1))
    return torch.tensor(ramp).repeat_interleave(math.ceil(n / len(ramp)))[:n]


def shifted_stream(data: TensorSet, corruptions: Sequence[str], severity: int = 5, gradual: bool = False,
                   seed: int = 0) -> list[Domain]:
    """One domain per corruption, in order, each the whole of ``data`` in a seeded order."""
    if not corruptions:
        raise ConfigError(f"tta corruptions must name at least one of {', '.join(CORRUPTIONS)}")
    generator = torch.Generator().manual_seed(seed)
    domains = []
    for name in corruptions:
        order = torch.randperm(len(data), generator=generator)
        x, y = data.x[order], data.y[order]
        severities = gradual_severities(len(y), severity) if gradual else torch.full((len(y),), severity)
        out = torch.empty_like(x)
        for level in severities.unique().tolist():
            where = severities == level
            out[where] = corrupt(x[where], name, int(level), generator)
        domains.append(Domain(f"{name}@{'1-' if gradual else ''}{severity}", out, y, severities))
    return domains
