"""A small Vision Transformer (Dosovitskiy et al., ICLR 2021, "An Image is Worth 16x16 Words") for the
28x28 and 32x32 images of continual-learning benchmarks, and 8x8 digits in tests.

Patches are embedded by a convolution whose stride is its kernel, a class token is prepended, learned
position embeddings are added, then pre-norm blocks (``x + attn(norm(x))``, ``x + mlp(norm(x))``) and a
final LayerNorm; the features are the class token's output. Attention projections and the MLP are
``nn.Linear`` modules (``qkv``, ``proj``, ``fc1``, ``fc2``), so LoRA and adapters on linear layers apply.

Prompt methods reach inside the backbone through two keyword arguments of :meth:`PromptableBackbone.forward`
(and :meth:`PromptableBackbone.tokens`), never by patching modules:

* ``prompts`` (B, P, D): tokens inserted after the class token at the input of the blocks (prompt
  tuning, L2P). They carry no position embedding.
* ``prefixes`` ``{block: Prefix(key, value)}`` with key and value (B, L, D): prefix tuning (Li & Liang
  2021; DualPrompt, CODA-Prompt): the block's attention attends to ``L`` extra keys and values, while
  the sequence keeps its length.

Called without either, the backbone is the plain network: the query function of the prompt methods.
Departure from the paper's ViT: no dropout (continual-learning prompt methods freeze the backbone, and
small data rarely needs it), and position embeddings are learned for one image size only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import ConfigError
from lifelong.models.classifier import Classifier
from lifelong.models.seeding import seeded


class Prefix(NamedTuple):
    """Extra keys and values (B, L, D) one attention layer attends to (prefix tuning)."""

    key: torch.Tensor
    value: torch.Tensor


class Attention(nn.Module):
    """Multi-head self-attention with optional prefix keys and values."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, prefix: Prefix | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if prefix is not None:  # (B, L, D) -> (B, H, L, D / H), before the sequence's own keys
            k = torch.cat([self._split(prefix.key.to(k.dtype)), k], dim=2)
            v = torch.cat([self._split(prefix.value.to(v.dtype)), v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D / H)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        batch, length, dim = t.shape
        return t.reshape(batch, length, self.heads, dim // self.heads).transpose(1, 2)


class Block(nn.Module):
    """Pre-norm transformer block: attention, then a GELU MLP, each added to its input."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, prefix: Prefix | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), prefix)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class PromptableBackbone(nn.Module):
    """A transformer backbone the prompt methods (L2P, DualPrompt, CODA-Prompt) can prompt: tokens ``dim``
    wide, ``depth`` blocks, and :meth:`tokens` taking ``prompts`` and ``prefixes``. The library's
    :class:`VisionTransformer` is one, and so is a Hugging Face ViT (:class:`lifelong.models.hf.HFImageBackbone`),
    which says through :meth:`prompt_refusal` when its attention is out of the prompts' reach."""

    dim: int
    depth: int

    def tokens(self, x: torch.Tensor, prompts: torch.Tensor | None = None,
               prefixes: Mapping[int, Prefix] | None = None) -> torch.Tensor:
        """The output sequence (B, 1 + P + N, D): class token, the ``prompts`` (B, P, D) if given, then the
        N patches; ``prefixes`` maps a block index to the keys and values it adds."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, prompts: torch.Tensor | None = None,
                prefixes: Mapping[int, Prefix] | None = None) -> torch.Tensor:
        """The class token's features (B, D); without prompts or prefixes, the plain backbone's."""
        return self.tokens(x, prompts, prefixes)[:, 0]

    def prompt_refusal(self) -> str:
        """Why prompts and prefixes cannot reach this backbone's attention, as a clause ("its attention ...");
        empty when they can."""
        return ""


class VisionTransformer(PromptableBackbone):
    """Patch embedding, class token, position embeddings, ``depth`` pre-norm blocks, final LayerNorm."""

    def __init__(self, input_shape: Sequence[int], dim: int, depth: int, heads: int, patch: int,
                 mlp_ratio: float) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.dim, self.depth = dim, depth
        self.patch_embed = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (height // patch) * (width // patch), dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def tokens(self, x: torch.Tensor, prompts: torch.Tensor | None = None,
               prefixes: Mapping[int, Prefix] | None = None) -> torch.Tensor:
        """The normalised output sequence (B, 1 + P + N, D) (:meth:`PromptableBackbone.tokens`)."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), patches], dim=1) + self.pos_embed
        if prompts is not None:
            tokens = torch.cat([tokens[:, :1], prompts.to(tokens.dtype), tokens[:, 1:]], dim=1)
        prefixes = prefixes or {}
        for index, block in enumerate(self.blocks):
            tokens = block(tokens, prefixes.get(index))
        return self.norm(tokens)


def vit(input_shape: Sequence[int], n_classes: int, dim: int = 64, depth: int = 4, heads: int = 4, patch: int = 4,
        mlp_ratio: float = 2.0, seed: int | None = None) -> Classifier:
    """A :class:`VisionTransformer` backbone of width ``dim`` and ``depth`` blocks of ``heads`` heads on
    ``patch`` x ``patch`` patches, MLP width ``mlp_ratio * dim``, and a linear head on the class token.

    The defaults (about 0.14 M parameters, 50 tokens on 28x28) train an epoch of MNIST in a few minutes
    on two CPU cores; ``patch`` 2 suits 8x8 digits. ``seed``: as for :func:`~lifelong.models.nets.mlp`.
    """
    if len(input_shape) != 3:
        raise ConfigError(f"model.name='vit' needs image inputs (C, H, W), got shape {tuple(input_shape)}; "
                          "use model.name='mlp' for vectors (model.name='gpt' for a text stream's token windows)")
    if min(dim, depth, heads, patch) < 1 or mlp_ratio <= 0:
        raise ConfigError(f"model.dim, depth, heads, patch and mlp_ratio must be positive, got dim={dim}, "
                          f"depth={depth}, heads={heads}, patch={patch}, mlp_ratio={mlp_ratio}")
    if dim % heads:
        raise ConfigError(f"model.dim ({dim}) must be a multiple of model.heads ({heads})")
    if input_shape[1] % patch or input_shape[2] % patch:
        raise ConfigError(f"model.patch ({patch}) must divide the image size {tuple(input_shape[1:])}")
    with seeded(seed):
        return Classifier(VisionTransformer(input_shape, dim, depth, heads, patch, mlp_ratio), dim, n_classes)
