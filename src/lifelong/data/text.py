"""Text streams for continual pre-training of language models: one experience per text domain, each a
budget of tokens (Gupta et al. 2023, "Continual Pre-Training of Large Language Models: How to
(re)warm your model?"; Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually Pre-train
Large Language Models": English, then a shift such as German).

From documents to windows, in three steps:

1. :func:`split_domains`: each domain's documents (:mod:`lifelong.data.corpora`) deduplicated and
   split into training and validation documents by a seeded generator, so that no validation
   document's text is trained on (splitting windows of one token sequence instead would let a
   document straddle the two parts). Two documents are one when they differ only in case, punctuation
   and spacing (:func:`dedup_key`): the fortune files hold the same quip in several spellings, and an
   exact-text check let 24 of 1,513 English validation fortunes be trained on.
2. A tokenizer (:mod:`lifelong.data.tokenizers`): bytes by default, or BPE trained on the first
   domain's training documents only.
3. :func:`text_domains`: each part's documents, in a seeded order, encoded and joined with an
   end-of-document id after each, cut into windows of ``context + 1`` tokens with stride ``context``
   (:func:`token_windows`: consecutive windows share their boundary token, so every token but the first
   is predicted exactly once), as many as the budget asks. The model reads ``x[:, :-1]`` and predicts
   ``x[:, 1:]``.

This is packing as pre-training runs do it: every window is full (no padding), a document runs on into
the next window, and a window holds the end of one document and the start of the next. Whether attention
may cross documents inside a window is the dataset's ``pack_across_documents``: true (the default, as
GPT-2) lets a token attend to the previous document's tokens; false makes the model's attention
block-diagonal per document (:func:`~lifelong.models.gpt.document_mask`, carried by the stream's
``document_end``), which our GPT does and any other model refuses. The windows and the token budget are
the same either way.

The stream is domain-incremental (no domain id at test time): ``y`` and ``task`` of a window are its
domain's index, which the language-model objective uses only to report a loss per domain.

Losses are per token, and a BPE token holds several bytes: to compare tokenizers, each experience's
``info`` also counts the UTF-8 ``bytes`` its windows predict (:func:`window_bytes`), and
:func:`validation_bytes_per_token` gives the ratio per domain that turns a validation loss into bits per
byte (:func:`lifelong.metrics.objectives.loss_summary`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lifelong.data.corpora import TextDomain, text_domain
from lifelong.data.streams import Experience, Stream, TensorSet
from lifelong.data.tokenizers import BPETokenizer, Tokenizer, make_tokenizer, token_bytes
from lifelong.errors import ConfigError, DataError

DomainSpec = str | Path | TextDomain | list[str | Path]
"""A domain as :func:`~lifelong.data.corpora.text_domain` reads it: a preset name, a folder or file, a
list of files, or the documents themselves."""


@dataclass(frozen=True)
class DomainSplit:
    """A domain's distinct documents split into ``train`` and ``validation`` (each in the domain's order)."""

    name: str
    train: tuple[str, ...]
    validation: tuple[str, ...]


@dataclass(frozen=True)
class TextCorpus:
    """The dataset of a text stream (``dataset.name = "text"``): split domains and their tokenizer."""

    domains: tuple[DomainSplit, ...]
    tokenizer: Tokenizer
    pack_across_documents: bool = True
    """Whether attention may cross documents within a packed window (module docstring)."""

    @property
    def name(self) -> str:
        return "text " + "->".join(d.name for d in self.domains)


def dedup_key(document: str) -> str:
    """What two documents must share to be one: their words (letters and digits of any script), case
    folded, with punctuation and spacing dropped; a document without words keys on its own text."""
    return " ".join(re.findall(r"\w+", document.casefold())) or document


def split_documents(domain: TextDomain, validation_fraction: float, generator: torch.Generator) -> DomainSplit:
    """``domain``'s documents without repeats (:func:`dedup_key`; the first occurrence kept),
    ``round(fraction * n)`` of them (at least one) drawn by ``generator`` for validation, the rest for
    training."""
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError(f"dataset.validation_fraction must lie in (0, 1), got {validation_fraction}")
    distinct: dict[str, str] = {}
    for document in domain.documents:
        distinct.setdefault(dedup_key(document), document)
    documents = list(distinct.values())
    n_validation = max(1, round(validation_fraction * len(documents)))
    if len(documents) - n_validation < 1:
        raise DataError(f"text domain {domain.name!r} has {len(documents)} distinct documents; a train/validation "
                        "split needs at least 2 (add documents, or separate them by blank lines)")
    chosen = torch.zeros(len(documents), dtype=torch.bool)
    chosen[torch.randperm(len(documents), generator=generator)[:n_validation]] = True
    return DomainSplit(domain.name, tuple(d for d, v in zip(documents, chosen.tolist()) if not v),
                       tuple(d for d, v in zip(documents, chosen.tolist()) if v))


def split_domains(domains: Sequence[DomainSpec], validation_fraction: float = 0.1,
                  seed: int = 0) -> tuple[DomainSplit, ...]:
    """Every domain read (:func:`~lifelong.data.corpora.text_domain`) and split by document, from one
    generator seeded with ``seed`` (a domain's split does not depend on the domains after it)."""
    if not domains:
        raise ConfigError("dataset.domains must name at least one text domain, e.g. ['en', 'de']")
    read = [text_domain(spec) for spec in domains]
    names = [d.name for d in read]
    if len(set(names)) != len(names):
        raise ConfigError(f"dataset.domains must name distinct domains, got {names}")
    generator = torch.Generator().manual_seed(seed)
    return tuple(split_documents(domain, validation_fraction, generator) for domain in read)


def text(domains: Sequence[DomainSpec], tokenizer: str = "byte", bpe_vocab_size: int = 4096,
         validation_fraction: float = 0.1, seed: int = 0, save_tokenizer: str = "",
         pack_across_documents: bool = True) -> TextCorpus:
    """The ``text`` dataset: ``domains`` split by document (:func:`split_domains`) and a tokenizer:
    ``"byte"`` (:class:`~lifelong.data.tokenizers.ByteTokenizer`), ``"bpe"`` (byte-level BPE of
    ``bpe_vocab_size`` tokens trained on the first domain's training documents), a saved BPE
    tokenizer's ``.json`` file or a Hugging Face tokenizer's folder (a model's, ``model.name = "hf"``).
    ``seed`` draws the validation documents. ``save_tokenizer``: a ``.json`` file the BPE tokenizer is
    written to, for ``tokenizer = FILE`` in later runs (the same vocabulary on another stream).
    ``pack_across_documents``: false keeps attention within each document of a packed window (module
    docstring)."""
    if save_tokenizer:
        check_tokenizer_file(save_tokenizer, tokenizer)
    splits = split_domains(domains, validation_fraction, seed)
    made = make_tokenizer(tokenizer, splits[0].train, bpe_vocab_size)
    if save_tokenizer:
        assert isinstance(made, BPETokenizer)
        made.save(save_tokenizer)
    return TextCorpus(splits, made, pack_across_documents)


def check_tokenizer_file(path: str, tokenizer: str) -> None:
    """Refuse a ``dataset.save_tokenizer`` that cannot be written, or that has no BPE tokenizer to save."""
    if tokenizer == "byte":
        raise ConfigError("dataset.save_tokenizer saves a BPE tokenizer, and dataset.tokenizer='byte' needs no file; "
                          "set dataset.tokenizer='bpe' or drop dataset.save_tokenizer")
    if Path(tokenizer).is_dir():
        raise ConfigError(f"dataset.save_tokenizer saves a BPE tokenizer, and dataset.tokenizer={tokenizer!r} is a "
                          "Hugging Face tokenizer's folder, saved already; drop dataset.save_tokenizer")
    file = Path(path)
    if file.suffix != ".json":
        raise ConfigError(f"dataset.save_tokenizer must be a .json file (dataset.tokenizer reads one), got {path!r}")
    if file.is_dir() or not file.parent.is_dir():
        raise ConfigError(f"dataset.save_tokenizer: cannot write {path!r}: "
                          + ("it is a folder" if file.is_dir() else f"no folder {str(file.parent)!r}"))


def token_windows(tokens: torch.Tensor, context: int, n_windows: int | None = None) -> torch.Tensor:
    """(N, context + 1) windows of the 1-D ``tokens``: window ``i`` is ``tokens[i * context : (i + 1) * context
    + 1]``; all that fit, or the first ``n_windows`` (which must fit)."""
    available = max(0, (len(tokens) - 1) // context)
    count = available if n_windows is None else n_windows
    if count > available:
        raise DataError(f"{len(tokens)} tokens make {available} windows of {context + 1} tokens, not {count}")
    if count == 0:
        return tokens.new_zeros((0, context + 1))
    return tokens[:count * context + 1].unfold(0, context + 1, context).clone()


@dataclass(frozen=True)
class _Part:
    windows: torch.Tensor  # (N, context + 1)
    documents: int  # documents whose tokens are in the windows (the last one perhaps in part)
    bytes: int  # UTF-8 bytes of the tokens the windows predict


def window_bytes(windows: torch.Tensor, tokenizer: Tokenizer) -> torch.Tensor:
    """(N,) the UTF-8 bytes of the tokens each window of ``windows`` (N, context + 1) predicts (all but
    its first; :func:`~lifelong.data.tokenizers.token_bytes`)."""
    return token_bytes(tokenizer)[windows[:, 1:]].sum(dim=1)


def _encode(documents: Sequence[str], tokenizer: Tokenizer, needed: int | None) -> tuple[torch.Tensor, int]:
    """The documents' tokens, each followed by ``eos_id``, until ``needed`` tokens (all without it),
    and how many documents they took."""
    pieces, total = [], 0
    for count, document in enumerate(documents, 1):
        piece = torch.tensor([*tokenizer.encode(document), tokenizer.eos_id], dtype=torch.long)
        pieces.append(piece)
        total += len(piece)
        if needed is not None and total >= needed:
            return torch.cat(pieces), count
    return (torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)), len(documents)


def _part(split: DomainSplit, part: str, tokenizer: Tokenizer, context: int, tokens: int | None,
          generator: torch.Generator) -> _Part:
    """The windows of ``split``'s ``part`` ("train" or "validation") in a seeded document order: exactly
    ``tokens // context`` of them for training (an error if the part is too small), at most that many for
    validation."""
    documents = getattr(split, part)
    ordered = [documents[i] for i in torch.randperm(len(documents), generator=generator).tolist()]
    wanted = None if tokens is None else tokens // context
    ids, used = _encode(ordered, tokenizer, None if wanted is None else wanted * context + 1)
    available = max(0, (len(ids) - 1) // context)
    if part == "train" and wanted is not None and available < wanted:
        raise DataError(f"text domain {split.name!r} has {len(ids)} training tokens in {len(documents)} documents, "
                        f"fewer than the {wanted * context + 1} that scenario.train_tokens={tokens} needs at context "
                        f"{context}; lower scenario.train_tokens or add documents")
    if available == 0:
        raise DataError(f"text domain {split.name!r} has {len(ids)} {part} tokens in {len(documents)} documents, "
                        f"fewer than one window of {context + 1}; lower scenario.context or raise "
                        "dataset.validation_fraction")
    windows = token_windows(ids, context, min(available, wanted or available))
    return _Part(windows, used, int(window_bytes(windows, tokenizer).sum()))


def text_domains(dataset: TextCorpus, context: int = 64, train_tokens: int | None = None,
                 validation_tokens: int | None = None, seed: int = 0) -> Stream:
    """The ``text_domains`` scenario: one experience per domain of ``dataset``, training on
    ``train_tokens`` predicted tokens (``train_tokens // context`` windows; None: every training
    document) and evaluated on at most ``validation_tokens`` of its validation documents (None: all).
    ``seed`` orders the documents before the windows are cut, so it chooses which documents fill the
    budget. Each experience's ``info`` counts the domain's ``documents`` and the ``documents_used``,
    ``tokens`` (predicted tokens) and ``bytes`` (their UTF-8 bytes) of its windows, for training and
    (``validation_``) validation."""
    if not isinstance(dataset, TextCorpus):
        raise ConfigError(f"scenario.name='text_domains' needs dataset.name='text', got the dataset "
                          f"{getattr(dataset, 'name', type(dataset).__name__)!r}")
    if context < 1:
        raise ConfigError(f"scenario.context must be >= 1, got {context}")
    for field, value in (("train_tokens", train_tokens), ("validation_tokens", validation_tokens)):
        if value is not None and value < context:
            raise ConfigError(f"scenario.{field} must be >= context ({context}, one window), got {value}")
    generator = torch.Generator().manual_seed(seed)
    experiences = []
    for index, split in enumerate(dataset.domains):
        train = _part(split, "train", dataset.tokenizer, context, train_tokens, generator)
        validation = _part(split, "validation", dataset.tokenizer, context, validation_tokens, generator)
        experiences.append(Experience(
            train=TensorSet.of(train.windows, torch.full((len(train.windows),), index), index),
            test=TensorSet.of(validation.windows, torch.full((len(validation.windows),), index), index),
            classes=(index,), task_id=index, name=split.name,
            info={"documents": len(split.train), "documents_used": train.documents,
                  "tokens": len(train.windows) * context, "bytes": train.bytes,
                  "validation_documents": len(split.validation), "validation_documents_used": validation.documents,
                  "validation_tokens": len(validation.windows) * context, "validation_bytes": validation.bytes},
        ))
    return Stream(tuple(experiences), n_classes=len(experiences), input_shape=(context + 1,), task_aware=False,
                  name=f"{dataset.name} ({dataset.tokenizer!r}, context {context})",
                  objective="language_model", vocab_size=dataset.tokenizer.vocab_size,
                  document_end=None if dataset.pack_across_documents else dataset.tokenizer.eos_id)


def validation_bytes_per_token(stream: Stream) -> list[float] | None:
    """Per domain of a text stream, the UTF-8 bytes per predicted token of its validation windows: a
    validation loss ``L`` in nats per token is ``L / (ln 2 * ratio)`` bits per byte. None for a stream
    that does not count bytes (not made by :func:`text_domains`)."""
    ratios = []
    for experience in stream:
        tokens, count = experience.info.get("validation_tokens"), experience.info.get("validation_bytes")
        if not isinstance(tokens, int) or not isinstance(count, int) or tokens == 0:
            return None
        ratios.append(count / tokens)
    return ratios


def text_stream(domains: Sequence[DomainSpec], *, tokenizer: str | Tokenizer = "byte", context: int = 64,
                train_tokens: int | None = None, validation_tokens: int | None = None,
                validation_fraction: float = 0.1, bpe_vocab_size: int = 4096, seed: int = 0,
                name: str = "", pack_across_documents: bool = True) -> Stream:
    """A domain-incremental language-modelling stream over text ``domains`` in one call: :func:`text`
    (which also takes a tokenizer object here) followed by :func:`text_domains`; ``name`` replaces the
    stream's default name."""
    splits = split_domains(domains, validation_fraction, seed)
    corpus = TextCorpus(splits, make_tokenizer(tokenizer, splits[0].train, bpe_vocab_size), pack_across_documents)
    stream = text_domains(corpus, context, train_tokens, validation_tokens, seed)
    return dataclasses.replace(stream, name=name) if name else stream
