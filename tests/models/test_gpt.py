"""The small GPT: shapes, causality, weight tying, GPT-2 initialization, counted attention FLOPs, and a
few optimizer steps on generated text that lower the next-token loss; ``causal_lm`` on Hugging Face
and plain modules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lifelong.data.corpora import TextDomain
from lifelong.data.text import text_stream
from lifelong.errors import ConfigError, DataError
from lifelong.models import GPT, causal_lm, gpt


def tiny(seed: int = 0, n_heads: int = 4) -> GPT:
    """Windows of 17 tokens (a context of 16) over 50 token ids."""
    return gpt((17,), 1, 50, d_model=32, n_layers=2, n_heads=n_heads, seed=seed)


def test_logits_have_one_row_per_position_and_the_context_is_enforced() -> None:
    model = tiny()
    assert model(torch.randint(0, 50, (3, 16))).shape == (3, 16, 50)
    assert model(torch.randint(0, 50, (3, 5))).shape == (3, 5, 50)
    with pytest.raises(DataError, match="at most 16 tokens"):
        model(torch.randint(0, 50, (1, 17)))


def test_changing_a_token_changes_no_logit_before_it() -> None:
    model = tiny().eval()
    tokens = torch.randint(0, 50, (2, 16))
    changed = tokens.clone()
    changed[:, 9] = (tokens[:, 9] + 1) % 50
    before, after = model(tokens), model(changed)
    assert torch.equal(before[:, :9], after[:, :9])
    assert (before[:, 9:] - after[:, 9:]).abs().amax(-1).min() > 0


def test_output_layer_is_the_token_embedding() -> None:
    model = tiny()
    assert model.lm_head.weight is model.token_embedding.weight
    assert len([p for p in model.parameters() if p.shape == (50, 32)]) == 1
    with torch.no_grad():
        model.token_embedding.weight[7] = 0.0
    assert bool((model(torch.zeros(1, 4, dtype=torch.long))[..., 7] == 0).all())


def test_initialization_follows_gpt2() -> None:
    model = gpt((65,), 1, 300, d_model=256, n_layers=8, n_heads=8, seed=0)
    block = model.blocks[0].requires_grad_(False)
    assert abs(float(block.attention.qkv.weight.std()) - 0.02) < 0.001
    assert abs(float(block.attention.proj.weight.std()) - 0.02 / math.sqrt(16)) < 0.0003
    assert abs(float(block.mlp[2].weight.std()) - 0.02 / math.sqrt(16)) < 0.0003
    assert float(block.attention.qkv.bias.abs().max()) == 0.0
    assert torch.equal(tiny(seed=3).blocks[1].mlp[0].weight, tiny(seed=3).blocks[1].mlp[0].weight)


def test_attention_flops_are_counted() -> None:
    """Each layer's attention is two (B*H, L, L) x (L, D/H) products: 2 * 2 * B * H * L * L * (D/H) FLOPs."""
    model, tokens = tiny(), torch.randint(0, 50, (3, 16))
    with FlopCounterMode(display=False) as counter:
        model(tokens)
    attention = {str(op): n for op, n in counter.get_flop_counts()["Global"].items() if "attention" in str(op)}
    assert sum(attention.values()) == 2 * (2 * 2 * 3 * 4 * 16 * 16 * 8)


def test_bad_sizes_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"model.d_model \(32\) must be a multiple of model.n_heads \(3\)"):
        tiny(n_heads=3)
    with pytest.raises(ConfigError, match="needs token windows"):
        gpt((1, 8, 8), 10, 257)
    with pytest.raises(ConfigError, match="needs a text stream"):
        gpt((17,), 10, 0)


def test_a_few_steps_on_generated_text_lower_the_loss() -> None:
    words = "the quick brown fox jumps over the lazy dog".split()
    documents = tuple(" ".join(words[(i + j) % 9] for j in range(12)) + f" {i}" for i in range(40))
    stream = text_stream([TextDomain("fox", documents)], context=32, train_tokens=1024)
    x = stream[0].train.x  # (32, 33)
    model = gpt(stream.input_shape, stream.n_classes, stream.vocab_size, d_model=32, n_layers=2, n_heads=4, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return F.cross_entropy(model(x[:, :-1]).reshape(-1, stream.vocab_size), x[:, 1:].reshape(-1))

    first = loss().item()
    assert abs(first - math.log(257)) < 0.3  # near uniform over the bytes at initialization
    for _ in range(40):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert loss().item() < first - 2.0


class Plain(nn.Module):
    def __init__(self, output: str = "tensor") -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 10)
        self.output = output

    def forward(self, tokens: torch.Tensor) -> object:
        logits = self.embedding(tokens)
        return logits if self.output == "tensor" else (logits,)


def test_causal_lm_returns_logits_of_plain_modules_and_refuses_others() -> None:
    tokens = torch.randint(0, 10, (2, 5))
    assert causal_lm(Plain())(tokens).shape == (2, 5, 10)
    with pytest.raises(DataError, match="Plain returned tuple"):
        causal_lm(Plain("tuple"))(tokens)


def test_causal_lm_wraps_a_hugging_face_model_built_from_a_config() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=257, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    model = causal_lm(transformers.GPT2LMHeadModel(config))
    logits = model(torch.randint(0, 257, (2, 8)))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 8, 257)


def test_weight_decay_exempts_biases_norms_and_the_tied_embeddings_only() -> None:
    """Issue 25: one group decayed LayerNorm, biases and the tied embedding. The GPT names them, and only
    the linear layers' matrices are left to decay."""
    model = tiny()
    exempt = model.no_weight_decay()
    assert {"token_embedding.weight", "position_embedding.weight", "norm.weight", "norm.bias",
            "blocks.0.attention_norm.weight", "blocks.1.mlp_norm.bias", "blocks.0.attention.qkv.bias",
            "blocks.1.mlp.2.bias"} <= exempt
    decayed = {name for name, _ in model.named_parameters()} - exempt
    assert decayed == {f"blocks.{i}.{layer}.weight" for i in range(2)
                       for layer in ("attention.qkv", "attention.proj", "mlp.0", "mlp.2")}
    assert model.get_parameter("token_embedding.weight") is model.lm_head.weight  # the tied output layer
