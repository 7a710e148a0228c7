"""Hugging Face ``transformers`` models read from a local folder (``model.name = "hf"``, ``model.path``), and
:func:`save_pretrained`, which writes a trained one back as a folder ``from_pretrained`` reads.

The folder is one that ``save_pretrained`` wrote or a snapshot of the hub cache
(``~/.cache/huggingface/hub/models--ORG--NAME/snapshots/HASH``), read with ``local_files_only=True``:
nothing is ever downloaded. ``transformers`` is an optional dependency (``pip install 'lifelong[hf]'``),
imported only when such a model is built or saved, so ``import lifelong`` and the other models never load it.
The stream decides what the folder must hold:

* Images: an image classifier (``AutoModelForImageClassification``: ViT, DeiT, BEiT, ConvNeXt, ...),
  split as every built-in model is (:class:`HFClassifier`): the ``backbone`` is its base model, whose
  features are what its own classifier reads (the pooled output where the base model has a pooler, else
  the class token of the last hidden state), and the ``head`` its linear classifier, kept when its labels
  number the stream's classes and otherwise replaced by a new ``nn.Linear`` drawn from the run's seed. The
  frozen-feature methods (NCM, RanPAC, SLCA, FeTrIL), LoRA and adapters on its linear layers, and
  ``model.freeze`` work on it as on the library's ViT.
* A text stream: a causal language model (``AutoModelForCausalLM``: GPT-2, Llama, ...) mapping token
  windows to next-token logits (:class:`HFCausalLM`), read with the tokenizer saved beside it (the text
  dataset's ``tokenizer`` defaults to ``model.path``; :class:`lifelong.data.tokenizers.HFTokenizer`).

The prompt methods (L2P, DualPrompt, CODA-Prompt) reach a Hugging Face ViT's attention through
transformers' own extension points, never by rewriting its modules: prompts are inserted after the class
token by a forward hook on the base model's ``embeddings``, and a block's prefix keys and values are put
before its own by an attention function registered with ``transformers.AttentionInterface``
(:data:`ATTENTION`), which then calls transformers' SDPA attention. Both act only while a prompted forward
runs (a context variable holds its prompts); otherwise the model is the plain one. Whether they reach the
model is tested once, by a forward with a prompt and a prefix on every block
(:meth:`HFImageBackbone.prompt_refusal`): a model whose attention does not go through that interface, or
that has no transformer blocks (ConvNeXt), is refused by the prompt methods in one line saying why.

Departures from loading the model as transformers does: the weights are float32 whatever the folder's dtype
(``optim.precision = "bf16"`` autocasts, as for every model); the attention is SDPA whatever the folder's
configuration names (eager and SDPA compute the same attention); a language model's logits are cut to the
tokenizer's vocabulary (embedding rows padded beyond it predict ids no window holds); the image processor
is not applied: inputs are the stream's tensors, normalised by ``[augment] mean/std``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import ConfigError, MissingFileError
from lifelong.models.gpt import no_decay_names
from lifelong.models.modes import eval_mode
from lifelong.models.seeding import seeded
from lifelong.models.vit import Prefix, PromptableBackbone

ATTENTION = "lifelong_prefix"
"""The name under which :func:`prefixed_attention` is registered with ``transformers.AttentionInterface``."""

SNAPSHOTS = "~/.cache/huggingface/hub/models--ORG--NAME/snapshots/HASH"
"""Where the hub cache keeps a model's folders, for error messages."""


