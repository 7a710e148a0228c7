"""Text streams: tokenizers, reading domains, the split by document, token windows and budgets, the
``text`` dataset and ``text_domains`` scenario through a configuration; on generated text, plus the
English and German fortune cookies of Debian where they are installed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lifelong.config import load_config
from lifelong.data.corpora import TEXT_DOMAINS, TextDomain, TextSource, fortune_documents, read_fortunes, roff_to_text
from lifelong.data.scenarios import SCENARIOS
from lifelong.data.text import (
    dedup_key,
    split_domains,
    text,
    text_domains,
    text_stream,
    token_windows,
    validation_bytes_per_token,
    window_bytes,
)
from lifelong.data.tokenizers import BPETokenizer, ByteTokenizer, token_bytes
from lifelong.errors import ConfigError, DataError
from lifelong.experiment import build_model, build_stream

GERMAN = "Grüße aus Köln: Äpfel, Öl und Übermut — ß!"


def numbered(count: int, words: str = "alpha beta gamma delta") -> list[str]:
    """Distinct documents ``doc 0: ...`` with room for a window each."""
    return [f"doc {i}: {words} {i * 7}" for i in range(count)]


def joined(windows: torch.Tensor) -> torch.Tensor:
    """The token sequence that consecutive windows were cut from, each boundary token once."""
    return torch.cat([windows[0, :1], windows[:, 1:].reshape(-1)])


def test_byte_tokenizer_round_trips_umlauts_and_drops_the_end_of_document_id() -> None:
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(GERMAN)
    assert (tokenizer.vocab_size, tokenizer.eos_id) == (257, 256)
    assert ids[2:4] == [0xC3, 0xBC]  # "ü" is two UTF-8 bytes
    assert len(ids) == len(GERMAN.encode("utf-8"))
    assert tokenizer.decode(ids + [tokenizer.eos_id]) == GERMAN


def test_bpe_tokenizer_trains_round_trips_and_saves(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    documents = numbered(200) + [GERMAN] * 3
    tokenizer = BPETokenizer.train(documents, vocab_size=300)
    assert 258 <= tokenizer.vocab_size <= 300
    assert tokenizer.decode(tokenizer.encode(GERMAN)) == GERMAN
    assert len(tokenizer.encode("alpha beta gamma")) < len("alpha beta gamma")  # merges learnt
    unseen = "Neue Wörter: Straßenbahn, Fußgänger"
    assert tokenizer.decode(tokenizer.encode(unseen)) == unseen  # byte-level: no unknown token
    tokenizer.save(tmp_path / "bpe.json")
    loaded = BPETokenizer.load(tmp_path / "bpe.json")
    assert (loaded.encode(GERMAN), loaded.eos_id, loaded.vocab_size) == (
        tokenizer.encode(GERMAN), tokenizer.eos_id, tokenizer.vocab_size)
    with pytest.raises(ConfigError, match="bpe_vocab_size must be >= 258"):
        BPETokenizer.train(documents, vocab_size=100)


def test_bpe_of_a_stream_is_trained_on_the_first_domains_training_documents_only() -> None:
    pytest.importorskip("tokenizers")
    english = TextDomain("en", tuple(numbered(60)))
    german = TextDomain("de", tuple(f"{GERMAN} {i}" for i in range(60)))
    corpus = text([english, german], tokenizer="bpe", bpe_vocab_size=300)  # type: ignore[list-item]
    reference = BPETokenizer.train(split_domains([english, german])[0].train, vocab_size=300)
    assert corpus.tokenizer.encode(GERMAN + " alpha") == reference.encode(GERMAN + " alpha")


def test_fortune_files_split_at_percent_lines_and_lose_overstrike() -> None:
    assert fortune_documents("one\nline\n%\ntwo\n%  \n\n%\nB\bBold") == ["one\nline", "two", "Bold"]


def test_roff_becomes_plain_text() -> None:
    source = "\n".join([
        '.\\" a comment', '.TH LS 1 "2022"', ".SH NAME", "ls \\- list \\fBdirectory\\fR contents", ".PP",
        ".BR open (2),", '.IP "\\(bu" 4', 'Tab\\(emdash \\e and \\[aq]quote\\[aq] \\" a comment', ".de XX",
        "ignored", "..",
        ".I end",
    ])
    expected = "NAME\nls - list directory contents\nopen(2),\n\u2022\nTab\u2014dash \\ and 'quote'\nend"
    assert roff_to_text(source) == expected
    assert roff_to_text(".so man1/other.1") == ""


def test_token_windows_have_exact_shape_and_shared_boundaries() -> None:
    windows = token_windows(torch.arange(10), context=3)
    assert windows.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert token_windows(torch.arange(10), context=3, n_windows=2).tolist() == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert token_windows(torch.arange(3), context=3).shape == (0, 4)
    with pytest.raises(DataError, match="make 3 windows of 4 tokens, not 4"):
        token_windows(torch.arange(10), context=3, n_windows=4)


def test_no_validation_document_is_trained_on(tmp_path: Path) -> None:
    """A duplicated document counts once, so its text cannot land on both sides; the training windows
    hold no validation document, by text and by tokens."""
    documents = numbered(60)
    (tmp_path / "a.txt").write_text("\n\n".join(documents[:30] + [documents[5]]), encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n\n\n".join(documents[30:]), encoding="utf-8")
    splits = split_domains([str(tmp_path)], validation_fraction=0.25, seed=3)
    train, validation = splits[0].train, splits[0].validation
    assert (len(train), len(validation)) == (45, 15) and not set(train) & set(validation)
    assert sorted(train + validation) == sorted(documents)
    tokenizer = ByteTokenizer()
    stream = text_stream([str(tmp_path)], context=16, validation_fraction=0.25, seed=3)
    trained, held_out = joined(stream[0].train.x), joined(stream[0].test.x)
    trained_text, held_out_text = tokenizer.decode(trained.tolist()), tokenizer.decode(held_out.tolist())
    for document in validation:
        ids = torch.tensor(tokenizer.encode(document))
        assert document not in trained_text
        assert not (trained.unfold(0, len(ids), 1) == ids).all(-1).any()
    assert all(document not in held_out_text for document in train)
    # the checks can fail: all but the documents cut at the last window's end are in their own part
    assert sum(document in held_out_text for document in validation) >= len(validation) - 1
    assert sum(document in trained_text for document in train) >= len(train) - 1
    assert stream[0].info["documents"] == 45 and stream[0].info["validation_documents"] == 15


def test_documents_differing_in_case_punctuation_and_spacing_are_one() -> None:
    """Issue 25: exact-text deduplication let a validation fortune be trained on in another spelling."""
    variants = ["Hello, World!", "hello world", "HELLO   world.", "Hello\n\tWorld ..."]
    assert len({dedup_key(v) for v in variants}) == 1
    assert dedup_key("Grüße, KÖLN!") == "grüsse köln"  # casefold: ß is ss
    assert dedup_key("...") == "..." and dedup_key("a-b") != dedup_key("ab")
    documents = numbered(40)
    domain = TextDomain("x", tuple(documents + [d.upper() + "!!" for d in documents[:10]] + ["Doc 3 ALPHA, beta"]))
    split = split_domains([domain], validation_fraction=0.25, seed=0)[0]
    assert sorted(split.train + split.validation) == sorted(documents + ["Doc 3 ALPHA, beta"])  # first spelling kept
    keys = [dedup_key(d) for d in split.train + split.validation]
    assert len(keys) == len(set(keys))


def test_no_english_validation_fortune_is_a_training_fortune_respelt() -> None:
    source = TEXT_DOMAINS["en"]
    if not source.folder.is_dir():
        pytest.skip(f"needs the Debian package {source.package}: apt-get install -y {source.package}")
    split = split_domains(["en"], seed=0)[0]
    trained = {dedup_key(d) for d in split.train}
    assert not [d for d in split.validation if dedup_key(d) in trained]


def test_windows_count_the_bytes_they_predict_for_any_tokenizer() -> None:
    """Bits per byte need each window's UTF-8 bytes: one per byte token (the end of a document one too),
    a BPE token's whole byte string."""
    documents = [f"{GERMAN} {i}" for i in range(30)]
    stream = text_stream([TextDomain("de", tuple(documents))], context=16, validation_fraction=0.2, seed=0)
    info = stream[0].info
    assert info["bytes"] == info["tokens"] and info["validation_bytes"] == info["validation_tokens"]
    assert validation_bytes_per_token(stream) == [1.0]
    ascii_documents = tuple(numbered(60, "the quick brown fox jumps over the lazy dog"))
    bpe = BPETokenizer.train(ascii_documents, vocab_size=300)
    lengths = token_bytes(bpe)
    assert lengths[bpe.eos_id] == 1 and lengths.max() > 1
    windows = text_stream([TextDomain("en", ascii_documents)], tokenizer=bpe, context=8, seed=0)[0].test.x
    for window, count in zip(windows, window_bytes(windows, bpe), strict=True):
        targets = window[1:].tolist()
        assert count == len(bpe.decode(targets).encode("utf-8")) + targets.count(bpe.eos_id)
    bpe_stream = text_stream([TextDomain("en", ascii_documents)], tokenizer=bpe, context=8, seed=0)
    ratio = validation_bytes_per_token(bpe_stream)[0]
    assert ratio == bpe_stream[0].info["validation_bytes"] / bpe_stream[0].info["validation_tokens"] and ratio > 1.5


