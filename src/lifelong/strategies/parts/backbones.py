"""A pretrained backbone loaded from a local file into a model's feature extractor, and the check of its
path made when a strategy is configured."""

from __future__ import annotations

from torch import nn

from lifelong.models.weights import check_weights_file, load_weights


def check_backbone_path(path: str) -> None:
    """Raise :class:`MissingFileError` unless ``path`` is empty (no pretrained backbone) or a file."""
    if path:
        check_weights_file(path, "strategy.backbone_path")


def load_backbone(backbone: nn.Module, path: str) -> None:
    """Load a pretrained feature extractor into ``backbone`` strictly, by the one loader of ``model.weights``
    (:func:`~lifelong.models.weights.load_weights`): a state dict of the backbone (``torch.save``, read with
    ``weights_only=True``, or ``.safetensors``), or a backbone file written by ``lifelong pretrain``."""
    load_weights(backbone, path, "strategy.backbone_path")
