"""SGDP and AdamP (Heo et al. 2021): the projection by hand, the weight decay ratio, and the slower norm
growth of scale-invariant weights that is the point of the method."""

import pytest
import torch
from torch import nn

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.errors import ConfigError
from lifelong.optim.projected import SGDP, AdamP, tangent_update
from lifelong.optim.registry import build_optimizer
from lifelong.strategies import Naive
from tests.runner.test_checkpoint_resume import resumed_and_reference


def test_the_update_of_a_weight_orthogonal_to_its_gradient_loses_its_radial_part_by_hand() -> None:
    weight = torch.tensor([[3.0, 4.0]])  # its unit row is [0.6, 0.8]
    grad = torch.tensor([[-4.0, 3.1]])  # cos = 0.4 / (5 * 5.06) = 0.016 < 0.1 / sqrt(2): scale-invariant
    update, projected = tangent_update(weight, grad, torch.tensor([[1.0, 2.0]]), delta=0.1, eps=1e-8)
    # [1, 2] - (0.6 + 1.6) [0.6, 0.8] = [-0.32, 0.24], orthogonal to the weight
    assert projected and torch.allclose(update, torch.tensor([[-0.32, 0.24]]), atol=1e-6)
    aligned, projected = tangent_update(weight, torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 2.0]]), 0.1, 1e-8)
    assert not projected and torch.equal(aligned, torch.tensor([[1.0, 2.0]]))
    bias, projected = tangent_update(torch.tensor([3.0, 4.0]), torch.tensor([-4.0, 3.0]), torch.ones(2), 0.1, 1e-8)
    assert not projected and torch.equal(bias, torch.ones(2))  # one dimension: never projected


def test_each_output_channel_is_projected_on_its_own_row() -> None:
    weight = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    grad = torch.tensor([[-4.0, 3.0], [0.0, 2.0]])  # each row orthogonal to its weight row
    update, projected = tangent_update(weight, grad, torch.tensor([[1.0, 2.0], [5.0, 7.0]]), 0.1, 1e-8)
    assert projected and torch.allclose(update, torch.tensor([[-0.32, 0.24], [0.0, 7.0]]), atol=1e-6)


def test_sgdp_step_and_its_decoupled_weight_decay_by_hand() -> None:
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]]))
    weight.grad = torch.tensor([[-4.0, 3.1]])
    SGDP([weight], lr=0.1, momentum=0.5, weight_decay=0.2, wd_ratio=0.1).step()
    # velocity = g; projected g: g - (g . w_hat) w_hat, g . w_hat = -2.4 + 2.48 = 0.08
    direction = torch.tensor([[-4.0 - 0.08 * 0.6, 3.1 - 0.08 * 0.8]])
    decayed = torch.tensor([[3.0, 4.0]]) * (1 - 0.1 * 0.2 * 0.1 / (1 - 0.5))  # wd_ratio on a projected weight
    assert torch.allclose(weight, decayed - 0.1 * direction, atol=1e-6)


def test_adamp_first_step_is_adams_sign_step_projected() -> None:
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]]))
    weight.grad = torch.tensor([[-4.0, 3.1]])
    AdamP([weight], lr=0.01, eps=1e-12).step()
    # step 1: m_hat / sqrt(v_hat) = sign(g) = [-1, 1]; projected: [-1, 1] - 0.2 [0.6, 0.8]
    assert torch.allclose(weight, torch.tensor([[3.0, 4.0]]) - 0.01 * torch.tensor([[-1.12, 0.84]]), atol=1e-6)


def test_a_normalized_layer_keeps_its_norm_under_sgdp_and_grows_under_sgd() -> None:
    """A linear layer followed by BatchNorm is scale-invariant: SGD's momentum grows its weight norm,
    SGDP's tangent updates leave it to second order (the paper's Figure 1)."""
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    growth = {}
    for name in ("sgd", "sgdp"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
        optimizer = build_optimizer(name, model.parameters(), lr=0.5, momentum=0.9)
        start = model[0].weight.norm().item()
        for _ in range(50):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        growth[name] = model[0].weight.norm().item() / start
    assert growth["sgd"] > 1.1 and growth["sgdp"] < 1 + (growth["sgd"] - 1) / 2


def test_both_train_a_run_on_digits_and_refuse_bad_settings_in_one_line(digits_data) -> None:
    stream = class_incremental(digits_data, 5)
    matrices = {}
    for name, lr in (("sgd", 0.03), ("sgdp", 0.03), ("adamp", 0.001)):
        torch.manual_seed(0)
        matrices[name] = train(stream, mlp(stream.input_shape, stream.n_classes), Naive(),
                               OptimConfig(name=name, lr=lr, momentum=0.9, batch_size=16, epochs=1), seed=0).matrix
    # the MLP has no normalization, so no weight is scale-invariant: SGDP takes SGD's steps exactly
    assert (matrices["sgdp"] == matrices["sgd"]).all()
    assert all(matrices["adamp"][i, i] > 0.9 for i in range(5))  # every experience learned
    with pytest.raises(ConfigError, match="wd_ratio"):
        build_optimizer("sgdp", [nn.Parameter(torch.ones(2, 2))], lr=0.1, options={"wd_ratio": 2.0})


@pytest.mark.parametrize("name", ["sgdp", "adamp"])
def test_a_run_killed_with_sigkill_resumes_bit_for_bit(small_data, tmp_path, name) -> None:
    """On an MLP with BatchNorm, where the projection fires, the optimizers' state (momentum, moments and
    Adam's step count) comes back from the checkpoint exactly."""
    optim = OptimConfig(name=name, lr=0.05 if name == "sgdp" else 0.01, momentum=0.9, weight_decay=0.01, epochs=2,
                        batch_size=16, reset_per_experience=False)
    resumed_and_reference(class_incremental(small_data, 3), "naive", tmp_path, {"naive": {}}, optim=optim,
                          model_for=lambda stream: mlp(stream.input_shape, stream.n_classes, hidden=(16,), norm="batch"))
