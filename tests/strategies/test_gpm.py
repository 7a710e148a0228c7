"""GPM (Saha et al. 2021): the basis grows by what the energy threshold implies, gradients leave the stored
input subspaces, the state survives a checkpoint, and a permuted stream is forgotten far less than by
fine-tuning."""

import copy
import io
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from lifelong import OptimConfig, class_incremental, cnn, mlp, train
from lifelong.data import domain_incremental, task_incremental
from lifelong.data.streams import Experience, TensorSet
from lifelong.errors import ConfigError
from lifelong.strategies import CUBER, GPM, STRATEGIES, Naive
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.parts.subspaces import (
    gradient_matrix,
    grow_basis,
    projected_layers,
)
from tests.runner.test_checkpoint_resume import resumed_and_reference
from tests.strategies.test_strategy_state import same


def spectrum_gram(energies: list[float], d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gram matrix (d, d) with the given eigenvalues along random orthonormal directions (d, len)."""
    generator = torch.Generator().manual_seed(seed)
    directions, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    directions = directions[:, :len(energies)]
    return directions @ torch.diag(torch.tensor(energies, dtype=torch.float64)) @ directions.T, directions


def test_first_basis_takes_the_fewest_top_directions_reaching_the_threshold() -> None:
    gram, directions = spectrum_gram([5.0, 3.0, 1.5, 0.5], d=6)  # energy 10: cumulative 5, 8, 9.5, 10
    assert grow_basis(None, gram, 0.5).shape == (6, 1)
    assert grow_basis(None, gram, 0.8).shape == (6, 2)  # 8 reached exactly
    basis = grow_basis(None, gram, 0.85)
    assert basis.shape == (6, 3)
    assert torch.allclose(basis.T.double() @ basis.double(), torch.eye(3, dtype=torch.float64), atol=1e-6)
    # the basis spans the three strongest directions: projecting them onto it keeps them whole
    top = directions[:, :3]
    assert torch.allclose(basis.double() @ (basis.double().T @ top), top, atol=1e-6)


def test_later_basis_counts_the_energy_already_captured_first() -> None:
    old = torch.eye(5, dtype=torch.float64)[:, :2]
    new_direction = torch.tensor([0.0, 0.0, 0.6, 0.8, 0.0], dtype=torch.float64)
    # energy 10: 6 along a stored direction, 3 along a new one, 1 along another new one
    gram = 6 * torch.outer(old[:, 0], old[:, 0]) + 3 * torch.outer(new_direction, new_direction)
    gram[4, 4] = 1.0
    assert grow_basis(old, gram, 0.6).shape == (5, 2)  # the stored 6 already reach 6
    grown = grow_basis(old, gram, 0.85)  # 6 + 3 >= 8.5: one new direction, the strong one
    assert grown.shape == (5, 3) and torch.equal(grown[:, :2], old.float())
    assert abs(float(grown[:, 2].double() @ new_direction)) == pytest.approx(1.0, abs=1e-6)
    assert grow_basis(old, gram, 0.95).shape == (5, 4)


@pytest.mark.parametrize("settings", [{"threshold": 0.0}, {"threshold": 1.5}, {"threshold_increment": -0.1},
                                      {"samples": 0}])
def test_bad_settings_name_the_field(settings) -> None:
    with pytest.raises(ConfigError, match=f"strategy.{next(iter(settings))}"):
        GPM(**settings)


def as_images(experience: Experience) -> Experience:
    """The experience with its 8 features as 2x2x2 images, for a convolution."""
    train = experience.train
    return replace(experience, train=TensorSet(train.x.reshape(-1, 2, 2, 2), train.y, train.task))


def test_projected_gradient_is_orthogonal_to_every_stored_basis(small_data) -> None:
    stream = domain_incremental(small_data, 2, transform="permutation")
    model = cnn((2, 2, 2), stream.n_classes, channels=(4,), norm="none", seed=0)
    new = as_images(stream[1]).train.subset(torch.arange(16))
    gpm = GPM(threshold=0.9, samples=64)
    gpm.setup(StrategyContext(stream, 0))
    gpm.after_experience(model, as_images(stream[0]))
    layers = projected_layers(model)
    assert set(gpm.subspaces.bases) == set(layers) == {"backbone.0", "head"}
    # 3x3 patches of 2 channels, plus the bias input
    assert gpm.subspaces.bases["backbone.0"].shape[0] == 2 * 3 * 3 + 1
    assert all(0 < b.shape[1] < b.shape[0] for b in gpm.subspaces.bases.values())
    F.cross_entropy(model(new.x), new.y).backward()
    before = {name: gradient_matrix(layer, layer.weight.grad, layer.bias.grad).clone()
              for name, layer in layers.items()}
    gpm.after_backward(model)
    for name, layer in layers.items():
        basis = gpm.subspaces.bases[name]
        after = gradient_matrix(layer, layer.weight.grad, layer.bias.grad)
        assert (after @ basis).abs().max() < 1e-5
        assert (before[name] @ basis).abs().max() > 1e-3  # there was something to remove
        # what is left is the component outside the basis, unchanged
        assert torch.allclose(after, before[name] - before[name] @ basis @ basis.T, atol=1e-6)
    assert gpm.memory_bytes() == sum(4 * b.numel() for b in gpm.subspaces.bases.values())  # the float32 bases alone


def test_a_projected_step_keeps_the_outputs_on_the_stored_samples(small_data) -> None:
    """With threshold 1 every layer's basis spans its inputs on the stored samples, so an SGD step on a
    new task leaves the logits on those samples as they were (the mechanism behind GPM)."""
    stream = domain_incremental(small_data, 2, transform="permutation")
    model = mlp(stream.input_shape, stream.n_classes, hidden=(32,), seed=0)
    gpm = GPM(threshold=1.0, samples=12)
    gpm.setup(StrategyContext(stream, 0))
    generator = copy.deepcopy(gpm.generator)
    gpm.after_experience(model, stream[0])
    stored = stream[0].train.subset(torch.randperm(len(stream[0].train), generator=generator)[:12])
    before = model(stored.x).detach()
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        gpm.observe(model, stream[1].train.batch()).backward()
        gpm.after_backward(model)
        optimizer.step()
    assert torch.allclose(model(stored.x), before, atol=1e-4)
    assert all(not torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))  # it did learn


@pytest.mark.parametrize("name", ["gpm", "cuber"])
def test_the_head_of_an_nn_sequential_keeps_the_rows_of_unseen_classes_free(name, small_data) -> None:
    """Under task ids the rows of classes no finished experience trained are not projected, whatever the head's
    module is called: here the last layer of an nn.Sequential, named '2' (issue 25: those rows kept 0.601 of
    their gradient norm when the head was found by the name 'head')."""
    stream = task_incremental(small_data, 3)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, stream.n_classes))
    strategy = STRATEGIES[name](samples=32)
    strategy.setup(StrategyContext(stream, 0))
    strategy.after_experience(model, stream[0])
    batch = stream[1].train.batch()
    strategy.observe(model, batch).backward()
    before, first = model[2].weight.grad.clone(), model[0].weight.grad.clone()
    strategy.after_backward(model)
    unseen = [c for c in range(stream.n_classes) if c not in stream[0].classes]
    assert torch.equal(model[2].weight.grad[unseen], before[unseen]) and float(before[unseen].norm()) > 0
    assert not torch.allclose(model[0].weight.grad, first)  # the layers before the head are projected


def test_layer_thresholds_apply_one_threshold_per_layer_in_the_model_order(small_data) -> None:
    stream = domain_incremental(small_data, 2, transform="permutation")
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    bases = {}
    for key, settings in {"low": {"threshold": 0.5}, "high": {"threshold": 1.0},
                          "both": {"layer_thresholds": (0.5, 1.0)}}.items():
        gpm = GPM(samples=64, **settings)
        gpm.setup(StrategyContext(stream, 0))
        gpm.after_experience(model, stream[0])
        bases[key] = gpm.subspaces.bases
    assert bases["low"]["backbone.1"].shape[1] < bases["high"]["backbone.1"].shape[1]
    assert torch.equal(bases["both"]["backbone.1"], bases["low"]["backbone.1"])
    assert torch.equal(bases["both"]["head"], bases["high"]["head"])


def test_layer_thresholds_of_the_wrong_count_or_range_are_refused_in_one_line(small_data) -> None:
    with pytest.raises(ConfigError, match=r"strategy.layer_thresholds must each be > 0 and <= 1, got \[0.5, 1.5\]"):
        GPM(layer_thresholds=(0.5, 1.5))
    stream = domain_incremental(small_data, 2, transform="permutation")
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    gpm = GPM(layer_thresholds=(0.9, 0.9, 0.9))
    gpm.setup(StrategyContext(stream, 0))
    with pytest.raises(ConfigError, match="gives 3 thresholds but the model has 2 projected layers"):
        gpm.after_experience(model, stream[0])


def test_batch_norm_statistics_normalize_every_batch_by_its_own_statistics(small_data) -> None:
    """As the official code's BatchNorm (track_running_stats=False): training, the representation and
    evaluation all use the batch's statistics, the running statistics never move, the modes come back."""
    stream = domain_incremental(small_data, 2, transform="permutation")
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), norm="batch", seed=0)
    norm = model.backbone[2]
    running = norm.running_mean.clone()
    gpm = GPM(samples=32, batch_norm_statistics=True)
    gpm.setup(StrategyContext(stream, 0))
    batch = stream[0].train.batch()
    gpm.observe(model, batch).backward()
    gpm.after_experience(model, stream[0])
    model.eval()
    predicted = gpm.logits(model, batch.x, batch.task)
    assert model.training is False and norm.training is False and norm.track_running_stats
    model.train()
    with torch.no_grad():
        expected = torch.nn.functional.batch_norm(model.backbone[1](model.backbone[0](batch.x)), None, None,
                                                  norm.weight, norm.bias, training=True)
        expected = model.head(model.backbone[3](expected))
    assert torch.allclose(predicted, expected, atol=1e-6)
    assert torch.equal(norm.running_mean, running)


