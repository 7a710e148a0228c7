"""Tokenizers of text streams: text -> token ids and back, with one end-of-document id.

:class:`ByteTokenizer` is the default: the UTF-8 bytes of a text are its tokens (ids 0..255) and id
256 ends a document, so it needs no training, no file and no download, and reads any language (a
German umlaut is two byte tokens). :class:`BPETokenizer` is byte-level byte-pair encoding (Sennrich
et al. 2016 on GPT-2's byte alphabet, Radford et al. 2019) trained locally with Hugging Face
``tokenizers`` (an optional dependency, ``pip install 'lifelong[text]'``): fewer, longer tokens, learnt
from the first domain of a stream only, so that later domains are tokenized by a vocabulary that did
not see them (the continual pre-training setting, where the tokenizer is fixed before the shift).
:class:`HFTokenizer` is the tokenizer saved in a Hugging Face model's folder (``AutoTokenizer``, optional
``pip install 'lifelong[hf]'``), the one a model of ``model.name = "hf"`` reads text with.

Any object with ``encode``, ``decode``, ``vocab_size`` and ``eos_id`` (:class:`Tokenizer`) can be
given to a text stream instead.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from lifelong.errors import ConfigError, DataError, MissingFileError

EOS_TOKEN = "<|endoftext|>"
"""The end-of-document token of :class:`BPETokenizer` (GPT-2's name for it)."""


@runtime_checkable
class Tokenizer(Protocol):
    """What a text stream needs of a tokenizer: ids in ``[0, vocab_size)``, ``eos_id`` among them."""

    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255 and 256 as end of document: ``vocab_size`` 257."""

    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; end-of-document ids are dropped and a byte sequence cut inside a
        character (a window's edge) decodes to U+FFFD rather than failing."""
        return bytes(i for i in ids if i != self.eos_id).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def _tokenizers_module() -> Any:
    if importlib.util.find_spec("tokenizers") is None:
        raise ConfigError("dataset.tokenizer='bpe' needs Hugging Face tokenizers; install it with "
                          "`pip install 'lifelong[text]'` or use tokenizer='byte'")
    import tokenizers

    return tokenizers


class BPETokenizer:
    """Byte-level BPE (GPT-2's byte alphabet and pre-tokenization) wrapping a Hugging Face
    ``tokenizers.Tokenizer``; build it with :meth:`train` or :meth:`load`."""

    def __init__(self, backend: Any) -> None:
        eos = backend.token_to_id(EOS_TOKEN)
        if eos is None:
            raise DataError(f"a BPE tokenizer needs the end-of-document token {EOS_TOKEN!r} in its vocabulary; "
                            "train it with BPETokenizer.train")
        self.backend = backend
        self.eos_id = int(eos)
        self.vocab_size = int(backend.get_vocab_size())

    @classmethod
    def train(cls, documents: Sequence[str], vocab_size: int = 4096) -> BPETokenizer:
        """Learn merges on ``documents`` until ``vocab_size`` tokens (256 bytes, the end-of-document token
        and the merges; fewer when the text has no more pairs to merge)."""
        if vocab_size < 258:
            raise ConfigError(f"dataset.bpe_vocab_size must be >= 258 (256 bytes, {EOS_TOKEN} and one merge), "
                              f"got {vocab_size}")
        if not documents:
            raise DataError("cannot train a BPE tokenizer on no documents")
        tokenizers = _tokenizers_module()
        pre = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend = tokenizers.Tokenizer(tokenizers.models.BPE())
        backend.pre_tokenizer = pre
        backend.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN],
                                                 initial_alphabet=pre.alphabet(), show_progress=False)
        backend.train_from_iterator(documents, trainer=trainer, length=len(documents))
        return cls(backend)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """A tokenizer saved by :meth:`save`."""
        if not Path(path).is_file():
            raise MissingFileError(f"dataset.tokenizer: no tokenizer file {path}; train one with tokenizer='bpe' "
                                   "and save it with dataset.save_tokenizer (or BPETokenizer.save)")
        tokenizers = _tokenizers_module()
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as error:  # the Rust library raises a bare Exception for any malformed file
            raise DataError(f"dataset.tokenizer: {str(path)!r} is not a tokenizer file ({error}); give a file "
                            "written by dataset.save_tokenizer (or BPETokenizer.save), or tokenizer='bpe' to train "
                            "one") from None
        return cls(backend)

    def save(self, path: str | Path) -> None:
        """Write the vocabulary, merges and settings as one JSON file."""
        self.backend.save(str(path))

    def encode(self, text: str) -> list[int]:
        return list(self.backend.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=True))

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


