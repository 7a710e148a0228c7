"""Hugging Face models from a local folder (``model.name = "hf"``): tiny randomly initialised ViT, ConvNeXt,
GPT-2 and Llama models saved with ``save_pretrained`` into a temporary folder, then read back by the library:
the split into backbone and head equal to transformers' own forward, prefixes and prompts reaching a ViT's
attention (by hand), the prompt methods refusing a model without such attention in one line, class-incremental
digits through ``lifelong pretrain`` and ``lifelong run`` (NCM, RanPAC, L2P, LoRA), text domains with naive and
replay, ``run.save_pretrained`` round trips, exact resume, and the one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lifelong import OptimConfig, ResultsStore, class_incremental, mlp, train
from lifelong.cli import main
from lifelong.config import load_config
from lifelong.data.text import text_stream
from lifelong.errors import ConfigError, LifelongError, MissingFileError
from lifelong.experiment import check_save_settings, prepare, resolve_config, run_config
from lifelong.models.hf import HFCausalLM, hf, prefixed_attention, save_pretrained
from lifelong.models.vit import Prefix
from lifelong.protocol.seeds import run_seeds
from lifelong.strategies import L2P, NCM
from tests.runner.test_checkpoint_resume import resumed_and_reference

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

EOS = "<|endoftext|>"
DIGITS = (1, 8, 8)
"""The shape of scikit-learn's digits: the tiny ViT reads 8x8 images in 4x4 patches."""


def vit_config(num_labels: int = 10) -> object:
    return transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32, num_labels=num_labels)


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory) -> Path:
    """A randomly initialised ``ViTForImageClassification`` of 10 labels, saved."""
    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    transformers.ViTForImageClassification(vit_config()).save_pretrained(folder)
    return folder


def documents(alphabet: str, count: int, seed: int) -> list[str]:
    """``count`` documents of words over ``alphabet``, each word a letter repeated (as in
    tests/runner/test_text_runs.py): text a tiny model learns in a few steps."""
    generator = np.random.default_rng(seed)
    return [" ".join(letter * int(generator.integers(1, 4)) for letter in generator.choice(list(alphabet), 12))
            for _ in range(count)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """Two text domains as files, 100 documents each."""
    folder = tmp_path_factory.mktemp("text")
    files = folder / "abc.txt", folder / "xyz.txt"
    for file, (alphabet, seed) in zip(files, (("abc", 0), ("xyz", 1)), strict=True):
        file.write_text("\n\n".join(documents(alphabet, 100, seed)))
    return files


def tokenizer() -> object:
    """A byte-level BPE trained here on both domains (287 tokens: the text has no more pairs to merge before the
    asked 300), wrapped as transformers' tokenizer."""
    pre = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend = tokenizers.Tokenizer(tokenizers.models.BPE())
    backend.pre_tokenizer, backend.decoder = pre, tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS], initial_alphabet=pre.alphabet(),
                                             show_progress=False)
    backend.train_from_iterator(documents("abc", 60, 0) + documents("xyz", 60, 1), trainer=trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS)


@pytest.fixture(scope="module")
def lm_folders(tmp_path_factory) -> dict[str, Path]:
    """A tiny ``GPT2LMHeadModel`` (300 embedding rows) and a tiny ``LlamaForCausalLM`` (grouped-query attention,
    304 rows), each saved with the tokenizer (287 tokens) beside it."""
    text_tokenizer = tokenizer()
    eos = text_tokenizer.eos_token_id
    torch.manual_seed(0)
    models = {"gpt2": transformers.GPT2LMHeadModel(transformers.GPT2Config(
                  vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=eos, eos_token_id=eos)),
              "llama": transformers.LlamaForCausalLM(transformers.LlamaConfig(
                  vocab_size=304, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=32, bos_token_id=eos, eos_token_id=eos))}
    folders = {}
    for name, model in models.items():
        folders[name] = tmp_path_factory.mktemp(name)
        model.save_pretrained(folders[name])
        text_tokenizer.save_pretrained(folders[name])
    return folders


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_split_model_computes_what_transformers_computes(vit_folder) -> None:
    """Backbone and head are the classifier's own modules: the same logits as transformers' forward, the state
    dict holds each tensor once (under backbone. and head.), and a new head (5 classes, not the folder's 10) is
    a function of the seed alone."""
    model = hf(DIGITS, 10, path=str(vit_folder), seed=0)
    reference = transformers.ViTForImageClassification.from_pretrained(vit_folder)
    x = torch.randn(4, *DIGITS)
    assert torch.allclose(model(x), reference(pixel_values=x).logits, atol=1e-6)
    assert torch.equal(model.head.weight, reference.classifier.weight)  # 10 labels: the folder's head is kept
    state = model.state_dict()
    assert len(state) == len(reference.state_dict()) and all(k.split(".")[0] in ("backbone", "head") for k in state)
    assert model.backbone.depth == 2 and model.backbone.dim == 16 and model.backbone.prompt_refusal() == ""
    five, again = hf(DIGITS, 5, path=str(vit_folder), seed=3), hf(DIGITS, 5, path=str(vit_folder), seed=3)
    assert five.head.out_features == 5 and torch.equal(five.head.weight, again.head.weight)
    assert not torch.equal(five.head.weight, hf(DIGITS, 5, path=str(vit_folder), seed=4).head.weight)


