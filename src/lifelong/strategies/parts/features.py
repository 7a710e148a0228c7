"""Feature statistics shared by the prototype and exemplar methods (iCaRL, NCM, SLCA, FeTrIL).

Everything here works on the output of a model's backbone (``split_model(model)[0]``): features of a
sample set, per-class means and covariances, herding selection of exemplars, nearest-mean
classification, Gaussian sampling of features and refitting a linear head on features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.lazy import Inputs, input_batches
from lifelong.world import World


@torch.no_grad()
def extract_features(backbone: nn.Module, x: Inputs, batch_size: int = 1024) -> torch.Tensor:
    """Backbone features (N, D) of inputs (N, ...) (in memory, or a lazy dataset's, read in batches), on
    the backbone's device, in eval mode (normalisation layers use running statistics); the backbone's
    mode is restored afterwards."""
    was_training = backbone.training
    backbone.eval()
    device = next((p.device for p in backbone.parameters()), None)  # a parameter-free backbone takes x as it is
    features = torch.cat([backbone(chunk if device is None else chunk.to(device))
                          for chunk in input_batches(x, batch_size)])
    backbone.train(was_training)
    return features


def class_statistics(features: torch.Tensor, labels: torch.Tensor, classes: list[int],
                     covariance: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-class mean (K, D) of ``features`` (N, D) for each label in ``classes`` and, with
    ``covariance``, the per-class unbiased covariance (K, D, D) (zero for a class of one sample)."""
    means = torch.stack([features[labels == c].mean(dim=0) for c in classes])
    if not covariance:
        return means, None
    covariances = []
    for c in classes:
        members = features[labels == c]  # (n_c, D)
        centred = members - members.mean(dim=0)
        covariances.append(centred.T @ centred / max(len(members) - 1, 1))
    return means, torch.stack(covariances)


class ClassStatistics:
    """Running per-class feature statistics: count, sum and (with ``covariance``) sum of outer
    products, in float64, so that a class that returns in a later experience (recurring and blurry
    streams) updates its one entry instead of adding a second, and its mean and covariance are those
    of every sample of it seen so far. ``classes`` lists the classes with statistics, sorted.

    Data-parallel: each rank adds its part of the data and the sums are added over the ranks, so every
    rank holds the statistics of the whole experience."""

    def __init__(self, covariance: bool = False) -> None:
        self.covariance = covariance
        self.classes: list[int] = []
        self.counts = torch.zeros(0, dtype=torch.float64)  # (K,)
        self.sums = torch.zeros(0, 0, dtype=torch.float64)  # (K, D)
        self.squares = torch.zeros(0, 0, 0, dtype=torch.float64)  # (K, D, D), only with covariance

    def __len__(self) -> int:
        return len(self.classes)

    def update(self, features: torch.Tensor, labels: torch.Tensor, classes: Sequence[int],
               world: World = World()) -> None:
        """Add ``features`` (N, D) with ``labels`` (N,) to the statistics of ``classes`` (the classes of
        the whole experience, the same on every rank; a rank's part may lack some of them)."""
        classes = sorted(set(classes))
        dimension = features.shape[1]
        features, labels = features.detach().cpu().to(torch.float64), labels.cpu()
        counts = torch.stack([(labels == c).sum() for c in classes]).to(torch.float64)  # (k,)
        sums = torch.stack([features[labels == c].sum(dim=0) for c in classes])  # (k, D)
        parts = [counts, sums]
        if self.covariance:
            parts.append(torch.stack([features[labels == c].T @ features[labels == c] for c in classes]))
        parts = [world.all_reduce_sum(part) for part in parts]
        if not self.classes:
            self.sums = torch.zeros(0, dimension, dtype=torch.float64)
            self.squares = torch.zeros(0, dimension, dimension, dtype=torch.float64)
        for position, c in enumerate(classes):
            if c in self.classes:
                row = self.classes.index(c)
                self.counts[row] += parts[0][position]
                self.sums[row] += parts[1][position]
                if self.covariance:
                    self.squares[row] += parts[2][position]
            else:
                row = next((i for i, known in enumerate(self.classes) if known > c), len(self.classes))
                self.classes.insert(row, c)
                self.counts = torch.cat([self.counts[:row], parts[0][position:position + 1], self.counts[row:]])
                self.sums = torch.cat([self.sums[:row], parts[1][position:position + 1], self.sums[row:]])
                if self.covariance:
                    self.squares = torch.cat([self.squares[:row], parts[2][position:position + 1],
                                              self.squares[row:]])

    def means(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-class mean features (K, D), in the order of :attr:`classes`."""
        return (self.sums / self.counts.clamp_min(1).unsqueeze(1)).to(dtype)

    def covariances(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-class unbiased covariances (K, D, D) (zero for a class of one sample)."""
        if not self.covariance:
            raise ValueError("these statistics were kept without covariance")
        means = self.sums / self.counts.clamp_min(1).unsqueeze(1)  # (K, D)
        outer = self.counts.view(-1, 1, 1) * means.unsqueeze(2) * means.unsqueeze(1)  # (K, D, D)
        return ((self.squares - outer) / (self.counts - 1).clamp_min(1).view(-1, 1, 1)).to(dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "counts": self.counts, "sums": self.sums, "squares": self.squares}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classes = list(state["classes"])
        self.counts, self.sums, self.squares = state["counts"], state["sums"], state["squares"]


def herding(features: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (count,) of exemplars chosen by herding (Welling 2009; iCaRL, Rebuffi et al. 2017, Alg. 4).

    Step k picks the sample that brings the mean of the k chosen so far closest to the class mean
    ``mu``: ``argmin_i || mu - (f_i + sum_{j<k} f_pj) / k ||``. Each sample is picked at most once;
    the order is a priority (iCaRL shrinks a set by keeping its first ``m``)."""
    count = min(count, len(features))
    target = features.mean(dim=0)  # (D,)
    chosen = torch.empty(count, dtype=torch.long, device=features.device)
    running = torch.zeros_like(target)  # sum of the chosen features
    taken = torch.zeros(len(features), dtype=torch.bool, device=features.device)
    for k in range(1, count + 1):  # picks stay on the device: the host never waits to read one
        distance = (target - (running + features) / k).norm(dim=1).masked_fill(taken, float("inf"))  # (N,)
        index = distance.argmin().unsqueeze(0)  # (1,)
        chosen[k - 1:k] = index
        taken.index_fill_(0, index, True)
        running += features.index_select(0, index)[0]
    return chosen


METRICS = ("euclidean", "cosine")
"""The distances :func:`nearest_mean` measures."""


def nearest_mean(features: torch.Tensor, means: torch.Tensor, classes: torch.Tensor,
                 allowed: torch.Tensor | None = None, metric: str = "euclidean") -> torch.Tensor:
    """Label (B,) of the nearest class mean to each feature (B, D); ``means`` (K, D) belong to ``classes``
    (K,). ``metric``: ``euclidean`` distance, or ``cosine``, the most cosine-similar mean (SimpleCIL's
    prototype classifier, Zhou et al. 2023: the features and the means normalized to unit length).
    ``allowed`` (B, C) restricts each sample to some labels (a task's classes)."""
    if metric == "cosine":
        distance = -(F.normalize(features, dim=1) @ F.normalize(means, dim=1).T)  # (B, K)
    elif metric == "euclidean":
        distance = torch.cdist(features, means)  # (B, K)
    else:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if allowed is not None:
        distance = distance.masked_fill(~allowed[:, classes], float("inf"))
    return classes[distance.argmin(dim=1)]


def restrict_to_classes(logits: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Logits (B, C) with every class outside ``classes`` set to the lowest value (no-op when empty):
    a head refitted on features only defines the classes it was fitted on."""
    if not classes:
        return logits
    fitted = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    fitted[classes] = True
    return logits.masked_fill(~fitted, torch.finfo(logits.dtype).min)


def sample_gaussian(mean: torch.Tensor, covariance: torch.Tensor, count: int, generator: torch.Generator,
                    ridge: float = 1e-4) -> torch.Tensor:
    """``count`` samples (count, D) of N(mean, covariance + ridge * I) on ``mean``'s device; the ridge makes
    the Cholesky factor exist when a class has fewer samples than feature dimensions. The noise is drawn
    on the CPU, where ``generator`` lives, so the samples do not depend on the device."""
    dimension = len(mean)
    factor = torch.linalg.cholesky(covariance + ridge * torch.eye(dimension, dtype=mean.dtype, device=mean.device))
    noise = torch.randn(count, dimension, generator=generator, dtype=mean.dtype).to(mean.device)
    return mean + noise @ factor.T


def fit_linear_head(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor, classes: list[int],
                    weight_decay: float = 1e-4, iterations: int = 100,
                    transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
    """Refit the rows of ``head`` for ``classes`` by multinomial logistic regression on ``features``
    (N, D) with ``labels`` (N,), starting from the current rows; other rows are left as they are.
    ``transform`` maps the logits (N, K) of ``classes``, in their sorted order, to those the
    cross-entropy reads (SLCA's logit normalization); none by default.

    Full-batch L-BFGS: deterministic and free of a learning rate, which the classifier-refitting steps
    of SLCA (Zhang et al. 2023) and FeTrIL (Petit et al. 2023) would otherwise each need tuned."""
    index = torch.tensor(classes, dtype=torch.long, device=head.weight.device)
    weight = head.weight.detach()[index].clone().requires_grad_(True)  # (K, D)
    bias = head.bias.detach()[index].clone().requires_grad_(True)  # (K,)
    targets = torch.searchsorted(index, labels.to(index.device))  # label -> position in the sorted ``classes``
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=iterations, history_size=10,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = features @ weight.T + bias  # (N, K)
        if transform is not None:
            logits = transform(logits)
        loss = F.cross_entropy(logits, targets) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        head.weight[index] = weight.detach()
        head.bias[index] = bias.detach()
