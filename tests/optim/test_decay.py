"""Weight decay split by what the model exempts (issue 25): a GPT's biases, LayerNorm parameters and tied
embeddings go to a group without decay; a model that declares nothing keeps its groups untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lifelong.models import gpt, mlp
from lifelong.optim.decay import SOURCE_GROUP, split_weight_decay
from lifelong.optim.registry import build_optimizer


def tiny_gpt() -> nn.Module:
    return gpt((9,), 1, 20, d_model=16, n_layers=1, n_heads=2, seed=0)


def test_each_group_is_split_into_decayed_and_exempt_parameters() -> None:
    model = tiny_gpt()
    params = dict(model.named_parameters())
    first = [params["token_embedding.weight"], params["blocks.0.mlp.0.weight"], params["blocks.0.mlp.0.bias"]]
    rest = [p for p in model.parameters() if all(p is not q for q in first)]
    groups = split_weight_decay([{"params": first, "lr_scale": 0.5}, {"params": rest}], model)
    assert [(len(g["params"]), g.get("weight_decay"), g.get("lr_scale"), g[SOURCE_GROUP]) for g in groups] == [
        (1, None, 0.5, 0), (2, 0.0, 0.5, 0), (3, None, None, 1), (len(rest) - 3, 0.0, None, 1)]
    assert groups[0]["params"][0] is params["blocks.0.mlp.0.weight"]


def test_a_model_that_declares_nothing_keeps_its_groups() -> None:
    model = mlp((8,), 3, hidden=(16,), norm="batch", seed=0)
    groups = [{"params": list(model.parameters()), "lr_scale": 2.0}]
    assert split_weight_decay(groups, model) == groups
    assert len(build_optimizer("adamw", model.parameters(), lr=0.1, weight_decay=0.1, model=model).param_groups) == 1


def test_a_group_with_its_own_weight_decay_is_kept_whole() -> None:
    model = tiny_gpt()
    own = {"params": list(model.parameters()), "weight_decay": 0.3}
    assert split_weight_decay([own], model) == [own]


def test_decoupled_decay_shrinks_the_matrices_and_leaves_norms_and_embeddings() -> None:
    """End to end through build_optimizer: AdamW with zero gradients moves a weight only by its decay,
    ``w <- w * (1 - lr * weight_decay)``, so the exempt parameters stay exactly where they are."""
    model = tiny_gpt()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = build_optimizer("adamw", model.parameters(), lr=0.5, weight_decay=0.2, model=model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    exempt = model.no_weight_decay()
    for name, p in model.named_parameters():
        expected = before[name] if name in exempt else before[name] * 0.9
        assert torch.allclose(p, expected), name
    assert {name for name in before if name not in exempt} == {
        "blocks.0.attention.qkv.weight", "blocks.0.attention.proj.weight", "blocks.0.mlp.0.weight",
        "blocks.0.mlp.2.weight"}


@pytest.mark.parametrize("wrap", [lambda m: nn.Sequential(m), lambda m: m])
def test_a_wrapped_model_is_split_by_its_declaring_module(wrap) -> None:
    model = tiny_gpt()
    groups = split_weight_decay([{"params": list(model.parameters())}], wrap(model))
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0