def heads(tokens: torch.Tensor) -> torch.Tensor:
    """(3, L, 16) -> (3, 2, L, 8): the tiny ViT's two heads."""
    return tokens.view(3, -1, 2, 8).transpose(1, 2)


def test_a_prefix_goes_before_the_keys_and_values_of_its_block_only(vit_folder) -> None:
    """By hand: the registered attention with a prefix is SDPA over [prefix keys; keys] and [prefix values;
    values]; without a prompted forward it is plain SDPA. On the ViT, a prefix on block 1 alone changes the
    features, a zero prompt adds one token to the sequence, and the plain forward is untouched afterwards."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=generator) for _ in range(3))  # (B, H, N, D / H)
    module = torch.nn.Module()
    module.is_causal = False
    plain, _ = prefixed_attention(module, q, k, v, None, dropout=0.0, scaling=8 ** -0.5)
    assert torch.allclose(plain, F.scaled_dot_product_attention(q, k, v).transpose(1, 2), atol=1e-6)
    model = hf(DIGITS, 10, path=str(vit_folder))
    x = torch.randn(3, *DIGITS, generator=generator)
    key, value = torch.randn(3, 2, 16, generator=generator), torch.randn(3, 2, 16, generator=generator)  # (B, L, D)
    with torch.no_grad():
        before = model.backbone(x)
        prefixed = model.backbone(x, prefixes={1: Prefix(key, value)})
        prompted = model.backbone.tokens(x, prompts=torch.zeros(3, 7, 16))
        after = model.backbone(x)
    assert not torch.allclose(prefixed, before, atol=1e-4) and torch.equal(after, before)
    assert prompted.shape == (3, 1 + 7 + 4, 16)
    # block 1's attention by hand: its input is block 0's output, the prefix's 2 tokens split into the 2 heads
    # of 8 and put before the 5 tokens' own keys and values; the model computed the same
    layer, captured = model.backbone.model.layers[1], {}
    attention = layer.attention
    hooks = [layer.register_forward_pre_hook(lambda _, args: captured.update(input=args[0])),
             attention.register_forward_hook(lambda _, args, output: captured.update(output=output[0]))]
    with torch.no_grad():
        model.backbone(x, prefixes={1: Prefix(key, value)})
        for hook in hooks:
            hook.remove()
        hidden = layer.layernorm_before(captured["input"])  # (3, 5, 16)
        q = heads(attention.q_proj(hidden))
        k = torch.cat([heads(key), heads(attention.k_proj(hidden))], dim=2)  # (3, 2, 2 + 5, 8)
        v = torch.cat([heads(value), heads(attention.v_proj(hidden))], dim=2)
        by_hand = attention.o_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, 5, 16))
    assert torch.allclose(captured["output"], by_hand, atol=1e-6)


def test_convnext_trains_with_ncm_and_the_prompt_methods_refuse_it_in_one_line(tmp_path, digits_data) -> None:
    config = transformers.ConvNextConfig(num_channels=1, patch_size=2, num_stages=2, hidden_sizes=[8, 16],
                                         depths=[1, 1], num_labels=10)
    torch.manual_seed(0)
    transformers.ConvNextForImageClassification(config).save_pretrained(tmp_path)
    stream = class_incremental(digits_data, 5)
    model = hf(DIGITS, 10, path=str(tmp_path))
    result = train(stream, model, NCM(adapt_experiences=0), OptimConfig(epochs=1), seed=0)
    assert result.metrics["final_accuracy"] > 0.2  # class means of random convolutional features; chance 0.1
    with pytest.raises(ConfigError) as error:
        train(stream, hf(DIGITS, 10, path=str(tmp_path)), L2P(), OptimConfig(epochs=1))
    message = str(error.value)
    assert "\n" not in message and "ConvNextForImageClassification has no attention layer going through " \
        "transformers' AttentionInterface" in message and message.startswith("strategy 'l2p' prompts")


@pytest.fixture(scope="module")
def pretrained(vit_folder, tmp_path_factory) -> Path:
    """``lifelong pretrain`` of the tiny ViT on digits 0-4, written back with ``run.save_pretrained`` (no
    backbone file): the folder the continual runs start from."""
    folder = tmp_path_factory.mktemp("pretrained") / "vit-digits-0-4"
    assert main(["pretrain", "--set", "model.name=hf", "--set", f"model.path={vit_folder}", "--set",
                 "optim.name=adam", "--set", "optim.lr=0.003", "--set", "optim.epochs=10", "--set",
                 "optim.batch_size=32", "--classes", "0-4", "--set", f"run.save_pretrained={folder}"]) == 0
    return folder


METHODS = {"ncm": ["strategy.adapt_experiences=0"], "ranpac": ["strategy.adapt_experiences=0"], "l2p": [],
           "lora": []}
"""The class-incremental methods run from the pretrained folder, with their settings."""


@pytest.fixture(scope="module")
def digits_runs(pretrained, tmp_path_factory) -> dict[str, object]:
    """Each method of :data:`METHODS` on class-incremental digits (5 experiences of 2 classes) from the pretrained
    folder, through ``lifelong run``."""
    db = tmp_path_factory.mktemp("runs") / "runs.db"
    for name, settings in METHODS.items():
        overrides = ["model.name=hf", f"model.path={pretrained}", f"strategy.name={name}", *settings, "optim.name=adam",
                     "optim.lr=0.003", "optim.epochs=2", "optim.batch_size=32"]
        assert main(["run", "--db", str(db), "--no-checkpoint", *(a for o in overrides for a in ("--set", o))]) == 0
    return {record.strategy: record for record in ResultsStore(db).runs()}


def test_pretrained_folder_reads_back_as_a_transformers_classifier(pretrained) -> None:
    model = transformers.AutoModelForImageClassification.from_pretrained(pretrained, local_files_only=True)
    assert type(model).__name__ == "ViTForImageClassification" and model.config.num_labels == 10


def test_class_incremental_digits_from_the_pretrained_folder(digits_runs) -> None:
    """Measured (seed 0): final accuracy ncm 0.61, ranpac 0.78, l2p 0.36, lora 0.15 (full fine-tuning of the
    same folder: 0.10); forgetting 0.03, 0.06, 0.03, 0.81. The backbone saw digits 0-4 only; chance is 0.1."""
    final = {name: record.metrics["final_accuracy"] for name, record in digits_runs.items()}
    forgetting = {name: record.metrics["forgetting"] for name, record in digits_runs.items()}
    assert final["ncm"] > 0.5 and final["ranpac"] > 0.7 and final["l2p"] > 0.3
    assert forgetting["ncm"] < 0.1 and forgetting["ranpac"] < 0.1 and forgetting["l2p"] < 0.1
    lora = np.asarray(digits_runs["lora"].rows)
    assert lora.diagonal().mean() > 0.7  # LoRA learns every experience, and (sequential tuning) forgets
    assert all(record.config["model"]["path"].endswith("vit-digits-0-4") for record in digits_runs.values())


def test_a_run_writes_its_model_back_and_the_folder_reads_back_equal(pretrained, tmp_path) -> None:
    """Full fine-tuning: the saved folder's tensors equal the trained model's, bit for bit, and the head's
    classes are in its configuration. LoRA: the folder holds the weights with the low-rank terms merged in, so
    the reloaded model computes the tuned model's logits."""
    x = torch.randn(5, *DIGITS)
    for name in ("naive", "lora"):
        folder = tmp_path / name
        config = load_config(None, ["model.name=hf", f"model.path={pretrained}", f"strategy.name={name}",
                                    "optim.epochs=1", "scenario.n_experiences=2", f"run.save_pretrained={folder}",
                                    "run.progress=false"])
        prepared = prepare(config)
        run_config(config, prepared=prepared)
        trained, reloaded = prepared[1], hf(DIGITS, 10, path=str(folder))
        assert resolve_config(config)["run"]["save_pretrained"] == str(folder)
        with torch.no_grad():
            if name == "naive":
                assert same_tensors(trained.state_dict(), reloaded.state_dict())
            else:
                assert torch.allclose(trained(x), reloaded(x), atol=1e-5)
                assert not torch.allclose(hf(DIGITS, 10, path=str(pretrained))(x), reloaded(x), atol=1e-3)
                assert torch.equal(trained.head.weight, reloaded.head.weight)