def test_budgets_give_exact_window_counts_and_one_line_errors() -> None:
    """Ten documents of 9 characters are 10 byte tokens each with their end-of-document id; two go to
    validation, eight (80 tokens) to training."""
    domain = TextDomain("tiny", tuple(f"document{i}" for i in range(10)))
    stream = text_stream([domain], context=8, train_tokens=40, validation_tokens=8, validation_fraction=0.2)
    experience = stream[0]
    assert tuple(experience.train.x.shape) == (5, 9) and tuple(experience.test.x.shape) == (1, 9)
    windows = experience.train.x
    assert windows.dtype == torch.long and bool((windows[:-1, -1] == windows[1:, 0]).all())
    assert experience.info == {"documents": 8, "documents_used": 5, "tokens": 40, "bytes": 40,
                               "validation_documents": 2, "validation_documents_used": 1, "validation_tokens": 8,
                               "validation_bytes": 8}
    assert (stream.objective, stream.vocab_size, stream.input_shape) == ("language_model", 257, (9,))
    assert experience.classes == (0,) and experience.name == "tiny" and stream.n_classes == 1 and not stream.task_aware
    with pytest.raises(DataError) as error:
        text_stream([domain], context=8, train_tokens=80, validation_fraction=0.2)
    assert str(error.value) == ("text domain 'tiny' has 80 training tokens in 8 documents, fewer than the 81 that "
                                "scenario.train_tokens=80 needs at context 8; lower scenario.train_tokens or add "
                                "documents")
    with pytest.raises(DataError, match="has 20 validation tokens in 2 documents, fewer than one window of 33"):
        text_stream([domain], context=32, train_tokens=32, validation_fraction=0.2)
    with pytest.raises(ConfigError, match="scenario.train_tokens must be >= context"):
        text_stream([domain], context=8, train_tokens=4)


