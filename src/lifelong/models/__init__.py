"""Models built from a stream's shape (:func:`mlp`, :func:`cnn`) and the backbone/head split."""

from lifelong.models.nets import MODELS, Classifier, cnn, mlp, split_model

__all__ = ["MODELS", "Classifier", "cnn", "mlp", "split_model"]
