"""Continual pre-training end to end on generated text: a two-domain run through the Python API and
through the command line, and a text run killed with SIGKILL and resumed, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lifelong import OptimConfig, ResultsStore, train
from lifelong.cli import main
from lifelong.data.corpora import TextDomain
from lifelong.data.text import text_stream
from lifelong.models.gpt import gpt
from lifelong.strategies import STRATEGIES
from tests.runner.test_checkpoint_resume import resumed_and_reference


def documents(alphabet: str, count: int, seed: int) -> tuple[str, ...]:
    """``count`` documents of words over ``alphabet``, each word a letter repeated: text a small model
    learns within a few steps, and whose letters tell the domain."""
    generator = np.random.default_rng(seed)
    return tuple(" ".join(letter * int(generator.integers(1, 4)) for letter in generator.choice(list(alphabet), 12))
                 for _ in range(count))


DOMAINS = [TextDomain("abc", documents("abc", 60, 0)), TextDomain("xyz", documents("xyz", 60, 1))]


def stream():
    return text_stream(DOMAINS, context=16, train_tokens=1600, validation_tokens=400, seed=0)


def tiny_gpt(text):
    return gpt(text.input_shape, text.n_classes, text.vocab_size, d_model=32, n_layers=1, n_heads=2)


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


def test_two_text_domains_through_the_command_line(tmp_path, capsys) -> None:
    for domain in DOMAINS:
        (tmp_path / f"{domain.name}.txt").write_text("\n\n".join(domain.documents))
    (tmp_path / "text.toml").write_text(f'''
[dataset]
name = "text"
domains = ["{tmp_path / 'abc.txt'}", "{tmp_path / 'xyz.txt'}"]
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
''')
    db = tmp_path / "runs.db"
    assert main(["run", "--config", str(tmp_path / "text.toml"), "--set", f"run.db={db}"]) == 0
    printed = capsys.readouterr().out
    assert "loss matrix" in printed and "final_perplexity" in printed
    record = ResultsStore(db).get(1)
    assert record.status == "finished" and np.asarray(record.rows).shape == (2, 2)
    assert record.metrics["replayed_tokens"] > 0
    assert record.config["strategy"]["replay_fraction"] == 0.25


def test_a_text_run_killed_with_sigkill_resumes_bit_for_bit(tmp_path) -> None:
    text = stream()
    optim = OptimConfig(name="adam", lr=0.01, epochs=2, batch_size=16, reset_per_experience=False)
    settings = {"replay": {"replay_fraction": 0.25, "buffer_size": 40}}
    # 100 windows a domain: 7 steps an epoch, 14 a domain; killed in the second domain, after the checkpoint
    # of step 18 (every 3 steps), with replayed windows in its batches since
    resumed, _, reference, _ = resumed_and_reference(text, "replay", tmp_path, settings, kill_at=20,
                                                     model_for=tiny_gpt, optim=optim)
    assert [c.replayed for c in resumed.costs] == [c.replayed for c in reference.costs]
    # a quarter of each batch: 4 of the 6 full batches of 16 an epoch, 1 of its last batch of 4
    assert [c.steps for c in reference.costs] == [14, 14] and reference.costs[1].replayed == 2 * (6 * 4 + 1)
