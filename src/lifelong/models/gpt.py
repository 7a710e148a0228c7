"""A small decoder-only transformer language model (GPT, Radford et al. 2018/2019), and
:func:`causal_lm`, which makes any tokens -> logits module (a Hugging Face ``transformers`` model
built from a config included) one that returns the logits tensor the runner trains on.

The architecture is GPT-2's: learned token and position embeddings; pre-norm blocks, each
``x + attention(LayerNorm(x))`` then ``x + MLP(LayerNorm(x))`` with a GELU MLP; a final LayerNorm; an
output layer tied to the token embedding (Press & Wolf 2017). Attention is
``torch.nn.functional.scaled_dot_product_attention`` with ``is_causal=True`` (fused kernels where the
device has them). ``FlopCounterMode`` counts the CUDA kernels but (torch 2.13) not the CPU one, so
building a :class:`GPT` registers torch's own attention formulas for the CPU kernel too
(:func:`count_cpu_attention`): FLOP budgets see the attention products on every device, counted as
full (not causal) attention as torch counts its GPU kernels.
Initialization follows GPT-2 as nanoGPT reproduces it: every weight normal with std 0.02 (position
embeddings too, where GPT-2's code used 0.01), biases zero, and the projections that write into the
residual stream scaled by ``1 / sqrt(2 * n_layers)`` so that the residual's variance does not grow
with depth.
Packed windows (:mod:`lifelong.data.text`: documents joined with an end-of-document id, cut into
full windows) let attention cross from one document into the next by default, as GPT-2 and most
pre-training runs do. With ``document_end`` set (``dataset.pack_across_documents = false``,
:func:`mask_documents`) attention is block-diagonal and causal: position ``t`` attends to ``s <= t`` only
within its own document, a document being the tokens up to and including an end-of-document id
(:func:`document_mask`; the document-masking of Llama 3's pre-training, Grattafiori et al. 2024). Position
embeddings keep counting from the window's start (not restarted per document), and the end-of-document
position still predicts the next document's first token, from its own document alone.
Weight decay applies to the matrices of the linear layers only: :meth:`GPT.no_weight_decay` names the
biases, the LayerNorm scales and shifts and both embeddings (the token one is also the tied output layer),
as GPT-2's recipe in minGPT does; :func:`lifelong.optim.decay.split_weight_decay` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import ConfigError, DataError
from lifelong.models.seeding import seeded


def count_cpu_attention() -> None:
    """Teach ``FlopCounterMode`` the FLOPs of the CPU attention kernel (forward and backward), with the
    formulas torch uses for its GPU kernels; once per process, before any counter is made."""
    from torch.utils import flop_counter

    aten = torch.ops.aten
    formulas = {aten._scaled_dot_product_flash_attention_for_cpu: flop_counter.sdpa_flop,
                aten._scaled_dot_product_flash_attention_for_cpu_backward: flop_counter.sdpa_backward_flop}
    for target, formula in formulas.items():
        flop_counter.flop_registry.setdefault(target, formula)


def no_decay_names(module: nn.Module) -> set[str]:
    """Names of ``module``'s parameters that take no weight decay in GPT-2's recipe: every bias and
    normalization parameter (1-D: decaying a scale towards 0 only fights the normalization) and every
    embedding (rows of rare tokens would shrink for want of gradient; a tied output layer is one too)."""
    embeddings = {f"{name}.weight" for name, child in module.named_modules() if isinstance(child, nn.Embedding)}
    return embeddings | {name for name, parameter in module.named_parameters() if parameter.ndim < 2}


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position ``t`` attends to positions ``<= t`` only."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        """``mask``: (B, 1, L, L) true where a position may attend (:func:`document_mask`); None: causal."""
        batch, length, width = x.shape
        q, k, v = (t.view(batch, length, self.n_heads, -1).transpose(1, 2)  # (B, H, L, D / H)
                   for t in self.qkv(x).split(width, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=mask is None)
        return self.proj_dropout(self.proj(y.transpose(1, 2).reshape(batch, length, width)))


class Block(nn.Module):
    """One pre-norm transformer block: attention, then a GELU MLP ``mlp_ratio`` times wider."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = round(mlp_ratio * d_model)
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, n_heads, dropout)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), mask)
        return x + self.mlp(self.mlp_norm(x))

    def residual_projections(self) -> tuple[nn.Linear, nn.Linear]:
        """The two layers that write into the residual stream (scaled at initialization)."""
        return self.attention.proj, self.mlp[2]