def test_two_domains_label_windows_by_domain_and_seed_orders_documents() -> None:
    english = TextDomain("en", tuple(numbered(40)))
    german = TextDomain("de", tuple(f"{GERMAN} {i}" for i in range(40)))
    stream = text_stream([english, german], context=16, train_tokens=64)
    assert [e.name for e in stream] == ["en", "de"] and stream.n_classes == 2
    assert stream[1].train.y.tolist() == [1] * 4 and stream[1].test.task.unique().tolist() == [1]
    again = text_stream([english, german], context=16, train_tokens=64)
    other = text_stream([english, german], context=16, train_tokens=64, seed=1)
    assert torch.equal(stream[1].train.x, again[1].train.x) and not torch.equal(stream[1].train.x, other[1].train.x)
    assert "Köln" in ByteTokenizer().decode(stream[1].train.x[0].tolist())


def test_a_missing_package_names_its_install_line(tmp_path: Path) -> None:
    source = TextSource("fortunes-xx", tmp_path / "absent", read_fortunes, "nothing")
    with pytest.raises(DataError) as error:
        source.domain("xx")
    assert str(error.value) == (f"text domain 'xx' needs the package fortunes-xx (no text in {tmp_path / 'absent'}); "
                                "install it with `apt-get install -y fortunes-xx`")


def config_file(tmp_path: Path, domains: list[str]) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(f"[dataset]\nname = 'text'\ndomains = {domains!r}\n[scenario]\nname = 'text_domains'\n"
                    "context = 16\ntrain_tokens = 64\n[model]\nname = 'gpt'\nd_model = 16\nn_layers = 1\n"
                    "n_heads = 2\n[strategy]\nname = 'naive'\n")
    return path


def test_a_configuration_builds_the_stream_and_a_gpt_of_its_vocabulary(tmp_path: Path) -> None:
    for name, offset in (("en.txt", 0), ("de.txt", 1000)):
        (tmp_path / name).write_text("\n\n".join(numbered(30, f"words {offset}")), encoding="utf-8")
    path = config_file(tmp_path, [str(tmp_path / "en.txt"), str(tmp_path / "de.txt")])
    config = load_config(str(path), [])
    stream = build_stream(config)
    assert [e.name for e in stream] == ["en", "de"] and stream.input_shape == (17,)
    model = build_model(config, stream)
    assert model.lm_head.weight.shape == (257, 16)
    with pytest.raises(ConfigError) as error:
        build_stream(load_config(str(path), ["scenario.name=class_incremental"]))
    assert "\n" not in str(error.value) and "scenario.name='text_domains'" in str(error.value)
    with pytest.raises(ConfigError, match="model.vocab_size: unknown field"):
        build_model(load_config(str(path), ["model.vocab_size=3"]), stream)


def test_text_domains_refuses_an_image_dataset(small_data) -> None:
    with pytest.raises(ConfigError, match="needs dataset.name='text'"):
        SCENARIOS["text_domains"](small_data)


def test_text_domains_reads_corpus_built_by_the_dataset() -> None:
    corpus = text([TextDomain("x", tuple(numbered(20)))])
    assert text_domains(corpus, context=8, train_tokens=16)[0].train.x.shape == (2, 9)


@pytest.mark.parametrize("name", ["en", "de"])
def test_debian_fortunes_make_a_stream(name: str) -> None:
    source = TEXT_DOMAINS[name]
    if not source.folder.is_dir():
        pytest.skip(f"needs the Debian package {source.package}: apt-get install -y {source.package}")
    stream = text_stream([name], context=64, train_tokens=4096, validation_tokens=1024)
    info = stream[0].info
    assert info["documents"] > 5000 and info["validation_documents"] > 500  # 13.6k / 1.5k (en), 16.8k / 1.9k (de)
    assert (info["tokens"], info["validation_tokens"]) == (4096, 1024)
    if name == "de":
        text_of = ByteTokenizer().decode(stream[0].train.x.reshape(-1).tolist())
        assert any(ch in text_of for ch in "äöüßÄÖÜ")