@pytest.mark.parametrize("name", ["gpm", "cuber"])
def test_state_survives_torch_save_and_weights_only_load(name, small_data) -> None:
    stream = domain_incremental(small_data, 3, transform="permutation")
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    strategy = STRATEGIES[name](samples=32)
    train(stream, model, strategy, OptimConfig(epochs=1, momentum=0.0), seed=0)
    strategy.before_experience(model, stream[2])  # CUBER: a relaxed set to carry
    file = io.BytesIO()
    torch.save(strategy.state_dict(), file)
    file.seek(0)
    restored = STRATEGIES[name](samples=32)
    restored.setup(StrategyContext(stream, 1))
    restored.load_state_dict(torch.load(file, weights_only=True), copy.deepcopy(model))
    assert same(restored.state_dict(), strategy.state_dict())
    assert restored.memory_bytes() == strategy.memory_bytes() > 0
    grads = []
    for s in (strategy, restored):
        model.zero_grad()
        s.observe(model, stream[2].train.batch()).backward()
        s.after_backward(model)
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize("name", ["gpm", "cuber"])
def test_resume_after_sigkill_equals_uninterrupted_run(small_data, tmp_path, name) -> None:
    stream = class_incremental(small_data, 3)
    resumed_and_reference(stream, name, tmp_path, {name: {"samples": 20}})


