"""Packing of documents into full windows (:mod:`lifelong.data.text`) and attention kept within documents
(``dataset.pack_across_documents = false``, :func:`lifelong.models.gpt.document_mask`), checked by hand on a
corpus of three training documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lifelong import OptimConfig, train
from lifelong.config import load_config
from lifelong.data.text import DomainSplit, TextCorpus, text_domains
from lifelong.data.tokenizers import ByteTokenizer
from lifelong.errors import ConfigError
from lifelong.experiment import build_model, build_stream
from lifelong.models.gpt import document_mask, gpt, mask_documents
from lifelong.strategies import STRATEGIES

EOS = ByteTokenizer.eos_id
DOCUMENTS = ("ab", "cdef", "g")
"""Three training documents: 2 + 1, 4 + 1 and 1 + 1 byte tokens with their end-of-document ids, 10 in all."""


def corpus(pack_across_documents: bool) -> TextCorpus:
    split = DomainSplit("three", train=DOCUMENTS, validation=("validation text",))
    return TextCorpus((split,), ByteTokenizer(), pack_across_documents)


def tokens_of(document: str) -> list[int]:
    return [*document.encode(), EOS]


def test_three_documents_pack_into_full_windows_with_an_end_of_document_id_and_no_padding() -> None:
    """Context 3: the 10 tokens make exactly 3 windows of 4 (9 predicted tokens, consecutive windows sharing
    their boundary token), every token one of the documents' in a seeded order, none a padding id."""
    stream = text_domains(corpus(pack_across_documents=True), context=3, train_tokens=9, seed=0)
    windows = stream[0].train.x
    assert tuple(windows.shape) == (3, 4)
    sequence = torch.cat([windows[0, :1], windows[:, 1:].reshape(-1)]).tolist()  # each boundary token once
    assert len(sequence) == 10 and sequence.count(EOS) == 3 and sequence[-1] == EOS
    pieces, start = [], 0
    for end in [i for i, token in enumerate(sequence) if token == EOS]:
        pieces.append(bytes(sequence[start:end]).decode())
        start = end + 1
    assert sorted(pieces) == sorted(DOCUMENTS)  # every document once, whole, in the seed's order
    assert stream[0].info["tokens"] == 9 and stream[0].info["documents_used"] == 3
    assert stream.document_end is None  # attention crosses the documents
    # a budget of 6 tokens: 2 windows, 7 tokens of the documents (the third's start not trained on)
    assert tuple(text_domains(corpus(True), context=3, train_tokens=6)[0].train.x.shape) == (2, 4)


def test_without_crossing_no_position_attends_across_a_document() -> None:
    """The window ``a b EOS c d`` (documents 'ab' and the start of 'cd...'): positions 0-2 form document 0,
    3-4 document 1; the mask is causal within each and false across, written out by hand."""
    window = torch.tensor([[97, 98, EOS, 99, 100]])
    expected = torch.tensor([[1, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [1, 1, 1, 0, 0],
                             [0, 0, 0, 1, 0],
                             [0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(document_mask(window, EOS)[0, 0], expected)
    stream = text_domains(corpus(pack_across_documents=False), context=3, train_tokens=9, seed=0)
    assert stream.document_end == EOS
    for window in stream[0].train.x[:, :-1]:  # what the model reads of each window
        mask = document_mask(window[None], EOS)[0, 0]
        document = [sum(int(t == EOS) for t in window[:i]) for i in range(len(window))]  # ends before position i
        for t in range(len(window)):
            for s in range(len(window)):
                assert bool(mask[t, s]) == (s <= t and document[s] == document[t])


def test_the_mask_keeps_the_second_documents_logits_when_the_first_documents_tokens_change() -> None:
    """A tiny GPT reads ``doc1 EOS doc2``: with the mask, changing doc 1's tokens leaves doc 2's logits bit
    for bit the same; with attention crossing documents they change."""
    torch.manual_seed(0)
    model = gpt((9,), 1, 257, d_model=16, n_layers=2, n_heads=2).eval()
    first, changed = torch.tensor([[10, 11, 12, EOS, 20, 21, 22, 23]]), torch.tensor([[50, 60, 70, EOS, 20, 21, 22, 23]])
    mask_documents(model, EOS)
    with torch.no_grad():
        assert torch.equal(model(first)[0, 4:], model(changed)[0, 4:])
        assert not torch.equal(model(first)[0, :3], model(changed)[0, :3])
        mask_documents(model, None)
        assert not torch.equal(model(first)[0, 4:], model(changed)[0, 4:])


def test_the_setting_reaches_the_gpt_through_a_configuration_and_other_models_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("\n\n".join(f"document number {i} of the domain" for i in range(30)))
    (tmp_path / "run.toml").write_text(
        f"[dataset]\nname = 'text'\ndomains = ['{tmp_path / 'a.txt'}']\npack_across_documents = false\n"
        "[scenario]\nname = 'text_domains'\ncontext = 16\ntrain_tokens = 64\n[model]\nname = 'gpt'\nd_model = 16\n"
        "n_layers = 1\nn_heads = 2\n[strategy]\nname = 'naive'\n")
    config = load_config(str(tmp_path / "run.toml"), [])
    stream = build_stream(config)
    assert stream.document_end == EOS and build_model(config, stream).document_end == EOS
    with pytest.raises(ConfigError) as error:  # a model that cannot mask attention per document
        mask_documents(torch.nn.Linear(2, 2), EOS)
    assert "\n" not in str(error.value) and "dataset.pack_across_documents=true" in str(error.value)
    unmasked = gpt(stream.input_shape, 1, stream.vocab_size, d_model=16, n_layers=1, n_heads=2)
    with pytest.raises(ConfigError, match="mask_documents") as error:  # a GPT built without the mask
        train(stream, unmasked, STRATEGIES["naive"](), OptimConfig(epochs=1), device="cpu")
    assert "\n" not in str(error.value)
