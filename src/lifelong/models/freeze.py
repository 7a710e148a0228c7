"""``model.freeze``: which parameters of a built model train, set by ``requires_grad``.

The runner builds its optimizer from :meth:`~lifelong.strategies.base.Strategy.parameter_groups`, whose
default takes every parameter with ``requires_grad``, so a frozen parameter gets no gradient and no update
(weight decay included: it is not in the optimizer at all).

* ``none``: the model as built (nothing changed);
* ``backbone``: only the head trains (linear probing on a pretrained backbone, the regime of SimpleCIL's
  frozen features, Zhou et al. 2023, but trained by gradient);
* ``norm-only``: the affine parameters of the backbone's normalization layers and the head train
  ("Training BatchNorm and only BatchNorm", Frankle et al. 2021, which freezes the output layer too;
  here the head trains, since a class-incremental head must learn the classes the pretraining never saw).

Freezing acts on parameters only: a BatchNorm layer in training mode still updates its running statistics
(buffers), so the evaluated features follow the new data's statistics. A strictly fixed feature extractor
is what the frozen-feature strategies (``ncm``, ``fetril``) use: they read features in evaluation mode.
Strategies that train tensors of their own whatever ``requires_grad`` says refuse a freeze
(:func:`lifelong.experiment.build_strategy`).
"""

from __future__ import annotations

from torch import nn

from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.models.norms import NORM_TYPES

FREEZE_MODES = ("none", "backbone", "norm-only")
"""The allowed values of ``model.freeze``."""


def check_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`FREEZE_MODES`, else a one-line :class:`ConfigError`."""
    if mode not in FREEZE_MODES:
        raise ConfigError(f"model.freeze must be one of {', '.join(FREEZE_MODES)}, got {mode!r}")
    return str(mode)


def freeze(model: nn.Module, mode: str) -> None:
    """Set ``requires_grad`` on ``model``'s parameters as ``mode`` says (module docstring)."""
    if check_mode(mode) == "none":
        return
    try:
        backbone, head = split_model(model)
    except ConfigError:
        raise ConfigError(f"model.freeze={mode!r} trains a model's head and freezes its backbone, and "
                          f"{type(model).__name__} is not split into the two (mlp, cnn, resnet18, resnet32 and vit "
                          "are); set model.freeze='none'") from None
    trainable = {id(p) for p in head.parameters()}
    if mode == "norm-only":
        norms = {id(p) for module in backbone.modules() if isinstance(module, NORM_TYPES)
                 for p in module.parameters(recurse=False)}
        if not norms:
            raise ConfigError("model.freeze='norm-only': the backbone has no normalization layer with affine "
                              "parameters; set model.norm (e.g. 'batch' or 'layer') or choose model.freeze='backbone'")
        trainable |= norms
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