class GPT(nn.Module):
    """Tokens (B, L) long, ``L <= context`` -> next-token logits (B, L, vocab_size)."""

    def __init__(self, vocab_size: int, context: int, d_model: int = 128, n_layers: int = 4, n_heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, document_end: int | None = None) -> None:
        super().__init__()
        _check(vocab_size, context, d_model, n_layers, n_heads, mlp_ratio, dropout)
        self.context = context
        self.document_end = document_end
        """The end-of-document id attention does not cross (module docstring); None: attention crosses."""
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(context, d_model)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # tied: one (vocab_size, d_model) tensor
        self._initialize(n_layers)
        count_cpu_attention()

    def _initialize(self, n_layers: int) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for projection in block.residual_projections():
                nn.init.normal_(projection.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    def no_weight_decay(self) -> set[str]:
        """:func:`no_decay_names` of the GPT."""
        return no_decay_names(self)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, V)
        length = tokens.shape[-1]
        if length > self.context:
            raise DataError(f"the GPT reads at most {self.context} tokens (its context), got {length}; build it with "
                            "a larger context")
        positions = torch.arange(length, device=tokens.device)
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        mask = None if self.document_end is None else document_mask(tokens, self.document_end)
        for block in self.blocks:
            x = block(x, mask)
        return self.lm_head(self.norm(x))


def document_mask(tokens: torch.Tensor, end: int) -> torch.Tensor:
    """(B, 1, L, L) true where position ``t`` of ``tokens`` (B, L) may attend to ``s``: ``s <= t`` and both in
    one document, a document ending with (and including) the id ``end``. Position ``t``'s document is the
    number of ``end`` ids before it."""
    ends = (tokens == end).long()
    document = ends.cumsum(-1) - ends  # (B, L): ends strictly before each position
    length = tokens.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
    return ((document[:, :, None] == document[:, None, :]) & causal)[:, None]


def mask_documents(model: nn.Module, end: int | None) -> nn.Module:
    """``model`` with attention kept within documents ending with the id ``end``
    (``dataset.pack_across_documents = false``; ``None``: attention crosses them); refused for a model
    that cannot mask attention per document."""
    if not isinstance(model, GPT):
        if end is None:
            return model
        raise ConfigError(f"dataset.pack_across_documents=false keeps attention within each document, and "
                          f"{type(model).__name__} cannot mask it per document; use model.name='gpt' or set "
                          "dataset.pack_across_documents=true")
    model.document_end = end
    return model


def _check(vocab_size: int, context: int, d_model: int, n_layers: int, n_heads: int, mlp_ratio: float,
           dropout: float) -> None:
    if vocab_size < 2:
        raise ConfigError(f"model.name='gpt' needs a text stream (a vocabulary of >= 2 tokens), got vocab_size "
                          f"{vocab_size}; use dataset.name='text' with scenario.name='text_domains'")
    if context < 1:
        raise ConfigError(f"model.context must be >= 1 token, got {context}")
    for field, value in (("d_model", d_model), ("n_layers", n_layers), ("n_heads", n_heads)):
        if value < 1:
            raise ConfigError(f"model.{field} must be >= 1, got {value}")
    if d_model % n_heads:
        raise ConfigError(f"model.d_model ({d_model}) must be a multiple of model.n_heads ({n_heads})")
    if mlp_ratio <= 0:
        raise ConfigError(f"model.mlp_ratio must be > 0, got {mlp_ratio}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1), got {dropout}")


def gpt(input_shape: Sequence[int], n_classes: int, vocab_size: int, d_model: int = 128, n_layers: int = 4,
        n_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0, seed: int | None = None) -> GPT:
    """The ``gpt`` model of a text stream: windows of ``input_shape = (context + 1,)`` tokens, of which it
    reads ``context``; ``vocab_size`` is the stream's (the runner passes it); ``n_classes`` (the number
    of domains) does not shape a language model. ``seed``: as for :func:`~lifelong.models.nets.mlp`."""
    if len(input_shape) != 1:
        raise ConfigError(f"model.name='gpt' needs token windows (context + 1,), got inputs of shape "
                          f"{tuple(input_shape)}; use dataset.name='text'")
    with seeded(seed):
        return GPT(vocab_size, input_shape[0] - 1, d_model, n_layers, n_heads, mlp_ratio, dropout)


class CausalLM(nn.Module):
    """``module(tokens)``'s logits tensor, whether it returns the tensor or an object with ``.logits``
    (a Hugging Face ``transformers`` causal LM's output)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, V)
        output: Any = self.module(tokens)
        logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
            raise DataError(f"a causal LM must map tokens (B, L) to logits (B, L, vocab) or to an output with .logits, "
                            f"{type(self.module).__name__} returned {type(output).__name__}")
        return logits


def causal_lm(module: nn.Module) -> CausalLM:
    """Any module that maps tokens to logits, e.g. ``transformers.GPT2LMHeadModel(GPT2Config(...))`` built
    from a config (nothing downloaded), as a module the runner trains: it returns the logits tensor."""
    if not isinstance(module, nn.Module):
        raise ConfigError(f"causal_lm needs a torch.nn.Module, got {type(module).__name__}")
    return CausalLM(module)