def transformers_module() -> Any:
    """``transformers``, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise ConfigError("model.name='hf' needs Hugging Face transformers: pip install 'lifelong[hf]'") from None
    return transformers


@contextlib.contextmanager
def quiet(transformers: Any) -> Iterator[None]:
    """transformers' load reports and progress bars off for the block, then as they were."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def model_folder(path: str, field: str = "model.path") -> Path:
    """``path`` as a local model folder (one holding ``config.json``), or a one-line error naming ``field``."""
    if not path:
        raise ConfigError(f"{field}: model.name='hf' loads a Hugging Face model from a local folder; give its path "
                          f"(a folder written by save_pretrained, or a hub-cache snapshot {SNAPSHOTS})")
    folder = Path(path)
    if not folder.is_dir():
        raise MissingFileError(f"{field}: no folder {path!r}; nothing is downloaded: give a folder written by "
                               f"save_pretrained or a hub-cache snapshot ({SNAPSHOTS})")
    if not (folder / "config.json").is_file():
        snapshots = sorted(str(p) for p in (folder / "snapshots").glob("*") if (p / "config.json").is_file())
        hint = f"one of its snapshots, e.g. {snapshots[0]!r}" if snapshots else "a folder written by save_pretrained"
        raise MissingFileError(f"{field}: {path!r} holds no config.json; give {hint}")
    return folder


def _load(auto: str, folder: Path, needs: str) -> Any:
    """The model in ``folder`` through ``transformers.<auto>``, in float32 and in eval mode; ``needs`` says
    what the stream needs when the folder holds another kind of model."""
    transformers = transformers_module()
    with quiet(transformers):
        try:
            model = getattr(transformers, auto).from_pretrained(str(folder), local_files_only=True)
        except ValueError as error:
            if "Unrecognized configuration class" not in str(error):
                raise ConfigError(f"model.path: cannot load the model in {str(folder)!r}: "
                                  f"{str(error).splitlines()[0]}") from None
            kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
            raise ConfigError(f"model.path: {str(folder)!r} holds a {kind!r} model, which {auto} does not load; "
                              f"{needs}") from None
        except OSError as error:
            raise ConfigError(f"model.path: cannot read the model in {str(folder)!r}: "
                              f"{str(error).splitlines()[0]}") from None
    return model.float()


@dataclass
class _Prompting:
    """What a prompted forward of one backbone adds: its embeddings module (by ``id``), the block index of
    every module inside a block (by ``id``), the prompts (B, P, D) and prefixes; ``used`` collects the
    blocks whose attention took their prefix."""

    embeddings: int
    blocks: Mapping[int, int]
    prompts: torch.Tensor | None
    prefixes: Mapping[int, Prefix]
    used: set[int] = field(default_factory=set)


_PROMPTING: contextvars.ContextVar[_Prompting | None] = contextvars.ContextVar("lifelong_hf_prompting", default=None)
"""The prompted forward running now in this context, if any."""


