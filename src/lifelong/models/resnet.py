"""The residual networks continual-learning papers train on small images: the reduced ResNet-18 of
GEM, DER and Mammoth (:func:`resnet18`) and the CIFAR ResNet-32 of iCaRL and PyCIL (:func:`resnet32`).

Both are He et al. 2016 ("Deep Residual Learning for Image Recognition") residual networks of
:class:`BasicBlock` s with a 3x3 stride-1 stem and no max-pool, made for 28x28 and 32x32 images; they
end in a global average pool, so any image size and any number of input channels works. The norm
after each convolution is a setting (:func:`~lifelong.models.norms.norm_layer`, whose module says
which scenario each norm suits): batch statistics suit offline training, while ``layer``, ``group`` and
``ws_bcn`` behave the same on a batch of one, which suits streams and small replay batches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import ConfigError
from lifelong.models.classifier import Classifier
from lifelong.models.norms import check_norm, conv_type, norm_layer

Shortcut = Literal["projection", "zero_pad"]


class ZeroPadShortcut(nn.Module):
    """The parameter-free shortcut of He et al. 2016 (option A, Sec. 4.2): keep every ``stride``-th
    position, then append ``extra_channels`` channels of zeros. (B, C, H, W) -> (B, C + extra,
    ceil(H / stride), ceil(W / stride)), the shape of a 3x3 convolution's output with padding 1."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        subsampled = x[:, :, ::self.stride, ::self.stride]
        return F.pad(subsampled, (0, 0, 0, 0, 0, self.extra_channels))  # pads (W, H, C): zeros after C