def test_a_resumed_lora_run_on_the_hugging_face_vit_is_bit_exact(pretrained, digits_data, tmp_path) -> None:
    stream = class_incremental(digits_data, 5)
    optim = OptimConfig(name="adam", lr=0.003, epochs=1, batch_size=32, reset_per_experience=False)
    # 9 steps an experience: killed in the third, after the checkpoint of step 21 (every 3 steps)
    resumed_and_reference(stream, "lora", tmp_path, {"lora": {}}, kill_at=23, optim=optim,
                          model_for=lambda s: hf(s.input_shape, s.n_classes, path=str(pretrained)))


def text_overrides(corpus: tuple[Path, Path], folder: Path, strategy: str) -> list[str]:
    return ["dataset.name=text", f'dataset.domains=["{corpus[0]}", "{corpus[1]}"]', "scenario.name=text_domains",
            "scenario.context=16", "scenario.train_tokens=800", "scenario.validation_tokens=200", "model.name=hf",
            f"model.path={folder}", f"strategy.name={strategy}", "optim.name=adam", "optim.lr=0.01", "optim.epochs=2"]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_text_domains_with_naive_and_replay_through_the_command_line(name, lm_folders, corpus, tmp_path) -> None:
    """Each domain's loss falls well below the untrained model's (ln 287 = 5.66 nats); the tokenizer is the
    folder's, stored with the run; replay replays windows; the trained LM and its tokenizer are written back."""
    db = tmp_path / "runs.db"
    for strategy in ("naive", "replay"):
        overrides = [*text_overrides(corpus, lm_folders[name], strategy), f"run.save_pretrained={tmp_path / strategy}"]
        assert main(["run", "--db", str(db), "--no-checkpoint", *(a for o in overrides for a in ("--set", o))]) == 0
    naive, replay = ResultsStore(db).runs()
    for record in (naive, replay):
        loss, initial = np.asarray(record.rows), record.initial
        assert min(initial) > 5.0 and loss[0, 0] < initial[0] - 1.0 and loss[1, 1] < initial[1] - 1.0
        assert record.config["dataset"]["tokenizer"] == str(lm_folders[name])
    assert replay.metrics["replayed_tokens"] > 0 and naive.metrics["replayed_tokens"] == 0
    saved = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "replay", local_files_only=True)
    text_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "replay", local_files_only=True)
    original = transformers.AutoModelForCausalLM.from_pretrained(lm_folders[name], local_files_only=True)
    assert text_tokenizer.encode("aa bb", add_special_tokens=False) == tokenizer().encode("aa bb")
    assert not torch.equal(saved.get_input_embeddings().weight, original.get_input_embeddings().weight)


