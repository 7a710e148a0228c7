"""Language-model streams on the runner: the loss matrix, its metrics, replay mixtures and refusals.

Two generated token domains a bigram model can learn exactly: in domain 0 each token is followed by the
next one (``t -> t + 1 mod V``), in domain 1 by the third next (``t -> t + 3 mod V``). The same
previous token predicts different next tokens in the two domains, so learning one overwrites the other:
naive continuation forgets, and replaying earlier windows keeps the first domain's loss low.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lifelong import OptimConfig, train
from lifelong.data.streams import Experience, Stream, TensorSet
from lifelong.errors import ConfigError
from lifelong.metrics.objectives import count_model_loss, loss_summary
from lifelong.strategies import STRATEGIES
from lifelong.strategies.replay import ReplayMixture

VOCAB, CONTEXT = 12, 8


class Bigram(nn.Module):
    """Logits of the next token from the current one alone: (B, L) -> (B, L, V)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 16)
        self.out = nn.Linear(16, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.embedding(tokens))


def windows(step: int, n: int, seed: int) -> torch.Tensor:
    """``n`` windows of ``CONTEXT + 1`` tokens following ``t -> t + step mod VOCAB`` from random starts."""
    starts = torch.randint(0, VOCAB, (n, 1), generator=torch.Generator().manual_seed(seed))
    return (starts + step * torch.arange(CONTEXT + 1)) % VOCAB


def token_stream(n: int = 96) -> Stream:
    experiences = []
    for domain, step in enumerate((1, 3)):
        train_set = TensorSet.of(windows(step, n, seed=domain), torch.full((n,), domain), domain)
        test_set = TensorSet.of(windows(step, 32, seed=10 + domain), torch.full((32,), domain), domain)
        experiences.append(Experience(train_set, test_set, (domain,), domain, name=f"step{step}"))
    return Stream(tuple(experiences), n_classes=2, input_shape=(CONTEXT + 1,), name="tokens",
                  objective="language_model", vocab_size=VOCAB)


OPTIM = OptimConfig(name="adam", lr=0.05, epochs=3, batch_size=16)


def run(strategy_name: str, seed: int = 0, **settings: object):
    torch.manual_seed(seed)
    return train(token_stream(), Bigram(), STRATEGIES[strategy_name](**settings), OPTIM, seed=seed, device="cpu")


def test_loss_summary_on_a_hand_made_matrix_keeps_the_accuracy_signs() -> None:
    # domain 0's loss is 1.0 after its training and 3.0 after domain 1's: forgetting 2.0 nats, BWT -2.0
    metrics = loss_summary([[1.0, 4.0], [3.0, 0.5]], initial=[5.0, 5.0], test_sizes=[10, 10])
    assert metrics["final_loss"] == pytest.approx(1.75)
    assert metrics["final_losses"] == [3.0, 0.5]
    assert metrics["final_perplexity"] == pytest.approx(math.exp(1.75))
    assert metrics["forgetting"] == pytest.approx(2.0)
    assert metrics["backward_transfer"] == pytest.approx(-2.0)
    assert metrics["forward_transfer"] == pytest.approx(1.0)  # domain 1's loss fell from 5.0 to 4.0 before training
    assert metrics["average_loss"] == pytest.approx((1.0 + 1.75) / 2)


def test_loss_summary_reports_bits_per_byte_given_the_bytes_per_token() -> None:
    """Issue 25: nats per token do not compare a BPE run with a byte run; bits per byte do. Domain 0 in
    byte tokens (1 byte each), domain 1 in BPE tokens of 4 bytes on average."""
    matrix = [[1.0, 4.0], [3.0 * math.log(2), 8.0 * math.log(2)]]
    metrics = loss_summary(matrix, initial=[5.0, 5.0], test_sizes=[10, 10], bytes_per_token=[1.0, 4.0])
    assert metrics["final_bits_per_byte_by_domain"] == pytest.approx([3.0, 2.0])
    assert metrics["final_bits_per_byte"] == pytest.approx(2.5)
    assert "final_bits_per_byte" not in loss_summary(matrix, initial=[5.0, 5.0], test_sizes=[10, 10])


def test_count_models_by_hand() -> None:
    """The unigram and bigram baselines of the pre-training benchmark, add-one smoothed over V = 3."""
    train = torch.tensor([[0, 1, 1], [1, 1, 2]])  # predicted: 1, 1 (after 0, 1) and 1, 2 (after 1, 1)
    test = torch.tensor([[1, 1, 2]])  # predicts 1 after 1 and 2 after 1
    # unigram counts (0, 3, 1) of 4: P(1) = 4/7, P(2) = 2/7
    assert count_model_loss(train, test, 3, order=0) == pytest.approx(-(math.log(4 / 7) + math.log(2 / 7)) / 2)
    # after 1: counts (0, 2, 1) of 3, so P(1 | 1) = 3/6 and P(2 | 1) = 2/6
    assert count_model_loss(train, test, 3, order=1) == pytest.approx(-(math.log(3 / 6) + math.log(2 / 6)) / 2)
    with pytest.raises(ValueError, match="order 0"):
        count_model_loss(train, test, 3, order=2)


def test_a_token_stream_gives_a_loss_matrix_and_naive_continuation_forgets() -> None:
    result = run("naive")
    assert result.matrix.shape == (2, 2)
    assert result.initial[0] == pytest.approx(math.log(VOCAB), abs=0.3)  # an untrained model is near uniform
    assert result.matrix[0, 0] < 0.2  # domain 0 learned
    assert result.matrix[1, 1] < 0.2  # domain 1 learned
    assert result.matrix[1, 0] > result.matrix[0, 0] + 1.0  # and domain 0 forgotten
    assert result.metrics["forgetting"] == pytest.approx(result.matrix[1, 0] - result.matrix[0, 0])
    tokens = sum(cost.samples for cost in result.costs) * CONTEXT
    assert result.metrics["tokens"] == tokens
    assert result.metrics["replayed_tokens"] == 0


