"""What a stream teaches and how it is measured: the loss/metric pair of a workload.

Two objectives share the runner, the store and the metrics:

* ``classification``: a label per sample, cross-entropy to train, **accuracy** to measure (higher is
  better);
* ``language_model``: each sample is a window of ``L + 1`` token ids, the model maps the first ``L`` to
  logits ``(B, L, V)`` and is trained on the mean next-token cross-entropy; it is measured by the
  **validation loss** (mean negative log-likelihood per token, in nats; lower is better), from which the
  perplexity ``exp(loss)`` follows. This is the setting of continual pre-training (Gupta et al. 2023,
  "Continual Pre-Training of Large Language Models: How to (re)warm your model?"; Ibrahim et al. 2024,
  "Simple and Scalable Strategies to Continually Pre-train Large Language Models").

A language-model run's matrix is a **loss matrix**: ``L[i, j]`` is the validation loss on domain j after
training on domain i. Its metrics (:func:`loss_summary`) keep the signs of the accuracy metrics, so that
one reading holds for both: ``forgetting`` > 0 and ``backward_transfer`` < 0 mean the loss on earlier
domains rose (``forgetting_j = L[T-1, j] - min_{j<=l<T-1} L[l, j]``, ``BWT = mean_j (L[j, j] - L[T-1, j])``),
``forward_transfer`` > 0 means training on earlier domains lowered a later one's loss before it was
trained on. They are the accuracy metrics of the matrix ``-L``, in nats per token.

Nats per token depend on the tokenizer (a BPE token holds several bytes, a byte token one), so with each
domain's validation bytes per token the summary also gives **bits per byte**, ``L / (ln 2 * bytes per
token)``, which compares runs of any tokenizer (and the count models of ``benchmarks/pretraining.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lifelong.metrics.accuracy_matrix import Matrix, Sizes, summary
from lifelong.metrics.stability import StabilityGap

CLASSIFICATION = "classification"
LANGUAGE_MODEL = "language_model"
OBJECTIVES = (CLASSIFICATION, LANGUAGE_MODEL)


def logits_of(out: Any) -> torch.Tensor:
    """The logits tensor of a model's output: the tensor itself, or the ``logits`` field of the output
    object a Hugging Face ``transformers`` causal LM returns."""
    return out if isinstance(out, torch.Tensor) else out.logits


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits ``(B, L, V)`` against the next tokens ``targets`` ``(B, L)``: the mean over
    every token (``reduction="mean"``), the sum, or one mean per window ``(B,)`` (``"window"``)."""
    flat = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           reduction="none" if reduction == "window" else reduction)
    return flat.view(targets.shape).mean(dim=1) if reduction == "window" else flat


def higher_is_better(objective: str) -> bool:
    """Whether the objective's metric improves upwards (accuracy) or downwards (loss)."""
    return objective == CLASSIFICATION


def metric_name(objective: str) -> str:
    """``accuracy`` or ``loss``: what the matrix of a run of ``objective`` holds."""
    return "accuracy" if higher_is_better(objective) else "loss"


def bits_per_byte(loss: float, bytes_per_token: float) -> float:
    """A loss in nats per token as bits per byte, for tokens of ``bytes_per_token`` UTF-8 bytes on average."""
    return loss / (math.log(2) * bytes_per_token)


def count_model_loss(train: torch.Tensor, test: torch.Tensor, vocab_size: int, order: int) -> float:
    """Mean next-token loss (nats per token) on the token windows ``test`` (N, L + 1) of a count model
    fitted on the windows ``train`` (M, L + 1), both over the tokens the windows predict (all but each
    window's first): ``order`` 0 the unigram ``P(t) = (c(t) + 1) / (n + V)``, 1 the bigram
    ``P(t | s) = (c(s, t) + 1) / (c(s) + V)`` with ``s`` the token before ``t`` in its window (add-one
    smoothing). The baselines a language model must beat by a margin before its losses say more about what
    it learned than the byte (or token) statistics any counter gets from the same text."""
    if order not in (0, 1):
        raise ValueError(f"a count model of order 0 (unigram) or 1 (bigram), got {order}")
    targets, test_targets = train[:, 1:].reshape(-1), test[:, 1:].reshape(-1)
    if order == 0:
        counts = torch.bincount(targets, minlength=vocab_size).double()  # (V,)
        log_p = ((counts + 1) / (counts.sum() + vocab_size)).log()[test_targets]
    else:
        pairs = train[:, :-1].reshape(-1) * vocab_size + targets
        counts = torch.bincount(pairs, minlength=vocab_size * vocab_size).double().view(vocab_size, vocab_size)
        probabilities = (counts + 1) / (counts.sum(dim=1, keepdim=True) + vocab_size)  # (V, V): row s, column t
        log_p = probabilities.log()[test[:, :-1].reshape(-1), test_targets]
    return float(-log_p.mean())


