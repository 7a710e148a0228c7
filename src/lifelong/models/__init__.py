"""Models built from a stream's shape (:func:`mlp`, :func:`cnn`, :func:`resnet18`, :func:`resnet32`, :func:`vit`,
the language model :func:`gpt`, a Hugging Face model from a local folder :func:`hf` and :func:`save_pretrained`
to write it back), the backbone/head split, and :func:`causal_lm` for any tokens -> logits module."""

from lifelong.models.classifier import Classifier
from lifelong.models.gpt import GPT, causal_lm, gpt
from lifelong.models.hf import hf, save_pretrained
from lifelong.models.nets import MODELS, cnn, mlp, split_model
from lifelong.models.resnet import resnet18, resnet32
from lifelong.models.vit import VisionTransformer, vit

__all__ = ["GPT", "MODELS", "Classifier", "VisionTransformer", "causal_lm", "cnn", "gpt", "hf", "mlp", "resnet18",
           "resnet32", "save_pretrained", "split_model", "vit"]
