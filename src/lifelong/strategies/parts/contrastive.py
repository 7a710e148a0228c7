"""Contrastive losses on a model's features, for the methods that learn with them: anchors against the
classifier's proxies (PCR, HPCR), the similarity structure of replayed samples (HPCR's distillation),
class prototypes of a batch against each other (OnPro), the supervised contrastive loss and the old model's
prototype-sample relations (PSRD), with the second augmented view these losses read.

Each loss takes the features it contrasts and returns a scalar; which samples, heads and weights go in is
the method's. Classes are the columns of a ``(N, C)`` logit matrix or the rows of a ``(C, D)`` prototype
matrix over all ``C`` classes of the stream, with the classes absent from a batch masked rather than
dropped, so that no step needs the host to read which classes a batch holds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def cosine_logits(features: torch.Tensor, head: nn.Linear, scale: float) -> torch.Tensor:
    """``scale * cos(f, w_c)`` (B, C) for features (B, D) and the head's class weights (C, D): the angle
    factor of the dot-product logit ``|w_c| |f| cos``, without the norms that carry the class bias."""
    return scale * F.normalize(features, dim=1) @ F.normalize(head.weight, dim=1).T


def views(first: torch.Tensor, raw: torch.Tensor,
          augment: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """The inputs a contrastive loss reads: ``first`` (B, ...), the samples as they enter training, followed,
    when the run augments (``augment``), by a second view of the un-augmented ``raw`` samples augmented
    afresh (2B, ...). Without augmentation a second view would repeat the first, so there is none."""
    return first if augment is None else torch.cat([first, augment(raw)])


def proxy_contrastive_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PCR's loss (Lin et al., CVPR 2023): the supervised contrastive loss of each anchor (a sample) with its
    positives and negatives replaced by the proxies of the samples' classes.

    ``logits`` (N, C) are the anchor-to-proxy similarities ``cos(z_i, w_c) / tau``, ``labels`` (N,) the
    anchors' classes. Anchor ``i`` contrasts with the proxy of every sample ``j`` of the batch:
    ``-log(exp(s_{i,y_i}) / sum_j exp(s_{i,y_j}))``, so only the classes present in the batch compete and
    each counts once per sample of it, ``sum_j exp(s_{i,y_j}) = sum_c n_c exp(s_{i,c})``, as in the authors'
    code (SupCon's ``proxy`` mode). Averaged over the anchors."""
    counts = torch.bincount(labels, minlength=logits.shape[1]).to(logits.dtype)  # (C,): n_c, 0 if absent
    denominator = torch.logsumexp(logits + counts.log(), dim=1)  # (N,); log 0 = -inf drops absent classes
    return (denominator - logits.gather(1, labels.unsqueeze(1)).squeeze(1)).mean()


def similarity_distillation(features: torch.Tensor, stored: torch.Tensor, temperature: float) -> torch.Tensor:
    """HPCR's sample-based contrastive distillation (Lin et al. 2024): each sample's softmax over its cosine
    similarities to the other samples (off the diagonal, divided by ``temperature``), from the features
    ``stored`` (N, D) when the samples entered the memory, is the target of the same softmax from the current
    ``features`` (N, D): cross-entropy, averaged over the samples. It keeps the relations among old samples,
    where logit distillation keeps each sample's own outputs."""
    off_diagonal = ~torch.eye(len(features), dtype=torch.bool, device=features.device)  # (N, N)

    def relations(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1)
        return (x @ x.T / temperature)[off_diagonal].view(len(x), -1)  # (N, N - 1)

    target = F.softmax(relations(stored.detach()), dim=1)
    return -(target * F.log_softmax(relations(features), dim=1)).sum(dim=1).mean()


def batch_prototypes(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor,
                                                                                          torch.Tensor]:
    """OnPro's online prototypes (Wei et al., ICCV 2023): the mean (C, D) of each class's L2-normalized
    ``features`` (N, D) in this batch (zero rows for the classes absent from it), and which classes are
    present (C,) (bool)."""
    normalized = F.normalize(features, dim=1)
    sums = normalized.new_zeros(n_classes, normalized.shape[1]).index_add(0, labels, normalized)  # (C, D)
    counts = torch.bincount(labels, minlength=n_classes)  # (C,)
    return sums / counts.clamp_min(1).unsqueeze(1).to(sums.dtype), counts > 0


