"""Corruptions of images (N, C, H, W) in [0, 1] at severities 1..5, and streams of corrupted domains.

After Hendrycks & Dietterich 2019 (CIFAR-10-C, the benchmark of Tent and CoTTA), scaled for small
images: Gaussian noise, Gaussian blur, contrast loss, rotation and pixel dropout. A stream is abrupt
(each domain at the set severity, as in CoTTA's continual setting) or gradual (inside each domain the
severity climbs from 1 to the set severity and back, as in CoTTA's gradual setting).

Inside each domain the samples arrive in a label ``order``: ``iid`` (shuffled), ``sorted`` (by label,
shuffled within a label: the most correlated stream, each batch of one or two classes) or ``dirichlet``
(label shift over time as in RoTTA, Yuan et al. 2023, and UnMix-TNS, Tomar et al. 2024: the domain is cut
into as many time slots as classes, each class spread over the slots by shares drawn from a symmetric
Dirichlet with ``concentration`` delta; inside a slot the classes come in contiguous runs, in random
order. Small delta puts each class in few slots; RoTTA's setting is delta = 0.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
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
    return blur(x, sigma, max(1, math.ceil(2 * sigma)))


def blur(x: torch.Tensor, sigma: float, radius: int, padded: bool = False) -> torch.Tensor:
    """Images (N, C, H, W) convolved with a separable Gaussian of ``sigma`` truncated at ``radius`` pixels.
    Outside the image its border pixels are repeated (a flat image stays flat), unless ``padded``: then
    ``x`` already holds ``radius`` pixels of context on every side, and the output is that much smaller."""
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()  # (K,)
    channels = x.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    columns = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    if not padded:
        x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(F.conv2d(x, rows, groups=channels), columns, groups=channels)


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


ORDERS = ("iid", "sorted", "dirichlet")
"""Label orders of the samples inside a domain."""


def dirichlet_shares(n_classes: int, concentration: float, generator: torch.Generator) -> torch.Tensor:
    """(classes, slots) share of each class's samples in each of ``n_classes`` time slots, each row drawn
    from a symmetric Dirichlet with ``concentration`` (seeded from ``generator``)."""
    rng = np.random.default_rng(int(torch.randint(2 ** 31, (1,), generator=generator)))
    return torch.from_numpy(rng.dirichlet([concentration] * n_classes, size=n_classes))


def slotted_order(y: torch.Tensor, shares: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A permutation of ``y`` (N,) in time slots: the samples of the i-th class of ``y.unique()`` are cut
    in order into runs of ``floor(cumsum(shares[i]) * n_i)`` boundaries, run s going to slot s; each slot
    is its runs in a random class order."""
    slots: list[list[torch.Tensor]] = [[] for _ in range(shares.shape[1])]
    for label, share in zip(y.unique().tolist(), shares, strict=True):
        members = torch.nonzero(y == label).flatten()
        bounds = (share.cumsum(0) * len(members)).floor().long().clamp(max=len(members))
        bounds[-1] = len(members)
        for slot, (begin, end) in enumerate(zip([0, *bounds[:-1].tolist()], bounds.tolist(), strict=True)):
            slots[slot].append(members[begin:end])
    return torch.cat([runs[i] for runs in slots for i in torch.randperm(len(runs), generator=generator).tolist()])


def label_order(y: torch.Tensor, order: str = "iid", concentration: float = 0.1,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A seeded permutation of the labels ``y`` (N,) in label ``order`` (one of :data:`ORDERS`)."""
    if order not in ORDERS:
        raise ConfigError(f"tta.order must be one of {', '.join(ORDERS)}, got {order!r}")
    if not (math.isfinite(concentration) and concentration > 0):
        raise ConfigError(f"tta.concentration must be a finite number > 0 (smaller: labels more correlated "
                          f"over time; RoTTA uses 0.1), got {concentration}")
    generator = generator or torch.Generator().manual_seed(0)
    shuffled = torch.randperm(len(y), generator=generator)
    if order == "iid":
        return shuffled
    if order == "sorted":
        return shuffled[torch.sort(y[shuffled], stable=True).indices]
    shares = dirichlet_shares(len(y.unique()), concentration, generator)
    return shuffled[slotted_order(y[shuffled], shares, generator)]


def shifted_stream(data: TensorSet, corruptions: Sequence[str], severity: int = 5, gradual: bool = False,
                   seed: int = 0, order: str = "iid", concentration: float = 0.1) -> list[Domain]:
    """One domain per corruption, in order, each the whole of ``data`` in a seeded permutation in label
    ``order`` (``concentration``: the Dirichlet's, for ``order="dirichlet"``)."""
    if not corruptions:
        raise ConfigError(f"tta corruptions must name at least one of {', '.join(CORRUPTIONS)}")
    generator = torch.Generator().manual_seed(seed)
    domains = []
    for name in corruptions:
        permutation = label_order(data.y, order, concentration, generator)
        x, y = data.x[permutation], data.y[permutation]
        severities = gradual_severities(len(y), severity) if gradual else torch.full((len(y),), severity)
        out = torch.empty_like(x)
        for level in severities.unique().tolist():
            where = severities == level
            out[where] = corrupt(x[where], name, int(level), generator)
        domains.append(Domain(f"{name}@{'1-' if gradual else ''}{severity}", out, y, severities))
    return domains