def loss_summary(L: Matrix, initial: Sequence[float], test_sizes: Sizes,
                 bytes_per_token: Sequence[float] | None = None) -> dict[str, Any]:
    """The metrics of a loss matrix (module docstring for the signs): ``final_loss`` (mean over domains
    after the last experience), ``final_losses`` (per domain), ``final_perplexity`` (``exp`` of
    ``final_loss``), ``average_loss`` (after each experience, the mean loss over the domains seen so far,
    averaged over experiences), ``forgetting``, ``backward_transfer``, ``forward_transfer``; with
    ``bytes_per_token`` (one per domain, :func:`lifelong.data.text.validation_bytes_per_token`) also
    ``final_bits_per_byte_by_domain`` and their mean ``final_bits_per_byte``."""
    m = np.asarray(L, dtype=float)
    scores = summary(-m, [-v for v in initial], test_sizes)
    final = scores["final_accuracy"]
    average = scores["average_incremental_accuracy_per_experience"]
    bits: dict[str, Any] = {}
    if bytes_per_token is not None and len(m):
        by_domain = [bits_per_byte(float(v), ratio) for v, ratio in zip(m[-1], bytes_per_token, strict=True)]
        bits = {"final_bits_per_byte": float(np.mean(by_domain)), "final_bits_per_byte_by_domain": by_domain}
    return {
        "final_loss": None if final is None else -final,
        "final_losses": [float(v) for v in m[-1]],
        "final_perplexity": None if final is None else float(np.exp(-final)),
        "average_loss": None if average is None else -average,
        "forgetting": scores["forgetting"],
        "backward_transfer": scores["backward_transfer"],
        "forward_transfer": scores["forward_transfer"],
        **bits,
    }


def matrix_summary(objective: str, matrix: Matrix, initial: Sequence[float], test_sizes: Sizes,
                   bytes_per_token: Sequence[float] | None = None) -> dict[str, Any]:
    """The metrics of a run's matrix: :func:`~lifelong.metrics.accuracy_matrix.summary` of an accuracy
    matrix, :func:`loss_summary` of a loss matrix (``bytes_per_token``: see there)."""
    if higher_is_better(objective):
        return summary(matrix, initial, test_sizes)
    return loss_summary(matrix, initial, test_sizes, bytes_per_token)


def as_scores(objective: str, rows: Sequence[Sequence[float]]) -> list[list[float]]:
    """Rows of the metric as "higher is better" scores (a loss negated): what the curve metrics
    (stability gap, anytime accuracy) read, so that a gap is a drop in accuracy or a rise in loss."""
    sign = 1.0 if higher_is_better(objective) else -1.0
    return [[sign * v for v in row] for row in rows]


def gap_record(objective: str, gap: StabilityGap) -> dict[str, Any]:
    """A stability gap as stored with a run, in the metric's units: a classifier's as measured; a language
    model's (measured on negated losses) as losses: ``loss_before`` (mean loss on the earlier domains at
    the switch), ``depth`` (their mean rise above it while the new domain trains, nats per token),
    ``peak_mean_loss`` (the highest mean loss on them) and ``steps_to_peak``, ``steps_to_recover``
    (back within the tolerance of ``loss_before``), ``worst_old_loss`` (each earlier domain's highest
    loss after it was learned, averaged) and ``new_loss`` (the new domain's at the end of its training)."""
    if higher_is_better(objective):
        return gap.as_dict()
    return {"experience": gap.experience, "switch_step": gap.switch_step, "loss_before": -gap.before,
            "depth": gap.depth, "peak_mean_loss": -gap.mean_curve_minimum, "steps_to_peak": gap.steps_to_minimum,
            "steps_to_recover": gap.steps_to_recover, "worst_old_loss": -gap.minimum, "new_loss": -gap.new_accuracy}
