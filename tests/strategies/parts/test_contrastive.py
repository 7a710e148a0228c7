"""The contrastive losses of PCR, HPCR and OnPro, each on a few vectors whose value is worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lifelong.strategies.parts.contrastive import (
    batch_prototypes,
    cosine_logits,
    pair_probabilities,
    prototype_equilibrium_loss,
    proxy_contrastive_loss,
    similarity_distillation,
    views,
)

PROXIES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
"""Four classes' head weights, at right angles; class 3 has no sample in the batch below."""


def head_with(weight: torch.Tensor) -> nn.Linear:
    head = nn.Linear(2, len(weight))
    with torch.no_grad():
        head.weight.copy_(weight)
    return head


def test_the_pcr_loss_of_four_anchors_by_hand() -> None:
    # four anchors of classes 0, 0, 1, 2: cosines to the proxies are 1, 0 or -1, and tau = 0.5 doubles them
    features = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 2])
    head = head_with(PROXIES)
    loss = proxy_contrastive_loss(cosine_logits(features, head, 1 / 0.5), labels)
    # the denominator has one term per sample of the batch (class 0 twice) and none for absent class 3
    e = math.e
    by_hand = [math.log(2 * e**2 + 1 + e**-2) - 2,  # anchor 0: s = (2, 0, -2) over classes 0, 1, 2
               math.log(2 * e**2 + 1 + e**-2) - 2,  # anchor 1: the same direction
               math.log(2 + e**2 + 1) - 2,  # anchor 2: s = (0, 2, 0)
               math.log(2 * e**-2 + 1 + e**2) - 2]  # anchor 3: s = (-2, 0, 2)
    assert loss.item() == pytest.approx(sum(by_hand) / 4, rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(head.weight.grad[3]) == 0  # an absent class's proxy is neither pulled nor pushed
    assert torch.count_nonzero(head.weight.grad[:3]) > 0


def test_the_similarity_distillation_is_the_targets_entropy_and_flat_where_nothing_moved() -> None:
    stored = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    features = stored.clone().requires_grad_(True)
    loss = similarity_distillation(features, stored, temperature=1.0)
    # rows' cosines to the other two: (0, -1), (0, 0), (-1, 0); softmax over them, cross-entropy with itself
    a = 1 / (1 + math.exp(-1))

    def entropy(p: float) -> float:
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))

    assert loss.item() == pytest.approx((entropy(a) + math.log(2) + entropy(a)) / 3, rel=1e-6)
    loss.backward()
    assert features.grad.abs().max() < 1e-6  # the structure is kept exactly: nothing to pull
    moved = similarity_distillation(torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]), stored, 1.0)
    assert moved > loss


def test_the_prototypes_of_a_batch_are_its_classes_mean_normalized_features() -> None:
    features = torch.tensor([[3.0, 4.0], [0.0, 2.0], [5.0, 0.0]])
    prototypes, present = batch_prototypes(features, torch.tensor([0, 0, 2]), n_classes=3)
    assert torch.allclose(prototypes, torch.tensor([[0.3, 0.9], [0.0, 0.0], [1.0, 0.0]]))  # (0.6, 0.8), (0, 1)
    assert present.tolist() == [True, False, True]


def test_the_prototype_equilibrium_loss_of_two_classes_by_hand() -> None:
    features = torch.tensor([[3.0, 4.0], [0.0, 2.0], [5.0, 0.0]])
    labels = torch.tensor([0, 0, 2])
    # the same samples in both views: each prototype's positive is its own copy (cosine 1), its negatives the
    # other class's prototype in both views (cosine 0.3 / sqrt(0.9)); class 1 is absent and takes no part
    cosine, tau = 0.3 / math.sqrt(0.9), 0.5
    by_hand = -(1 / tau - math.log(math.exp(1 / tau) + 2 * math.exp(cosine / tau)))
    loss = prototype_equilibrium_loss(features, features, labels, n_classes=3, temperature=tau)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    # views that disagree on a class cost more than views that agree
    other = torch.tensor([[4.0, 3.0], [0.0, 2.0], [5.0, 1.0]])
    assert prototype_equilibrium_loss(features, other, labels, 3, tau) > loss


def test_feedback_draws_the_closest_pair_of_classes_most() -> None:
    # prototypes of classes 0, 1 and 2 at distances 1 (0-1), 2 (0-2) and sqrt(5) (1-2); class 3 is absent
    prototypes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.1, 0.1]])
    pairs, probabilities = pair_probabilities(prototypes, torch.tensor([True, True, True, False]))
    assert pairs.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    weights = [math.exp(1), math.exp(1 / 2), math.exp(1 / math.sqrt(5))]
    expected = [weights[0], weights[1], 0.0, weights[2], 0.0, 0.0]
    assert probabilities.tolist() == pytest.approx([w / sum(weights) for w in expected], rel=1e-6)
    _, none = pair_probabilities(prototypes, torch.tensor([True, False, False, False]))  # no pair at all
    assert torch.count_nonzero(none) == 0


def test_a_second_view_exists_only_when_the_run_augments() -> None:
    x, raw = torch.ones(2, 3), torch.zeros(2, 3)
    assert views(x, raw, None) is x
    assert torch.equal(views(x, raw, lambda r: r - 1), torch.cat([x, raw - 1]))
