"""Networks built from a stream's input shape, each split into ``backbone`` and ``head``; the
registry :data:`MODELS` holds these, the ResNets of :mod:`lifelong.models.resnet`, the Vision
Transformer of :mod:`lifelong.models.vit`, the GPT of :mod:`lifelong.models.gpt` and the Hugging Face
models of :mod:`lifelong.models.hf`.

The split matters to methods that work on features (nearest class mean, iCaRL, FeTrIL, SLCA): they
read ``model.backbone(x)`` and refit or replace ``model.head``. Any ``nn.Module`` can be trained; for
feature methods a user model needs ``backbone`` and ``head`` attributes too (see :func:`split_model`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from lifelong.errors import ConfigError
from lifelong.models.classifier import Classifier
from lifelong.models.gpt import gpt
from lifelong.models.hf import hf
from lifelong.models.norms import check_norm, conv_type, linear_type, norm_layer
from lifelong.models.resnet import resnet18, resnet32
from lifelong.models.seeding import seeded
from lifelong.models.vit import vit


def mlp(input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (256, 256),
        norm: str = "none", norm_groups: int = 8, seed: int | None = None) -> Classifier:
    """Flatten, then ``Linear -> [norm] -> ReLU`` per hidden width, then a linear head.

    ``norm`` and ``norm_groups``: :func:`~lifelong.models.norms.norm_layer` over features, whose module
    says which scenario each norm suits (``layer`` is ``nn.LayerNorm``; ``ws_bcn`` also standardizes
    the hidden layers' weights). ``seed`` makes the initial weights a function of it alone (a model
    built before ``train(..., seed=...)`` is otherwise initialised from whatever the global random
    state holds, so a script gives a different result every run).
    """
    with seeded(seed):
        return _mlp(input_shape, n_classes, hidden, norm, norm_groups)


def _mlp(input_shape: Sequence[int], n_classes: int, hidden: Sequence[int], norm: str, groups: int) -> Classifier:
    if not hidden or any(h < 1 for h in hidden):
        raise ConfigError(f"model.hidden must be a non-empty list of positive widths, got {list(hidden)}")
    check_norm(norm, groups)
    linear = linear_type(norm)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers.append(linear(width, h))
        if norm != "none":
            layers.append(norm_layer(norm, h, groups, maps=False))
        layers.append(nn.ReLU())
        width = h
    return Classifier(nn.Sequential(*layers), width, n_classes)


def cnn(input_shape: Sequence[int], n_classes: int, channels: Sequence[int] = (32, 64), norm: str = "batch",
        norm_groups: int = 8, seed: int | None = None) -> Classifier:
    """``Conv3x3 -> [norm] -> ReLU -> MaxPool2`` per entry of ``channels``, global average pool, head.

    Needs image inputs (C, H, W); pooling stops once the feature map is 2x2 so small images work.
    ``norm`` and ``norm_groups``: :func:`~lifelong.models.norms.norm_layer` (``ws_bcn`` also
    standardizes the convolutions' weights). ``seed``: as for :func:`mlp`.
    """
    with seeded(seed):
        return _cnn(input_shape, n_classes, channels, norm, norm_groups)


def _cnn(input_shape: Sequence[int], n_classes: int, channels: Sequence[int], norm: str, groups: int) -> Classifier:
    if len(input_shape) != 3:
        raise ConfigError(f"model.name='cnn' needs image inputs (C, H, W), got shape {tuple(input_shape)}; "
                          "use model.name='mlp' for vectors (model.name='gpt' for a text stream's token windows)")
    if not channels or any(c < 1 for c in channels):
        raise ConfigError(f"model.channels must be a non-empty list of positive counts, got {list(channels)}")
    check_norm(norm, groups)
    conv = conv_type(norm)
    layers: list[nn.Module] = []
    in_ch, size = input_shape[0], min(input_shape[1:])
    for out_ch in channels:
        layers += [conv(in_ch, out_ch, 3, padding=1)]
        if norm != "none":
            layers.append(norm_layer(norm, out_ch, groups))
        layers.append(nn.ReLU())
        if size >= 4:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        in_ch = out_ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), in_ch, n_classes)


MODELS = {"mlp": mlp, "cnn": cnn, "resnet18": resnet18, "resnet32": resnet32, "gpt": gpt, "vit": vit, "hf": hf}
MODEL_SUMMARIES = {
    "mlp": ("features, or any input flattened", "Linear -> norm -> ReLU per hidden width, then a linear head"),
    "cnn": ("images (C, H, W)", "3x3 convolution -> norm -> ReLU -> max-pool per entry of channels, global average "
                                "pool, linear head"),
    "resnet18": ("images (C, H, W)", "the reduced ResNet-18 of GEM and DER (nf = 20; 64 for the full width)"),
    "resnet32": ("images (C, H, W)", "the CIFAR ResNet-32 of iCaRL and PyCIL, 0.46 M parameters"),
    "gpt": ("token windows of a text stream", "a small GPT-2 decoder with tied embeddings; its vocabulary is the "
                                              "stream's"),
    "vit": ("images (C, H, W)", "a small Vision Transformer: patch embedding, class token, pre-norm blocks (the "
                                "prompt strategies' backbone)"),
    "hf": ("images, or a text stream's token windows", ("a Hugging Face model from the local folder model.path: an "
                                                        "image classifier (ViT, DeiT, ...) or a causal LM (GPT-2, "
                                                        "Llama, ...) with its tokenizer; nothing is downloaded")),
}
"""What each model of :data:`MODELS` reads and is, for ``lifelong models``."""


def split_model(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The ``(backbone, head)`` of a model: its attributes of those names, or an ``nn.Sequential``'s
    layers before its final ``nn.Linear``."""
    backbone, head = getattr(model, "backbone", None), getattr(model, "head", None)
    if isinstance(backbone, nn.Module) and isinstance(head, nn.Linear):
        return backbone, head
    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
        return model[:-1], model[-1]
    raise ConfigError(f"this strategy needs a model split into features and a linear head: give "
                      f"{type(model).__name__} attributes 'backbone' (nn.Module) and 'head' (nn.Linear), "
                      "or make it an nn.Sequential ending in nn.Linear")