@pytest.mark.parametrize("name", ["replay", "er", "ewc", "l2", "lwf"])
def test_each_language_model_strategy_forgets_less_than_naive(name: str) -> None:
    # the bigram fits domain 0 almost exactly, so its Fisher (the expected squared gradient under its own
    # near-certain predictions) is tiny and EWC needs a large lam to hold the weights
    settings = {"replay": {"replay_fraction": 0.25, "buffer_size": 64}, "er": {"buffer_size": 64},
                "ewc": {"lam": 1e6}, "l2": {"lam": 1.0}, "lwf": {"alpha": 1.0}}[name]
    naive = run("naive").metrics["forgetting"]
    kept = run(name, **settings)
    assert kept.metrics["forgetting"] < 0.7 * naive, (name, kept.metrics["forgetting"], naive)


def test_replay_mixture_replays_an_exact_share_of_each_batch() -> None:
    mixture = ReplayMixture(replay_fraction=0.25)
    assert [mixture.replay_rows(16) for _ in range(3)] == [4, 4, 4]
    mixture = ReplayMixture(replay_fraction=0.01)
    counts = [mixture.replay_rows(16) for _ in range(100)]
    assert set(counts) == {0, 1} and sum(counts) == 16  # 1 % of 1,600 rows, each batch its whole part owed
    assert [i for i, c in enumerate(counts) if c][:3] == [6, 12, 18]  # 16 * 7 / 100 = 1.12: the 7th batch
    result = run("replay", replay_fraction=0.25, buffer_size=64)
    first, second = result.costs
    assert first.replayed == 0  # nothing earlier to replay in the first experience
    assert second.replayed == second.steps * 4  # a quarter of every batch of 16 (96 windows: 6 full batches)
    assert result.metrics["replayed_tokens"] == second.replayed * CONTEXT


def test_a_strategy_defined_on_class_labels_is_refused_on_a_token_stream() -> None:
    with pytest.raises(ConfigError, match="cannot train a language model stream.*naive") as error:
        train(token_stream(), Bigram(), STRATEGIES["icarl"](), OPTIM, device="cpu")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("setting", [{"sampler": "hard_batch"}, {"batch_size_test": "norm"}, {"batch_size": "probe"}])
def test_classifier_only_optimization_settings_are_refused_on_a_token_stream(setting: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="not defined for a language model"):
        train(token_stream(), Bigram(), STRATEGIES["naive"](), OPTIM.model_copy(update=setting), device="cpu")


def test_a_model_with_the_wrong_vocabulary_is_refused() -> None:
    model = nn.Sequential(nn.Embedding(VOCAB, 8), nn.Linear(8, VOCAB + 1))
    with pytest.raises(Exception, match=f"expected \\(2, {CONTEXT}, {VOCAB}\\)"):
        train(token_stream(), model, STRATEGIES["naive"](), OPTIM, device="cpu")


def test_the_evaluation_curve_measures_the_stability_gap_as_a_rise_in_loss() -> None:
    torch.manual_seed(0)
    result = train(token_stream(), Bigram(), STRATEGIES["naive"](), OPTIM, seed=0, device="cpu", eval_every_steps=3)
    gap = result.extra["stability_gaps"][0]
    assert gap["depth"] > 1.0  # domain 0's loss rises by more than a nat while domain 1 trains
    assert gap["peak_mean_loss"] == pytest.approx(gap["loss_before"] + gap["depth"])
    assert result.metrics["stability_gap"] == pytest.approx(gap["depth"])


def test_a_decayed_branch_is_evaluated_while_the_run_continues_from_the_undecayed_weights() -> None:
    """The branch-off (Hägele et al. 2024): the matrix rows are the branch's, whose decay lowers the loss;
    the cost counts its steps; and the run itself never sees the branch: its weights at the end are those
    of a run without branches, bit for bit (model, optimizer, strategy, draws and random states are all
    restored after each branch is evaluated)."""
    models = []
    results = []
    for update in ({}, {"branch_decay": 0.5}):
        torch.manual_seed(0)
        models.append(Bigram())
        results.append(train(token_stream(), models[-1], STRATEGIES["replay"](replay_fraction=0.25, buffer_size=64),
                             OPTIM.model_copy(update=update), seed=0, device="cpu"))
    plain, branched = results
    steps = [cost.steps for cost in plain.costs]
    assert [cost.steps for cost in branched.costs] == [s + round(0.5 * s) for s in steps]
    # the branch's batches of 16 replay a quarter too: its 9 steps' 36 rows on top of the run's own
    assert branched.costs[1].replayed - plain.costs[1].replayed == 4 * round(0.5 * steps[1])
    assert branched.matrix[0, 0] < plain.matrix[0, 0]  # the annealed copy fits domain 0 better
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_compiled_language_model_warms_up_on_windows_it_can_read() -> None:
    """``run.compile`` warms the model up on a first batch: a language model's inputs are the windows
    without their last token (the whole window would overrun the GPT's context of 16)."""
    from tests.runner.test_text_runs import stream, tiny_gpt

    results = []
    for backend in (False, "eager"):
        text = stream()
        torch.manual_seed(0)
        results.append(train(text, tiny_gpt(text), STRATEGIES["naive"](), OptimConfig(epochs=1), seed=0,
                             device="cpu", compile=backend))
    assert results[1].matrix.tolist() == results[0].matrix.tolist()