def test_a_language_model_round_trips_and_its_logits_cover_the_tokenizer(lm_folders, corpus, tmp_path) -> None:
    """The Llama embeds 304 rows for the tokenizer's 287 tokens (its BPE ran out of pairs to merge before 300):
    its logits are cut to the tokenizer's. A trained model saved and read back holds the same tensors."""
    config = load_config(None, [*text_overrides(corpus, lm_folders["llama"], "naive"), "optim.epochs=1",
                                f"run.save_pretrained={tmp_path / 'out'}", "run.progress=false"])
    prepared = prepare(config)
    stream, trained = prepared[0], prepared[1]
    assert isinstance(trained, HFCausalLM) and stream.vocab_size == len(tokenizer()) == 287
    assert trained(torch.zeros(2, 16, dtype=torch.long)).shape == (2, 16, 287)
    assert "model.model.embed_tokens.weight" in trained.no_weight_decay()
    run_config(config, prepared=prepared)
    reloaded = hf(stream.input_shape, stream.n_classes, stream.vocab_size, path=str(tmp_path / "out"))
    assert same_tensors(trained.state_dict(), reloaded.state_dict())


def test_a_resumed_replay_run_on_a_hugging_face_gpt2_is_bit_exact(lm_folders, corpus, tmp_path) -> None:
    text = text_stream([str(corpus[0]), str(corpus[1])], tokenizer=str(lm_folders["gpt2"]), context=16,
                       train_tokens=800, validation_tokens=200)
    optim = OptimConfig(name="adam", lr=0.01, epochs=2, batch_size=16, reset_per_experience=False)
    # 50 windows a domain, 4 steps an epoch: killed in the second domain after the checkpoint of step 9
    resumed_and_reference(text, "replay", tmp_path, {"replay": {"replay_fraction": 0.25, "buffer_size": 40}},
                          kill_at=11, optim=optim,
                          model_for=lambda s: hf(s.input_shape, s.n_classes, s.vocab_size, path=str(lm_folders["gpt2"])))