class BasicBlock(nn.Module):
    """``relu(branch(x) + shortcut(x))`` with ``branch`` = conv3x3 (stride) -> norm -> relu -> conv3x3
    -> norm (He et al. 2016, Fig. 2), convolutions of type ``conv``. Where the shape changes, the shortcut
    is a strided 1x1 convolution and a norm (``projection``, option B) or :class:`ZeroPadShortcut`
    (``zero_pad``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: Shortcut,
                 make_norm: Callable[[int], nn.Module], bias: bool, conv: type[nn.Conv2d]) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = make_norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = make_norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = (nn.Sequential(conv(in_channels, out_channels, 1, stride=stride, bias=bias),
                                           make_norm(out_channels))
                             if shortcut == "projection" else ZeroPadShortcut(out_channels - in_channels, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(branch)) + self.shortcut(x))


def _resnet(input_shape: Sequence[int], n_classes: int, name: str, stem_width: int, widths: Sequence[int],
            blocks_per_stage: int, shortcut: Shortcut, norm: str, norm_groups: int) -> Classifier:
    """Stem (conv3x3 stride 1 -> norm -> relu), one stage of ``blocks_per_stage`` blocks per entry of
    ``widths`` (stride 1 for the first stage, 2 after), global average pool; the features are the last
    width.

    Convolutions get He et al. 2015's initialisation (normal, fan-out, for ReLU). Without a norm
    (``none``) convolutions get a bias, and the last convolution of each residual branch starts at
    zero so that every block starts as its shortcut (Fixup, Zhang, Dauphin & Ma 2019): the signal
    then does not grow with depth at initialisation.
    """
    if len(input_shape) != 3:
        raise ConfigError(f"model.name={name!r} needs image inputs (C, H, W), got shape {tuple(input_shape)}; "
                          "use model.name='mlp' for vectors (model.name='gpt' for a text stream's token windows)")
    check_norm(norm, norm_groups)
    make_norm = partial(norm_layer, norm, groups=norm_groups)
    bias, conv = norm == "none", conv_type(norm)
    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Sequential(
        conv(input_shape[0], stem_width, 3, padding=1, bias=bias), make_norm(stem_width), nn.ReLU()))
    in_channels = stem_width
    for stage, width in enumerate(widths):
        blocks = [BasicBlock(in_channels if i == 0 else width, width, 2 if stage and i == 0 else 1, shortcut,
                             make_norm, bias, conv) for i in range(blocks_per_stage)]
        layers[f"stage{stage + 1}"] = nn.Sequential(*blocks)
        in_channels = width
    layers["pool"] = nn.AdaptiveAvgPool2d(1)  # (B, C, H, W) -> (B, C, 1, 1)
    layers["flatten"] = nn.Flatten()  # -> (B, C)
    backbone = nn.Sequential(layers)
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    if norm == "none":
        for module in backbone.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.conv2.weight)
    return Classifier(backbone, in_channels, n_classes)


def resnet18(input_shape: Sequence[int], n_classes: int, nf: int = 20, norm: str = "batch",
             norm_groups: int = 8) -> Classifier:
    """The reduced ResNet-18 of continual learning: four stages of two :class:`BasicBlock` s of widths
    ``nf``, ``2 nf``, ``4 nf``, ``8 nf`` (strides 1, 2, 2, 2) after a 3x3 stride-1 stem of ``nf``
    channels, projection shortcuts (option B), global average pool, ``8 nf`` features.

    ``nf`` (number of filters) 20 is GEM's reduced ResNet-18 (Lopez-Paz & Ranzato 2017, about 1.09 M
    parameters on 3x32x32 with 10 classes; Mammoth's ``reduced-resnet18``), ``nf`` 64 the full width
    of Mammoth's ``resnet18`` used by DER (Buzzega et al. 2020) (about 11.2 M). ``norm`` and
    ``norm_groups``: :func:`~lifelong.models.norms.norm_layer` (``batch`` is the reference's).

    Departures from Mammoth's ``backbone/ResNetBlock.py``, all for use beyond 3x32x32 batch-norm
    training, none changing the layout or parameter count at its settings: the stem takes
    ``input_shape[0]`` channels (Mammoth: 3), so grayscale images need no copying to RGB; the pool is
    adaptive (GEM's ``avg_pool2d(out, 4)`` is global only for 32x32 inputs); convolutions are
    initialised as in He et al. 2015 (Mammoth: PyTorch's default); the norm is a setting, and with
    ``none`` convolutions carry a bias and blocks start as their shortcut (see :func:`_resnet`).
    """
    if nf < 1:
        raise ConfigError(f"model.nf must be a positive number of filters, got {nf}")
    return _resnet(input_shape, n_classes, "resnet18", nf, (nf, 2 * nf, 4 * nf, 8 * nf), 2, "projection",
                   norm, norm_groups)


def resnet32(input_shape: Sequence[int], n_classes: int, norm: str = "batch", norm_groups: int = 8) -> Classifier:
    """The CIFAR ResNet-32 of He et al. 2016 (Sec. 4.2, n = 5) that iCaRL (Rebuffi et al. 2017) and PyCIL
    train: a 3x3 stem of 16 channels, three stages of five :class:`BasicBlock` s of widths 16, 32, 64
    (strides 1, 2, 2), parameter-free zero-padding shortcuts (option A, :class:`ZeroPadShortcut`),
    global average pool, 64 features; about 0.46 M parameters. ``norm`` and ``norm_groups``:
    :func:`~lifelong.models.norms.norm_layer` (``batch`` is the reference's).

    Departures from PyCIL's ``convs/cifar_resnet.py``, none changing the layout or parameter count:
    the stem takes ``input_shape[0]`` channels (PyCIL: 3, or 1 in its MNIST variant); the pool is
    adaptive (PyCIL's ``AvgPool2d(8)`` fits only 32x32 inputs: 28x28 ones end in 7x7 maps); the
    zero-padding shortcut appends as many channels as the stage adds (PyCIL concatenates a zeroed
    copy, so it needs the width to double, which it does here); the norm is a setting, and with ``none``
    convolutions carry a bias and blocks start as their shortcut (see :func:`_resnet`).
    """
    return _resnet(input_shape, n_classes, "resnet32", 16, (16, 32, 64), 5, "zero_pad", norm, norm_groups)
