"""Continual pre-training end to end on generated text: a two-domain run through the Python API and
through the command line, and a text run killed with SIGKILL and resumed, bit for bit."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lifelong import OptimConfig, ResultsStore, class_incremental, mlp, train
from lifelong.cli import main
from lifelong.data.corpora import TextDomain
from lifelong.data.text import text_stream
from lifelong.errors import ConfigError
from lifelong.models.gpt import gpt, mask_documents
from lifelong.strategies import STRATEGIES
from tests.runner.test_checkpoint_resume import resumed_and_reference


def documents(alphabet: str, count: int, seed: int) -> tuple[str, ...]:
    """``count`` documents of words over ``alphabet``, each word a letter repeated: text a small model
    learns within a few steps, and whose letters tell the domain."""
    generator = np.random.default_rng(seed)
    return tuple(" ".join(letter * int(generator.integers(1, 4)) for letter in generator.choice(list(alphabet), 12))
                 for _ in range(count))


DOMAINS = [TextDomain("abc", documents("abc", 60, 0)), TextDomain("xyz", documents("xyz", 60, 1))]
THIRD = TextDomain("mno", documents("mno", 60, 2))
"""A third domain, for runs whose replay weighs two earlier domains against each other."""


def stream(domains=DOMAINS, pack_across_documents=True):
    return text_stream(domains, context=16, train_tokens=1600, validation_tokens=400, seed=0,
                       pack_across_documents=pack_across_documents)


def tiny_gpt(text):
    """A one-block GPT for ``text``, its attention kept within documents where the stream asks for it, as
    the command line builds it (``dataset.pack_across_documents = false``)."""
    return mask_documents(gpt(text.input_shape, text.n_classes, text.vocab_size, d_model=32, n_layers=1, n_heads=2),
                          text.document_end)


def test_two_text_domains_through_the_api_learn_each_domain_and_forget_the_first() -> None:
    text = stream()
    assert text.objective == "language_model" and text.vocab_size == 257 and text.input_shape == (17,)
    torch.manual_seed(0)
    result = train(text, tiny_gpt(text), STRATEGIES["naive"](), OptimConfig(name="adam", lr=0.01, epochs=3),
                   seed=0, device="cpu")
    loss = result.matrix
    assert result.initial[0] > 5.0  # near log(257) = 5.55 untrained
    assert loss[0, 0] < 2.0 and loss[1, 1] < 2.0  # each domain learned
    assert loss[1, 0] > loss[0, 0] + 0.5  # the first forgotten: its letters are no longer predicted
    assert result.metrics["forgetting"] == pytest.approx(loss[1, 0] - loss[0, 0])
    assert result.metrics["tokens"] == 16 * sum(cost.samples for cost in result.costs)
    # throughput in predicted tokens: 16 a window, per second of each experience's training
    assert [cost.tokens for cost in result.costs] == [16 * cost.samples for cost in result.costs]
    assert all(cost.tokens_per_second == pytest.approx(cost.tokens / cost.seconds) for cost in result.costs)


def write_config(folder) -> str:
    """A text job over the two generated domains, written as files, with a replay mixture."""
    for domain in DOMAINS:
        (folder / f"{domain.name}.txt").write_text("\n\n".join(domain.documents))
    (folder / "text.toml").write_text(f'''
[dataset]
name = "text"
domains = ["{folder / 'abc.txt'}", "{folder / 'xyz.txt'}"]
[scenario]
name = "text_domains"
context = 16
train_tokens = 1600
validation_tokens = 400
[model]
name = "gpt"
d_model = 32
n_layers = 1
n_heads = 2
[strategy]
name = "replay"
replay_fraction = 0.25
buffer_size = 50
[optim]
name = "adam"
lr = 0.01
epochs = 2
[run]
db = "{folder / 'runs.db'}"
''')
    return str(folder / "text.toml")


def test_two_text_domains_through_the_command_line(tmp_path, capsys) -> None:
    assert main(["run", "--config", write_config(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "loss matrix" in printed and "final_perplexity" in printed and "tokens_per_second" in printed
    record = ResultsStore(tmp_path / "runs.db").get(1)
    cost = record.experiences[0]["cost"]
    assert cost["tokens_per_second"] == pytest.approx(cost["tokens"] / cost["seconds"]) and cost["tokens"] > 0
    assert record.status == "finished" and np.asarray(record.rows).shape == (2, 2)
    assert record.metrics["replayed_tokens"] > 0
    assert record.config["strategy"]["replay_fraction"] == 0.25


def test_seeds_and_groups_of_text_runs_report_losses(tmp_path, capsys) -> None:
    """Over seeds the headline is the final loss, and its interval is not clipped to an accuracy's range;
    tuning, which maximises an accuracy on a split of a labelled training set, is refused in one line."""
    config = write_config(tmp_path)
    assert main(["run", "--config", config, "--seeds", "0,1"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"run 1 \(seed 0\): final_loss \d\.\d{3}", printed)
    assert main(["groups", "--db", str(tmp_path / "runs.db")]) == 0
    assert re.search(r"final_loss \d\.\d{3} ± \d\.\d{3} over 2 seeds", capsys.readouterr().out)
    assert main(["tune", "--config", config, "--trials", "1"]) == 2
    error = capsys.readouterr().err
    assert "lifelong tune carves its validation split" in error and error.count("\n") == 1


@pytest.mark.parametrize(("domains", "pack_across_documents", "weights", "kill_at"), [
    (DOMAINS, True, {}, 20), ([*DOMAINS, THIRD], False, {"domain_mixture": [0.5, 0.3, 0.2]}, 35)],
    ids=["uniform replay", "within documents, domain mixture"])
def test_a_text_run_killed_with_sigkill_resumes_bit_for_bit(tmp_path, domains, pack_across_documents, weights,
                                                            kill_at) -> None:
    """100 windows a domain: 7 steps an epoch, 14 a domain, a checkpoint every 3 steps. Two domains, replayed
    uniformly: killed in the second domain after the checkpoint of step 18, with replayed windows in its
    batches since. Three domains, attention kept within documents and the replay weighed 5 : 3 between the
    first two: killed in the third after the checkpoint of step 33, when what each domain is owed of the
    replayed rows (the split of each batch's 4 alternates 3 : 1 and 2 : 2) must come back with it."""
    text = stream(domains, pack_across_documents)
    assert (text.document_end is None) == pack_across_documents
    optim = OptimConfig(name="adam", lr=0.01, epochs=2, batch_size=16, reset_per_experience=False)
    settings = {"replay": {"replay_fraction": 0.25, "buffer_size": 40, **weights}}
    resumed, _, reference, _ = resumed_and_reference(text, "replay", tmp_path, settings, kill_at=kill_at,
                                                     model_for=tiny_gpt, optim=optim)
    assert [c.replayed for c in resumed.costs] == [c.replayed for c in reference.costs]
    # a quarter of each batch: 4 of the 6 full batches of 16 an epoch, 1 of its last batch of 4
    assert [c.steps for c in reference.costs] == [14] * len(domains)
    assert [c.replayed for c in reference.costs] == [0] + [2 * (6 * 4 + 1)] * (len(domains) - 1)


def test_the_html_report_refuses_a_language_models_run_in_one_line(tmp_path, capsys) -> None:
    assert main(["run", "--config", write_config(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["report", "1", "--db", str(tmp_path / "runs.db"), "-o", str(tmp_path / "r.html")]) == 2
    error = capsys.readouterr().err
    assert "is a language model's" in error and error.count("\n") == 1
    assert main(["compare", "1", "--db", str(tmp_path / "runs.db")]) == 0
    assert "final_perplexity" in capsys.readouterr().out


def test_a_gpt_run_decays_only_its_matrices_and_reports_bits_per_byte() -> None:
    from lifelong.runner.observers import Observer

    class Groups(Observer):
        def on_optimizer(self, optimizer) -> None:
            self.groups = [(group["weight_decay"], [tuple(p.shape) for p in group["params"]])
                           for group in optimizer.param_groups]

    text, groups = stream(), Groups()
    model = tiny_gpt(text)
    train(text, model, STRATEGIES["naive"](), OptimConfig(name="adamw", lr=0.01, weight_decay=0.1, epochs=1),
          seed=0, device="cpu", observers=[groups])
    decayed = [shape for decay, shapes in groups.groups if decay > 0 for shape in shapes]
    exempt = [shape for decay, shapes in groups.groups if decay == 0 for shape in shapes]
    assert decayed and all(len(shape) == 2 for shape in decayed)  # the attention and MLP matrices only
    # biases and norms (1-D), the tied token embedding and the position embedding take none
    assert (text.vocab_size, 32) in exempt and all(len(shape) == 1 or shape in ((text.vocab_size, 32), (16, 32))
                                                   for shape in exempt)
    result = train(text, tiny_gpt(text), STRATEGIES["naive"](), OptimConfig(name="adam", lr=0.01, epochs=1),
                   seed=0, device="cpu")
    # byte tokens: one byte a token (end of document counted as one), so bits per byte = nats / ln 2
    assert result.metrics["final_bits_per_byte"] == pytest.approx(result.metrics["final_loss"] / np.log(2), rel=1e-6)


def test_a_token_budget_caps_each_domain_at_its_windows_and_is_refused_on_images(small_data) -> None:
    text = stream()  # windows of 17 tokens: 16 predicted each
    torch.manual_seed(0)
    result = train(text, tiny_gpt(text), STRATEGIES["naive"](),
                   OptimConfig(name="adam", lr=0.01, epochs=3, batch_size=4, max_tokens=[16 * 10, 16 * 22]), seed=0)
    # 10 and 22 windows: the budget ends each domain at its windows, never beyond
    assert [cost.samples for cost in result.costs] == [8, 20]  # batches of 4: 10 -> 8, 22 -> 20 (a step never exceeds)
    assert [cost.tokens for cost in result.costs] == [8 * 16, 20 * 16]
    with pytest.raises(ConfigError, match="max_tokens budgets a language model"):
        train(class_incremental(small_data, 2), mlp((8,), 6, hidden=(8,)), STRATEGIES["naive"](),
              OptimConfig(max_tokens=100))
    with pytest.raises(ConfigError, match="less than one window's 16 predicted tokens"):
        train(text, tiny_gpt(text), STRATEGIES["naive"](), OptimConfig(name="adam", max_tokens=10))