def prototype_equilibrium_loss(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor, n_classes: int,
                               temperature: float) -> torch.Tensor:
    """OnPro's online prototype equilibrium loss (Wei et al., ICCV 2023): the batch's prototypes of two views,
    ``first`` and ``second`` (N, D) of the same samples, normalized; each prototype's positive is its class's
    prototype in the other view, its negatives every other prototype of either view, in an InfoNCE at
    ``temperature``. Pulling the views of a class together while pushing all classes apart balances the
    classes present, new and replayed alike, instead of letting the new ones dominate. Averaged over the
    ``2K`` prototypes of the ``K`` classes present."""
    prototypes, present = zip(*(batch_prototypes(view, labels, n_classes) for view in (first, second)),
                              strict=True)
    z = F.normalize(torch.cat(prototypes), dim=1)  # (2C, D); the absent classes' rows stay zero
    valid = torch.cat(present)  # (2C,)
    blocked = ~valid.unsqueeze(0) | torch.eye(len(z), dtype=torch.bool, device=z.device)  # (2C, 2C)
    logits = (z @ z.T / temperature).masked_fill(blocked, torch.finfo(z.dtype).min)
    other_view = torch.arange(len(z), device=z.device).roll(n_classes)  # row c pairs with c + C, and back
    log_prob = logits.gather(1, other_view.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=1)  # (2C,)
    return -(log_prob * valid).sum() / valid.sum().clamp_min(1)


def pair_probabilities(prototypes: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OnPro's adaptive prototypical feedback (Wei et al., ICCV 2023): every pair ``a < b`` of classes (P, 2)
    and the probability (P,) of drawing it, ``softmax(1 / ||p_a - p_b||)`` over the pairs of classes
    ``present`` (C,), 0 for the others. The closest prototypes, the classes the model confuses most, are
    drawn the most often to be mixed and replayed."""
    pairs = torch.triu_indices(len(prototypes), len(prototypes), offset=1, device=prototypes.device).T  # (P, 2)
    distance = (prototypes[pairs[:, 0]] - prototypes[pairs[:, 1]]).norm(dim=1)  # (P,)
    valid = present[pairs[:, 0]] & present[pairs[:, 1]]
    closeness = (1 / distance.clamp_min(1e-12)).masked_fill(~valid, torch.finfo(distance.dtype).min)
    return pairs, F.softmax(closeness, dim=0) * valid


SUPCON_BASE_TEMPERATURE = 0.07
"""The supervised contrastive loss's reference temperature: the loss is scaled by ``temperature / 0.07``, as in
Khosla et al.'s code and the PSRD authors' copy of it."""


def supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """The supervised contrastive loss (Khosla et al., NeurIPS 2020, ``L_out``) of ``features`` (N, D) with
    ``labels`` (N,): each anchor's mean, over its positives (the other samples of its class), of
    ``-log(exp(z_i . z_p / tau) / sum_{a != i} exp(z_i . z_a / tau))`` on normalized features, scaled by
    ``tau / 0.07`` (:data:`SUPCON_BASE_TEMPERATURE`), averaged over the anchors that have a positive (0 when
    none has)."""
    z = F.normalize(features, dim=1)
    itself = torch.eye(len(z), dtype=torch.bool, device=z.device)  # (N, N)
    logits = (z @ z.T / temperature).masked_fill(itself, torch.finfo(z.dtype).min)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (N, N)
    positive = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~itself  # (N, N)
    counts = positive.sum(dim=1)  # (N,)
    mean_log_prob = (log_prob * positive).sum(dim=1) / counts.clamp_min(1)
    anchored = counts > 0
    return -(temperature / SUPCON_BASE_TEMPERATURE) * (mean_log_prob * anchored).sum() / anchored.sum().clamp_min(1)


def prototype_scores(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``f . p_c / |p_c|`` (N, K) of features (N, D) against prototypes (K, D): the sample-to-prototype
    similarity PSRD distils, normalized on the prototypes' side only (as in the authors' code), so a
    sample's norm acts as an inverse temperature of its relations."""
    return features @ F.normalize(prototypes, dim=1).T


def relation_distillation(features: torch.Tensor, prototypes: torch.Tensor, old_features: torch.Tensor,
                          old_prototypes: torch.Tensor, groups: list[torch.Tensor], temperature: float
                          ) -> torch.Tensor:
    """PSRD's prototype-sample relation distillation (Asadi et al., ICML 2023): for each group of old classes
    (an earlier task's, ``groups``: class indices (K_t,) each), the softmax at ``temperature`` of the new
    samples' similarities (:func:`prototype_scores`) to that task's prototypes, from the old model's
    ``old_features`` (N, D) and ``old_prototypes`` (C, D), is the target of the same softmax from the current
    ``features`` (N, D) and ``prototypes`` (C, D): ``KL(old || current)``, averaged over the samples and
    summed over the groups (0 without groups). It keeps how each old prototype relates to the data, not
    where it lies, so prototypes and features may drift together."""
    loss = features.new_zeros(())
    for classes in groups:
        current = prototype_scores(features, prototypes[classes]) / temperature  # (N, K_t)
        old = prototype_scores(old_features, old_prototypes[classes]).detach() / temperature
        loss = loss + F.kl_div(F.log_softmax(current, dim=1), F.log_softmax(old, dim=1), reduction="batchmean",
                               log_target=True)
    return loss