def refusal(overrides: list[str]) -> str:
    """The one-line error of preparing a run of ``overrides`` (``lifelong run`` stops there, storing nothing)."""
    with pytest.raises(LifelongError) as error:
        config = load_config(None, overrides)
        check_save_settings(config, prepare(config)[1])
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_refusals_name_the_field_and_the_fix(vit_folder, lm_folders, corpus, tmp_path) -> None:
    vit = ["model.name=hf", f"model.path={vit_folder}"]
    assert "model.path: model.name='hf' loads a Hugging Face model from a local folder" in refusal(["model.name=hf"])
    with pytest.raises(MissingFileError, match="nothing is downloaded"):
        hf(DIGITS, 10, path=str(tmp_path / "google/vit-base-patch16-224"))
    snapshot = tmp_path / "models--org--vit" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((vit_folder / "config.json").read_text())
    with pytest.raises(MissingFileError, match="give one of its snapshots, e.g. .*snapshots/abc123"):
        hf(DIGITS, 10, path=str(tmp_path / "models--org--vit"))
    assert "holds a 'gpt2' model, which AutoModelForImageClassification does not load" in refusal(
        ["model.name=hf", f"model.path={lm_folders['gpt2']}"])
    assert "dataset.tokenizer: model.name='hf' reads text with the tokenizer saved beside the model" in refusal(
        [*text_overrides(corpus, lm_folders["gpt2"], "naive"), "dataset.tokenizer=byte"])
    assert "scenario.context (40) exceeds the 32 positions" in refusal(
        [*text_overrides(corpus, lm_folders["gpt2"], "naive"), "scenario.context=40"])
    assert "run.save_pretrained writes a Hugging Face model, and the model is a Classifier" in refusal(
        [f"run.save_pretrained={tmp_path / 'out'}"])
    assert "strategy 'adapter' tunes bottleneck adapters, which no weight can hold" in refusal(
        [*vit, "strategy.name=adapter", f"run.save_pretrained={tmp_path / 'out'}"])
    assert "is model.path, the folder the model is read from" in refusal([*vit, f"run.save_pretrained={vit_folder}"])
    with pytest.raises(ConfigError, match="run.save_pretrained writes one run's model, and --seeds trains several"):
        run_seeds(load_config(None, [*vit, f"run.save_pretrained={tmp_path / 'out'}"]), [0, 1])
    assert not (tmp_path / "out").exists()


def test_lifelong_and_the_default_run_never_import_transformers() -> None:
    probe = ("import sys, lifelong\nfrom lifelong.config import load_config\nfrom lifelong.experiment import prepare\n"
             "prepare(load_config(None, []))\nimport lifelong.models.hf\nprint('transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_save_pretrained_refuses_a_model_of_the_library_in_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match="writes a Hugging Face model, and the model is a Classifier"):
        save_pretrained(mlp((8,), 3), tmp_path / "out")