class HFTokenizer:
    """The tokenizer saved in a local folder by ``save_pretrained`` (a Hugging Face model's own; read with
    ``AutoTokenizer`` and ``local_files_only``: nothing is downloaded). Its end-of-sequence token ends a
    document, and no other special token is added when encoding (a Llama tokenizer's beginning-of-sequence
    token), so documents are packed as with the other tokenizers. ``vocab_size`` counts added tokens too."""

    def __init__(self, backend: Any, name: str) -> None:
        if backend.eos_token_id is None:
            raise DataError(f"dataset.tokenizer: the tokenizer in {name!r} has no end-of-sequence token, which "
                            "ends every document of a text stream; save it with an eos_token")
        self.backend, self.name = backend, name
        self.eos_id = int(backend.eos_token_id)
        self.vocab_size = len(backend)

    @classmethod
    def load(cls, path: str | Path) -> HFTokenizer:
        """The tokenizer saved in the folder ``path``."""
        try:
            import transformers
        except ImportError:
            raise ConfigError(f"dataset.tokenizer: reading the tokenizer folder {str(path)!r} needs Hugging Face "
                              "transformers: pip install 'lifelong[hf]'") from None
        try:
            backend = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, TypeError) as error:
            raise DataError(f"dataset.tokenizer: {str(path)!r} holds no tokenizer transformers can read "
                            f"({str(error).splitlines()[0]}); give a folder with the tokenizer files save_pretrained "
                            "writes (tokenizer.json, tokenizer_config.json)") from None
        return cls(backend, str(path))

    def encode(self, text: str) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=False, verbose=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=True))

    def token_strings(self) -> list[str]:
        """Each token id decoded alone, in one batch."""
        return list(self.backend.batch_decode([[i] for i in range(self.vocab_size)], skip_special_tokens=True))

    def __repr__(self) -> str:
        return f"HFTokenizer({Path(self.name).name!r}, vocab_size={self.vocab_size})"


def token_bytes(tokenizer: Tokenizer) -> torch.Tensor:
    """(vocab_size,) long: the UTF-8 bytes each token id stands for, so that a loss per token converts to
    bits per byte whatever the tokenizer. The end of a document counts as one byte (the separator between
    documents), so a :class:`ByteTokenizer` run's bits per byte is exactly its loss in nats over ln 2. A
    :class:`BPETokenizer` token's bytes are the characters of its byte-level form (one per byte); any other
    tokenizer's are those of the token decoded alone (at least one; a byte-level token that is part of a
    character decodes to U+FFFD, three bytes)."""
    if isinstance(tokenizer, ByteTokenizer):
        return torch.ones(tokenizer.vocab_size, dtype=torch.long)
    if isinstance(tokenizer, BPETokenizer):
        lengths = [len(tokenizer.backend.id_to_token(i) or "x") for i in range(tokenizer.vocab_size)]
    elif isinstance(tokenizer, HFTokenizer):
        lengths = [len(text.encode("utf-8")) for text in tokenizer.token_strings()]
    else:
        lengths = [len(tokenizer.decode([i]).encode("utf-8")) for i in range(tokenizer.vocab_size)]
    counts = torch.tensor(lengths, dtype=torch.long).clamp_min(1)
    counts[tokenizer.eos_id] = 1
    return counts


def make_tokenizer(tokenizer: str | Tokenizer, first_domain: Sequence[str], bpe_vocab_size: int) -> Tokenizer:
    """``tokenizer`` as an object: ``"byte"``; ``"bpe"`` trained on ``first_domain`` (the first domain's
    training documents); a path to a saved BPE ``.json`` file; a folder holding a Hugging Face tokenizer
    (:class:`HFTokenizer`); or a :class:`Tokenizer` as it is."""
    if isinstance(tokenizer, str):
        if tokenizer == "byte":
            return ByteTokenizer()
        if tokenizer == "bpe":
            return BPETokenizer.train(first_domain, bpe_vocab_size)
        if tokenizer.endswith(".json"):
            return BPETokenizer.load(tokenizer)
        if tokenizer and Path(tokenizer).is_dir():
            return HFTokenizer.load(tokenizer)
        raise ConfigError(f"dataset.tokenizer must be 'byte', 'bpe', a saved BPE tokenizer's .json file or a folder "
                          f"holding a Hugging Face tokenizer, got {tokenizer!r}")
    if not isinstance(tokenizer, Tokenizer):
        raise ConfigError(f"dataset.tokenizer must be 'byte', 'bpe', a .json file, a tokenizer folder or an object "
                          f"with encode, decode, vocab_size and eos_id, got {type(tokenizer).__name__}")
    return tokenizer
