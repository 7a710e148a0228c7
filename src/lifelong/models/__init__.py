"""Models built from a stream's shape (:func:`mlp`, :func:`cnn`, :func:`resnet18`, :func:`resnet32`)
and the backbone/head split."""

from lifelong.models.classifier import Classifier
from lifelong.models.nets import MODELS, cnn, mlp, split_model
from lifelong.models.resnet import resnet18, resnet32

__all__ = ["MODELS", "Classifier", "cnn", "mlp", "resnet18", "resnet32", "split_model"]