def forgetting(stream, strategy) -> float:
    model = mlp(stream.input_shape, stream.n_classes, hidden=(100, 100), seed=0)
    return train(stream, model, strategy, OptimConfig(lr=0.05, momentum=0.0, epochs=2), seed=0).metrics["forgetting"]


@pytest.fixture(scope="module")
def permuted(digits_data):
    """Permuted digits, one shared head and no task id at test time."""
    return domain_incremental(digits_data, 4, transform="permutation", seed=1, task_aware=False)


def test_gpm_forgets_far_less_than_fine_tuning_on_permuted_digits(permuted) -> None:
    # measured: naive 0.346, GPM 0.061
    naive, gpm = forgetting(permuted, Naive()), forgetting(permuted, GPM())
    assert naive > 0.25 and gpm < naive - 0.2


def test_gpm_forgets_less_than_fine_tuning_on_task_incremental_digits(digits_data) -> None:
    tasks = task_incremental(digits_data, 5)
    # measured: naive 0.047, GPM -0.003 (the head rows of new classes stay free, the rest is projected)
    naive, gpm = forgetting(tasks, Naive()), forgetting(tasks, GPM())
    assert gpm < 0.01 < naive - 0.03


def test_cuber_forgets_less_than_fine_tuning_on_permuted_digits(permuted) -> None:
    # measured: naive 0.346, CUBER 0.19 (it lets new tasks move in old subspaces they correlate with)
    assert forgetting(permuted, CUBER()) < forgetting(permuted, Naive()) - 0.1
