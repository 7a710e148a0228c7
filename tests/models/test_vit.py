import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import ConfigError
from lifelong.models import MODELS, VisionTransformer, vit
from lifelong.models.vit import Attention, Prefix


@pytest.mark.parametrize("shape,patch,patches", [((1, 8, 8), 2, 16), ((1, 28, 28), 4, 49), ((3, 32, 32), 4, 64)])
def test_shapes_of_outputs_features_and_tokens(shape, patch, patches) -> None:
    torch.manual_seed(0)
    model = MODELS["vit"](shape, 10, dim=16, depth=2, heads=2, patch=patch)
    x = torch.randn(3, *shape)
    assert model(x).shape == (3, 10)
    assert isinstance(model.backbone, VisionTransformer) and model.feature_dim == 16
    assert model.backbone(x).shape == (3, 16)
    assert model.backbone.tokens(x).shape == (3, 1 + patches, 16)
    assert model.backbone.tokens(x, prompts=torch.zeros(3, 5, 16)).shape == (3, 1 + 5 + patches, 16)


def test_default_size_and_the_linear_layers_lora_needs() -> None:
    model = vit((1, 28, 28), 10)
    backbone = model.backbone
    assert (backbone.dim, backbone.depth, len(backbone.blocks)) == (64, 4, 4)
    # per block: qkv 64*192+192, proj 64*64+64, fc1 64*128+128, fc2 128*64+64, two LayerNorms 4*64
    per_block = 64 * 192 + 192 + 64 * 64 + 64 + 64 * 128 + 128 + 128 * 64 + 64 + 4 * 64
    embedding = 16 * 64 + 64 + 64 + 50 * 64  # 4x4 patch conv, class token, 1 + 49 positions
    assert sum(p.numel() for p in backbone.parameters()) == 4 * per_block + embedding + 2 * 64
    linear = {name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    assert linear == {"qkv", "proj", "fc1", "fc2"}


def test_empty_prompts_and_empty_prefixes_change_nothing_and_real_ones_do() -> None:
    torch.manual_seed(0)
    backbone = vit((1, 8, 8), 4, dim=16, depth=3, heads=4, patch=2).backbone
    x = torch.randn(2, 1, 8, 8)
    plain = backbone(x)
    empty = Prefix(torch.zeros(2, 0, 16), torch.zeros(2, 0, 16))
    assert torch.allclose(backbone(x, prefixes={0: empty, 2: empty}), plain, atol=1e-6)
    assert torch.allclose(backbone(x, prompts=torch.zeros(2, 0, 16)), plain, atol=1e-6)
    one = Prefix(torch.randn(2, 1, 16), torch.randn(2, 1, 16))
    assert not torch.allclose(backbone(x, prefixes={1: one}), plain, atol=1e-3)
    assert not torch.allclose(backbone(x, prompts=torch.randn(2, 1, 16)), plain, atol=1e-3)


def test_prefix_keys_and_values_join_the_attention() -> None:
    """One head: softmax(q [pk; k]^T / sqrt(d)) [pv; v], projected, by hand."""
    torch.manual_seed(0)
    attention = Attention(dim=4, heads=1)
    x, pk, pv = torch.randn(1, 3, 4), torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    q, k, v = attention.qkv(x).split(4, dim=-1)
    scores = q @ torch.cat([pk, k], dim=1).transpose(1, 2) / math.sqrt(4)  # (1, 3, 5)
    expected = attention.proj(F.softmax(scores, dim=-1) @ torch.cat([pv, v], dim=1))
    assert torch.allclose(attention(x, Prefix(pk, pv)), expected, atol=1e-5)


def test_prompts_sit_between_the_class_token_and_the_patches() -> None:
    """With no blocks, the tokens are the embeddings: the prompts follow the class token unchanged
    (no position embedding), then the patches."""
    torch.manual_seed(0)
    backbone = vit((1, 4, 4), 2, dim=8, depth=1, heads=2, patch=2).backbone
    backbone.blocks = nn.ModuleList()
    backbone.norm = nn.Identity()
    x, prompts = torch.randn(1, 1, 4, 4), torch.randn(1, 3, 8)
    tokens = backbone.tokens(x, prompts=prompts)
    plain = backbone.tokens(x)
    assert torch.equal(tokens[:, 1:4], prompts)
    assert torch.equal(tokens[:, [0, 4, 5, 6, 7]], plain)


@pytest.mark.parametrize("shape,settings,field", [((64,), {}, "image inputs"), ((1, 8, 8), {"patch": 3}, "model.patch"),
                                                  ((1, 8, 8), {"dim": 10, "heads": 4}, "model.dim"),
                                                  ((1, 8, 8), {"depth": 0}, "model.dim, depth")])
def test_bad_settings_are_one_line_naming_the_field(shape, settings, field) -> None:
    with pytest.raises(ConfigError, match=field) as error:
        vit(shape, 10, **settings)
    assert "\n" not in str(error.value)
