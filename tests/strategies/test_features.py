import pytest
import torch
from torch import nn

from lifelong.errors import ConfigError, MissingFileError
from lifelong.strategies.parts.backbones import load_backbone
from lifelong.strategies.parts.features import (
    class_statistics,
    fit_linear_head,
    herding,
    nearest_mean,
    restrict_to_classes,
    sample_gaussian,
)


def test_herding_picks_the_sample_that_keeps_the_running_mean_closest_to_the_class_mean() -> None:
    # mean 3.25. Step 1: |3.25 - f| is smallest for f=2. Step 2: (2+f)/2 vs 3.25: f=1 -> 1.5 (1.75),
    # f=0 -> 1 (2.25), f=10 -> 6 (2.75): pick 1. Step 3: (3+f)/3: f=10 -> 4.33 (1.08) beats f=0 -> 1 (2.25).
    features = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    assert herding(features, 4).tolist() == [2, 1, 3, 0]
    assert herding(features, 2).tolist() == [2, 1]
    assert herding(features, 9).tolist() == [2, 1, 3, 0]  # never more than the class holds


def test_class_statistics_match_torch_cov() -> None:
    features = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1] * 10)
    means, covariances = class_statistics(features, labels, [1, 0], covariance=True)
    assert torch.allclose(means[0], features[1::2].mean(0)) and torch.allclose(means[1], features[::2].mean(0))
    assert torch.allclose(covariances[0], torch.cov(features[1::2].T), atol=1e-6)


def test_nearest_mean_by_hand_and_restricted_to_allowed_classes() -> None:
    means = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    classes = torch.tensor([7, 3, 5])
    features = torch.tensor([[1.0, 0.0], [3.0, 0.5], [0.5, 3.0]])
    assert nearest_mean(features, means, classes).tolist() == [7, 3, 5]
    allowed = torch.zeros(3, 8, dtype=torch.bool)
    allowed[:, [3, 5]] = True  # class 7 not allowed: (1, 0) is nearer to (4, 0) than to (0, 4)
    assert nearest_mean(features, means, classes, allowed).tolist() == [3, 3, 5]


def test_cosine_nearest_mean_by_hand() -> None:
    # Issue 25 (SimpleCIL's cosine classifier): (0.5, 0.4) is nearest (1, 0) in distance (0.64 against 4.9),
    # but at 38.7 degrees it is nearer (4, 4)'s 45 than (1, 0)'s 0 in angle; (6, 1) is nearer (4, 4) in
    # distance (3.6 against 5.1), at 9.5 degrees nearer (1, 0) in angle.
    means = torch.tensor([[1.0, 0.0], [4.0, 4.0]])
    classes = torch.tensor([2, 9])
    features = torch.tensor([[0.5, 0.4], [3.0, 0.2], [6.0, 1.0]])
    assert nearest_mean(features, means, classes).tolist() == [2, 2, 9]
    assert nearest_mean(features, means, classes, metric="cosine").tolist() == [9, 2, 2]
    allowed = torch.zeros(3, 10, dtype=torch.bool)
    allowed[:, 2] = True
    assert nearest_mean(features, means, classes, allowed, metric="cosine").tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="metric"):
        nearest_mean(features, means, classes, metric="manhattan")


def test_gaussian_samples_have_the_requested_moments() -> None:
    mean = torch.tensor([1.0, -2.0])
    covariance = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    samples = sample_gaussian(mean, covariance, 20000, torch.Generator().manual_seed(0))
    assert torch.allclose(samples.mean(0), mean, atol=0.05)
    assert torch.allclose(torch.cov(samples.T), covariance, atol=0.06)


def test_fit_linear_head_changes_only_the_given_rows_and_separates_them() -> None:
    torch.manual_seed(0)
    head = nn.Linear(2, 4)
    before = head.weight.detach().clone()
    features = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 2.0]])
    labels = torch.tensor([1, 1, 3, 3])
    fit_linear_head(head, features, labels, [1, 3])
    assert torch.equal(head.weight[[0, 2]], before[[0, 2]])
    predicted = restrict_to_classes(head(features), [1, 3]).argmax(1)
    assert predicted.tolist() == [1, 1, 3, 3]


def test_load_backbone_from_a_state_dict_and_clear_errors(tmp_path) -> None:
    source = nn.Linear(3, 2)
    target = nn.Linear(3, 2)
    torch.save(source.state_dict(), tmp_path / "state.pt")
    load_backbone(target, str(tmp_path / "state.pt"))
    assert torch.equal(target.weight, source.weight)
    torch.save(nn.Linear(3, 2), tmp_path / "module.pt")  # read with weights_only=True: no code runs on load
    with pytest.raises(ConfigError, match="strategy.backbone_path: .*pickled module"):
        load_backbone(target, str(tmp_path / "module.pt"))
    with pytest.raises(MissingFileError, match="strategy.backbone_path"):
        load_backbone(target, str(tmp_path / "absent.pt"))
    torch.save(nn.Linear(5, 2).state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(ConfigError, match="does not fit"):
        load_backbone(target, str(tmp_path / "wrong.pt"))


def test_gaussian_samples_live_on_the_statistics_device() -> None:
    """Statistics of features on an accelerator sample there, with the CPU generator of the strategy
    (the meta device stands in for CUDA: mixing it with CPU tensors fails the same way)."""
    mean, covariance = torch.zeros(3, device="meta"), torch.eye(3, device="meta")
    samples = sample_gaussian(mean, covariance, 4, torch.Generator().manual_seed(0))
    assert samples.device.type == "meta" and samples.shape == (4, 3)