def _heads(tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Prefix tokens (B, L, D) split into the heads of ``like`` (B, H, N, D / H): (B, H, L, D / H)."""
    batch, length, _ = tokens.shape
    return tokens.to(like.dtype).reshape(batch, length, like.shape[1], like.shape[3]).transpose(1, 2)


def prefixed_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, **kwargs: Any) -> Any:
    """transformers' SDPA attention, with the prefix of ``module``'s block (if a prompted forward gives one)
    before the block's own keys and values (B, H, N, D / H), as the library's ViT puts it; a mask is
    widened to let every query see the prefix."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prompting = _PROMPTING.get()
    block = prompting.blocks.get(id(module)) if prompting is not None else None
    prefix = prompting.prefixes.get(block) if prompting is not None and block is not None else None
    if prompting is not None and block is not None and prefix is not None:
        key = torch.cat([_heads(prefix.key, key), key], dim=2)
        value = torch.cat([_heads(prefix.value, value), value], dim=2)
        if attention_mask is not None:
            attention_mask = F.pad(attention_mask, (prefix.key.shape[1], 0),
                                   value=True if attention_mask.dtype == torch.bool else 0.0)
        prompting.used.add(block)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _insert_prompts(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
    """Forward hook of a base model's embeddings: the prompts after the class token, while a prompted forward
    of this module's backbone runs (a module-level function, so that a copy of the model keeps it)."""
    prompting = _PROMPTING.get()
    if prompting is None or prompting.prompts is None or prompting.embeddings != id(module):
        return None
    return torch.cat([output[:, :1], prompting.prompts.to(output.dtype), output[:, 1:]], dim=1)


class HFImageBackbone(PromptableBackbone):
    """The base model of a Hugging Face image classifier as a backbone: images (B, C, H, W) -> the features
    its classifier reads (B, D), with the prompts and prefixes of :class:`PromptableBackbone`."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], dim: int, name: str) -> None:
        super().__init__()
        self.model = model
        self.input_shape, self.dim, self.name = tuple(input_shape), dim, name
        self.depth = len(self._blocks())
        embeddings = self._embeddings()
        if embeddings is not None:
            embeddings.register_forward_hook(_insert_prompts)
        self.refusal = self._probe()
        """Why prompts cannot reach the model's attention (empty when they can), found once, when it is built,
        by a forward of a zero image with a zero prompt and a zero prefix on every block, in eval mode and on a
        forked random state (no draw of the run's is taken)."""

    def _blocks(self) -> Sequence[nn.Module]:
        """The transformer blocks: the list of ``config.num_hidden_layers`` modules (none without one)."""
        count = getattr(self.model.config, "num_hidden_layers", 0)
        return next((m for m in self.model.modules() if isinstance(m, nn.ModuleList) and len(m) == count), [])

    def _embeddings(self) -> nn.Module | None:
        embeddings = getattr(self.model, "embeddings", None)
        return embeddings if isinstance(embeddings, nn.Module) else None

    def _run(self, x: torch.Tensor, prompts: torch.Tensor | None,
             prefixes: Mapping[int, Prefix] | None) -> tuple[Any, _Prompting | None]:
        """The base model's output on ``x`` with ``prompts`` and ``prefixes``, and what the forward used."""
        prompting = None
        if prompts is not None or prefixes:
            blocks = {id(m): index for index, block in enumerate(self._blocks()) for m in block.modules()}
            prompting = _Prompting(id(self._embeddings()), blocks, prompts, prefixes or {})
        token = _PROMPTING.set(prompting)
        try:
            return self.model(pixel_values=x), prompting
        finally:
            _PROMPTING.reset(token)

    def tokens(self, x: torch.Tensor, prompts: torch.Tensor | None = None,
               prefixes: Mapping[int, Prefix] | None = None) -> torch.Tensor:
        """The last hidden state (B, 1 + P + N, D) (:meth:`PromptableBackbone.tokens`)."""
        return self._run(x, prompts, prefixes)[0].last_hidden_state

    def forward(self, x: torch.Tensor, prompts: torch.Tensor | None = None,
                prefixes: Mapping[int, Prefix] | None = None) -> torch.Tensor:
        """The features (B, D) the model's classifier reads: the pooled output, or without a pooler the class
        token of the last hidden state."""
        output = self._run(x, prompts, prefixes)[0]
        pooled = getattr(output, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else output.last_hidden_state[:, 0]

    def prompt_refusal(self) -> str:
        return self.refusal

    def _probe(self) -> str:
        where = f"the Hugging Face {self.name}"
        if not self.depth:
            return f"{where} has no list of transformer blocks (config.num_hidden_layers) whose attention it could reach"
        if self._embeddings() is None:
            return f"{where} has no embeddings module after which prompts are inserted"
        parameter = next(self.parameters())
        x = torch.zeros(1, *self.input_shape, device=parameter.device, dtype=parameter.dtype)
        zero = torch.zeros(1, 1, self.dim, device=parameter.device, dtype=parameter.dtype)
        with torch.no_grad(), eval_mode(self), torch.random.fork_rng(devices=[]):
            try:
                _, prefixed = self._run(x, None, {block: Prefix(zero, zero) for block in range(self.depth)})
            except (RuntimeError, ValueError, TypeError, IndexError) as error:
                return f"{where} fails with prefixes on its attention: {str(error).splitlines()[0]}"
            assert prefixed is not None
            if prefixed.used != set(range(self.depth)):
                return (f"{where} has {'no' if not prefixed.used else 'not every'} attention layer going through "
                        "transformers' AttentionInterface, where the library adds prefixes")
            try:
                plain, prompted = self.tokens(x), self.tokens(x, zero)
            except (RuntimeError, ValueError, TypeError, IndexError) as error:
                return f"{where} fails with a prompt after its embeddings: {str(error).splitlines()[0]}"
        if prompted.shape[1] != plain.shape[1] + 1:
            return f"the embeddings of {where} do not output the token sequence prompts are inserted into"
        return ""


def _linear_classifier(model: nn.Module) -> nn.Linear | None:
    """The linear layer of the model's ``classifier``: the classifier itself, or a flattening
    ``nn.Sequential``'s last layer (the Hugging Face ResNet's); None for any other head."""
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        return classifier
    if isinstance(classifier, nn.Sequential) and isinstance(classifier[-1], nn.Linear) \
            and all(isinstance(m, nn.Flatten) for m in classifier[:-1]):
        return classifier[-1]
    return None


class HFClassifier(nn.Module):
    """``head(backbone(x))`` of a Hugging Face image classifier: :class:`HFImageBackbone` around its base
    model and its linear classifier (or a new one) as the head.

    The whole model (``pretrained``) is kept outside the module tree: its parameters are the backbone's and
    the head's, so the state dict holds each once (``backbone.*`` and ``head.*``, as every built-in model's),
    while :func:`save_pretrained` still has the model transformers saves."""

    def __init__(self, pretrained: nn.Module, head: nn.Linear, input_shape: Sequence[int], source: Path) -> None:
        super().__init__()
        name = type(pretrained).__name__
        self.backbone = HFImageBackbone(pretrained.base_model, input_shape, head.in_features, name)
        self.head = head
        self.feature_dim = head.in_features
        self.source = source
        """The folder the model was read from."""
        object.__setattr__(self, "pretrained", pretrained)  # a plain attribute: not a registered child module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM as the runner's language model: tokens (B, L) -> logits (B, L, V) over the
    tokenizer's ``vocab_size`` ids. Weight decay spares biases, normalization parameters and embeddings, as
    for the library's GPT (:func:`~lifelong.models.gpt.no_decay_names`)."""

    def __init__(self, model: nn.Module, vocab_size: int, source: Path) -> None:
        super().__init__()
        self.model = model
        self.vocab_size = vocab_size
        self.source = source
        """The folder the model and its tokenizer were read from."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, V)
        return self.model(input_ids=tokens, use_cache=False).logits[..., :self.vocab_size]

    def no_weight_decay(self) -> set[str]:
        return no_decay_names(self)


def hf(input_shape: Sequence[int], n_classes: int, vocab_size: int = 0, path: str = "",
       seed: int | None = None) -> HFClassifier | HFCausalLM:
    """The Hugging Face model saved in the local folder ``path`` (module docstring): on a text stream
    (``vocab_size`` > 0, the stream's, which the runner passes) its causal LM, else its image classifier
    for images ``input_shape`` with ``n_classes`` outputs. ``seed`` draws a new head (the classifier's
    labels are not the stream's classes); nothing else is drawn."""
    folder = model_folder(path)
    if vocab_size:
        return _causal_lm(folder, input_shape, vocab_size)
    return _image_classifier(folder, input_shape, n_classes, seed)


def _image_classifier(folder: Path, input_shape: Sequence[int], n_classes: int, seed: int | None) -> HFClassifier:
    if len(input_shape) != 3:
        raise ConfigError(f"model.name='hf' on inputs of shape {tuple(input_shape)}: its image classifiers read "
                          "images (C, H, W), its causal LMs a text stream (dataset.name='text')")
    model = _load("AutoModelForImageClassification", folder, "an image stream needs an image classifier (ViT, DeiT, "
                  "ConvNeXt, ...); a causal LM trains on a text stream (dataset.name='text')")
    linear = _linear_classifier(model)
    if linear is None:
        raise ConfigError(f"model.path: the classifier of the {type(model).__name__} in {str(folder)!r} is a "
                          f"{type(getattr(model, 'classifier', None)).__name__}, not one linear layer; the library "
                          "splits a model into a backbone and a linear head (save it with num_labels > 0)")
    if linear.out_features != n_classes:
        with seeded(seed):
            linear = nn.Linear(linear.in_features, n_classes)
    if getattr(type(model), "_supports_attention_backend", False):
        transformers_module().AttentionInterface.register(ATTENTION, prefixed_attention)
        model.set_attn_implementation(ATTENTION)
    return HFClassifier(model, linear, input_shape, folder)


def _causal_lm(folder: Path, input_shape: Sequence[int], vocab_size: int) -> HFCausalLM:
    model = _load("AutoModelForCausalLM", folder, "a text stream needs a causal language model (GPT-2, Llama, ...); "
                                                 "an image classifier trains on images")
    context = input_shape[0] - 1
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and context > positions:
        raise ConfigError(f"scenario.context ({context}) exceeds the {positions} positions of the model in "
                          f"{str(folder)!r} (max_position_embeddings); lower scenario.context")
    rows = model.get_input_embeddings().num_embeddings
    if vocab_size > rows:
        raise ConfigError(f"dataset.tokenizer has {vocab_size} tokens and the model in {str(folder)!r} embeds {rows}; "
                          "read the text with the model's own tokenizer (drop dataset.tokenizer)")
    return HFCausalLM(model, vocab_size, folder)


def check_save_pretrained(model: nn.Module, path: str, field: str = "run.save_pretrained") -> None:
    """Refuse, before anything trains, a model :func:`save_pretrained` cannot write, or a folder it must not
    write: a file, one under a file, or the folder the model is read from."""
    if not isinstance(model, HFClassifier | HFCausalLM):
        raise ConfigError(f"{field} writes a Hugging Face model, and the model is a {type(model).__name__}; set "
                          "model.name='hf' (or drop it)")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{field}: {path!r} is a file; give a folder")
    blocking = next((parent for parent in folder.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"{field}: {str(blocking)!r} is a file, not a folder; choose another path")
    if folder.resolve() == model.source.resolve():
        raise ConfigError(f"{field}: {path!r} is model.path, the folder the model is read from; write to another one")


def save_pretrained(model: nn.Module, path: str | Path, weights: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a model :func:`hf` built (and trained) as a ``save_pretrained`` folder that ``model.path`` and
    transformers' ``from_pretrained`` read back: an image classifier with the backbone and the head (the
    configuration's ``num_labels`` set to the head's classes), a causal LM with its tokenizer beside it.
    ``weights`` replace parameters by their names in ``model`` (LoRA merged into the layers it tunes,
    :func:`lifelong.strategies.parts.tuning.merged_weights`), so the folder computes what ``model`` does.
    What a strategy keeps beside the model (class means, projections, prompts) is not in the folder."""
    check_save_pretrained(model, str(path))
    assert isinstance(model, HFClassifier | HFCausalLM)
    transformers = transformers_module()
    folder = Path(path)
    if isinstance(model, HFClassifier):
        pretrained: Any = model.pretrained
        if isinstance(pretrained.classifier, nn.Sequential):
            pretrained.classifier[-1] = model.head
        else:
            pretrained.classifier = model.head
        pretrained.config.num_labels = model.head.out_features
    else:
        pretrained = model.model
    names = {id(p): name for name, p in pretrained.named_parameters(remove_duplicate=False)}
    own = dict(model.named_parameters(remove_duplicate=False))
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in pretrained.state_dict().items()}
    for name, tensor in (weights or {}).items():
        state[names[id(own[name])]] = tensor.detach().cpu().contiguous()
    with quiet(transformers):
        pretrained.save_pretrained(str(folder), state_dict=state)
        if isinstance(model, HFCausalLM):
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(model.source), local_files_only=True)
            tokenizer.save_pretrained(str(folder))
    return folder
