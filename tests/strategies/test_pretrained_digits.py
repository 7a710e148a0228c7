"""End-to-end: parameter-efficient methods on class-incremental digits (classes 0-3, 4-6, 7-9) from an MLP
backbone pretrained here on the first experience's classes, against full fine-tuning (naive) from the same
backbone. One seed; a 3-seed table belongs to ``benchmarks/pretrained.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.strategies import LAE, Adapter, LoRA, Naive, RanPAC

OPTIM = OptimConfig(name="adam", lr=0.003, epochs=5, batch_size=8)
HIDDEN = (64, 64)
METHODS = {"naive": Naive, "lora": lambda: LoRA(rank=8, alpha=8.0), "adapter": lambda: Adapter(rank=8, alpha=8.0),
           "lae": lambda: LAE(rank=8, alpha=8.0), "ranpac": lambda: RanPAC(adapt_experiences=0, projection_dim=1024)}


@pytest.fixture(scope="module")
def results(digits_data) -> dict[str, tuple[float, float, list[float]]]:
    """Final accuracy, forgetting and the accuracy matrix's diagonal of each method."""
    stream = class_incremental(digits_data, 3)
    source = mlp(stream.input_shape, stream.n_classes, hidden=HIDDEN, seed=0)
    optimizer = torch.optim.Adam(source.parameters(), lr=1e-3)
    for _ in range(50):  # pretraining: full-batch Adam on the first experience (digits 0-3)
        optimizer.zero_grad()
        F.cross_entropy(source(stream[0].train.x), stream[0].train.y).backward()
        optimizer.step()
    measured = {}
    for name, make in METHODS.items():
        model = mlp(stream.input_shape, stream.n_classes, hidden=HIDDEN, seed=1)  # a fresh head
        model.backbone.load_state_dict(source.backbone.state_dict())
        result = train(stream, model, make(), OPTIM, seed=0)
        measured[name] = (result.metrics["final_accuracy"], result.metrics["forgetting"],
                          result.matrix.diagonal().tolist())
    print({name: (round(final, 3), round(forgetting, 3), [round(a, 2) for a in diagonal])
           for name, (final, forgetting, diagonal) in measured.items()})
    return measured


def test_every_method_learns_its_first_experience_and_the_tuned_ones_learn_every_one(results) -> None:
    for name, (_, _, diagonal) in results.items():  # 4 classes among 10: chance 0.25 at best
        assert diagonal[0] > 0.9, name
    for name in ("naive", "lora", "adapter", "ranpac"):  # 3 classes each later: chance 0.33 at best
        assert min(diagonal := results[name][2]) > 0.8, (name, diagonal)


def test_ranpac_and_lae_forget_far_less_than_full_fine_tuning(results) -> None:
    naive_final, naive_forgetting, _ = results["naive"]
    assert naive_forgetting > 0.9  # full fine-tuning loses every earlier experience
    ranpac_final, ranpac_forgetting, _ = results["ranpac"]
    assert ranpac_final > 0.9 and ranpac_forgetting < 0.1
    lae_final, lae_forgetting, _ = results["lae"]
    assert lae_forgetting < naive_forgetting - 0.5 and lae_final > naive_final
