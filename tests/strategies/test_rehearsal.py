import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import bounds_of
from lifelong.config import Component, build, parameters
from lifelong.data import class_incremental
from lifelong.errors import ConfigError
from lifelong.models import mlp
from lifelong.strategies import AGEM, DER, ER, ERACE, STRATEGIES, UER, DERpp, GDumb
from lifelong.strategies.agem import project
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.er_ace import incoming_class_logits
from lifelong.strategies.parts.contrastive import cosine_logits


def linear_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 6))


def test_er_ace_new_batch_ignores_the_logits_of_absent_classes(small_data) -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    masked = incoming_class_logits(logits, torch.tensor([1, 2]))
    # only classes 1 and 2 compete: softmax over (2, 3)
    assert F.cross_entropy(masked, torch.tensor([2])).item() == pytest.approx(-torch.log_softmax(
        torch.tensor([2.0, 3.0]), 0)[1].item())
    stream = class_incremental(small_data, 2)
    model, strategy = linear_model(), ERACE(buffer_size=0)
    strategy.setup(StrategyContext(stream, 0))
    batch = stream[1].train.batch()  # classes 3, 4, 5
    before = strategy.observe(model, batch).item()
    with torch.no_grad():
        model[1].bias[:3] += 10.0  # old-class logits rise: the incoming loss does not see them
    assert strategy.observe(model, batch).item() == pytest.approx(before, abs=1e-5)


def test_der_matches_stored_logits_and_derpp_adds_replayed_labels(small_data) -> None:
    stream = class_incremental(small_data, 2)
    batch = stream[0].train.batch()
    model = linear_model()
    der = DER(buffer_size=500, alpha=0.5)
    der.setup(StrategyContext(stream, 0))
    plain = F.cross_entropy(model(batch.x), batch.y).item()
    assert der.observe(model, batch).item() == pytest.approx(plain)  # empty memory: cross-entropy only
    assert torch.allclose(der.memory.contents()["logits"], model(batch.x).detach())
    # the model has not changed, so its logits equal the stored ones: no matching penalty
    assert der.observe(model, batch).item() == pytest.approx(plain, abs=1e-6)
    with torch.no_grad():
        model[1].bias += 2.0  # every logit moves by 2: squared error 4 per entry
    moved = F.cross_entropy(model(batch.x), batch.y).item()
    assert der.observe(model, batch).item() == pytest.approx(moved + 0.5 * 4.0, abs=1e-5)

    derpp = DERpp(buffer_size=500, alpha=0.0, beta=2.0)
    derpp.setup(StrategyContext(stream, 0))
    derpp.observe(model, batch)
    # memory holds the whole batch; with alpha 0 the loss is CE(new) + 2 * CE(replayed labels), both the same set
    assert derpp.observe(model, batch).item() == pytest.approx(3 * moved, abs=1e-5)


def test_gdumb_resets_the_model_and_trains_on_a_balanced_memory(small_data) -> None:
    stream = class_incremental(small_data, 2)
    model, strategy = linear_model(), GDumb(buffer_size=12, memory_passes=3)
    strategy.setup(StrategyContext(stream, 0))
    initial = model[1].weight.detach().clone()
    strategy.before_experience(model, stream[0])
    assert len(strategy.training_set(stream[0])) == 36  # 12 samples, 3 passes
    strategy.after_experience(model, stream[0])  # the runner's order: the next experience is offered anew
    with torch.no_grad():
        model[1].weight += 1.0
    strategy.before_experience(model, stream[1])
    assert torch.equal(model[1].weight, initial)  # retrained from scratch
    strategy.training_set(stream[1])
    assert strategy.memory.class_counts() == {c: 2 for c in range(6)}


def test_agem_projection_by_hand_and_non_negative_dot_product_after_backward(small_data) -> None:
    reference = torch.tensor([-1.0, 1.0])
    # g . ref = -1 < 0: g - (-1 / 2) ref = (0.5, 0.5), orthogonal to ref
    assert project(torch.tensor([1.0, 0.0]), reference).tolist() == [0.5, 0.5]
    assert project(torch.tensor([0.0, 2.0]), reference).tolist() == [0.0, 2.0]  # already agrees

    stream = class_incremental(small_data, 2)
    model, strategy = linear_model(), AGEM(buffer_size=100, reference_batch_size=100)
    strategy.setup(StrategyContext(stream, 0))
    strategy.observe(model, stream[0].train.batch())
    assert strategy.reference is None and len(strategy.memory) == 0  # the memory holds earlier experiences only
    strategy.after_experience(model, stream[0])  # the first experience enters the memory when it ends
    loss = strategy.observe(model, stream[1].train.batch())
    loss.backward()
    raw = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.dot(raw, strategy.reference) < 0  # learning the new classes hurts the old ones
    strategy.after_backward(model)
    projected = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.dot(projected, strategy.reference).item() >= -1e-5


def test_uer_cosine_logits_ignore_the_norms() -> None:
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    features = torch.tensor([[5.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([[10.0, 0.0], [10 / 2**0.5, 10 / 2**0.5]])
    assert torch.allclose(cosine_logits(features, head, 10.0), expected)
    with torch.no_grad():
        head.weight[1] *= 100.0  # a grown class norm biases dot products, not cosines
    assert torch.allclose(cosine_logits(features, head, 10.0), expected)


def test_bad_rehearsal_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="strategy.buffer_size"):
        ERACE(buffer_size=-1)
    with pytest.raises(ConfigError, match="strategy.beta"):
        DERpp(beta=-1.0)
    with pytest.raises(ConfigError, match="strategy.memory_passes"):
        GDumb(memory_passes=0)
    with pytest.raises(ConfigError, match="strategy.cosine_scale"):
        UER(cosine_scale=0.0)
    with pytest.raises(ConfigError, match="strategy.reference_batch_size"):
        AGEM(reference_batch_size=0)
    with pytest.raises(ConfigError, match=r"^strategy.replay_fraction must be >= 0 and < 1, got 1.0$"):
        STRATEGIES["replay"](replay_fraction=1.0)
    with pytest.raises(ConfigError, match=r"^strategy.temperature must be > 0, got 0.0$"):
        STRATEGIES["lwf"](temperature=0.0)
    with pytest.raises(ConfigError, match=r"^strategy.buffer_size must be >= 1, got 0$"):
        STRATEGIES["icarl"](buffer_size=0)


FAMILY = ["naive", "joint", "cumulative", "er", "er_ace", "agem", "uer", "der", "derpp", "replay", "gdumb", "icarl",
          "lwf", "pcr", "hpcr", "onpro", "psrd", "tame"]


@pytest.mark.parametrize("name", FAMILY)
def test_every_numeric_setting_declares_its_range(name: str) -> None:
    for field, parameter in parameters(STRATEGIES[name], extras=True).items():
        if isinstance(parameter.default, int | float):
            assert bounds_of(parameter.annotation), f"{name}.{field} declares no range"


def test_der_is_derpp_without_its_label_term_and_does_not_expose_beta(small_data) -> None:
    from lifelong import OptimConfig, train

    assert "beta" not in parameters(DER) and parameters(DERpp)["beta"].default == 1.0
    with pytest.raises(ConfigError, match="strategy.beta: unknown field for strategy 'der'"):
        build("strategy", STRATEGIES, Component(name="der", beta=1.0))
    results = []
    for strategy in (DER(buffer_size=30), DERpp(buffer_size=30, beta=0.0)):
        torch.manual_seed(0)
        results.append(train(class_incremental(small_data, 3), mlp((8,), 6, hidden=(16,)), strategy,
                             OptimConfig(epochs=1), seed=0))
    assert torch.equal(torch.as_tensor(results[0].matrix), torch.as_tensor(results[1].matrix))
    assert [c.replayed for c in results[0].costs] == [c.replayed for c in results[1].costs]  # no second draw


def test_agem_memory_holds_only_earlier_experiences_while_training(small_data) -> None:
    # Defect 10: the memory took in each batch of the experience being learned, so the "reference"
    # gradient partly was the current task's own gradient.
    from lifelong import OptimConfig, train
    from lifelong.runner.observers import Observer

    class MemoryTasks(Observer):
        def __init__(self) -> None:
            self.seen: dict[int, set[int]] = {}

        def on_run_start(self, context) -> None:
            self.strategy = context.strategy

        def on_step(self, state) -> None:
            stored = self.strategy.memory.contents()["task"] if len(self.strategy.memory) else torch.zeros(0)
            self.seen.setdefault(state.experience, set()).update(stored.long().tolist())

    stream = class_incremental(small_data, 3)
    observer = MemoryTasks()
    torch.manual_seed(0)
    train(stream, mlp((8,), 6, hidden=(16,)), AGEM(buffer_size=60), OptimConfig(epochs=1, momentum=0.0),
          observers=[observer])
    assert observer.seen == {0: set(), 1: {0}, 2: {0, 1}}


def test_agem_with_momentum_warns_that_the_update_is_not_projected(small_data) -> None:
    import warnings

    from lifelong import OptimConfig, train

    stream = class_incremental(small_data, 2)
    with pytest.warns(UserWarning, match="optim.momentum=0"):
        train(stream, mlp((8,), 6, hidden=(16,)), AGEM(buffer_size=20), OptimConfig(epochs=1, momentum=0.9))
    with pytest.warns(UserWarning, match="Adam's moments"):
        train(stream, mlp((8,), 6, hidden=(16,)), AGEM(buffer_size=20), OptimConfig(name="adam", epochs=1, lr=1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(stream, mlp((8,), 6, hidden=(16,)), AGEM(buffer_size=20), OptimConfig(epochs=1, momentum=0.0))
        train(stream, mlp((8,), 6, hidden=(16,)), ER(buffer_size=20), OptimConfig(epochs=1, momentum=0.9))


def domain_stream(sizes: tuple[int, ...]):
    """A stream of one experience (domain) per entry of ``sizes``, that many training rows each, whose inputs
    are filled with the domain's index, so that a replayed row shows where it came from."""
    from lifelong.data.streams import Experience, Stream, TensorSet

    def part(rows: int, task: int) -> TensorSet:
        return TensorSet.of(torch.full((rows, 4), float(task)), torch.zeros(rows, dtype=torch.long), task)

    return Stream(tuple(Experience(part(n, task), part(2, task), (0,), task) for task, n in enumerate(sizes)), 2, (4,))


def test_domain_temperature_weighs_the_replayed_domains_by_their_sizes() -> None:
    """Two earlier domains of 20 and 180 training samples: at T = 1 a replayed row comes from the small one
    with p = 20 / 200 = 0.1, at T = 2 with sqrt(20) / (sqrt(20) + sqrt(180)) = 0.25, at a large T about 0.5;
    uniform draws from the memory would follow its contents instead."""
    from lifelong.strategies.replay import ReplayMixture, domain_weights

    assert domain_weights({0: 20, 1: 180}, 1.0) == pytest.approx({0: 0.1, 1: 0.9})
    assert domain_weights({0: 20, 1: 180}, 2.0) == pytest.approx({0: 0.25, 1: 0.75})
    assert domain_weights({0: 100, 1: 400}, 2.0) == pytest.approx({0: 1 / 3, 1: 2 / 3})  # sqrt: 10 and 20
    stream = domain_stream((20, 180, 10))
    experiences = stream.experiences
    for temperature, small in ((1.0, 0.1), (2.0, 0.25), (1000.0, 0.5)):
        strategy = ReplayMixture(buffer_size=100, replay_fraction=0.5, domain_temperature=temperature)
        strategy.setup(StrategyContext(stream, 0))
        for experience in experiences[:2]:
            strategy.after_experience(nn.Linear(4, 2), experience)
        drawn = torch.cat([strategy.weighted_replay(16)["task"] for _ in range(400)])
        assert len(drawn) == 6400 and set(drawn.tolist()) <= {0, 1}  # only earlier domains come back
        assert (drawn == 0).float().mean().item() == pytest.approx(small, abs=0.03)
        assert strategy.replayed == 6400  # counted as replayed


def test_apportion_splits_the_replayed_rows_by_the_weights_exactly_batch_by_batch() -> None:
    """Weights 5 : 3 : 2 (shares 1/2, 3/10, 1/5). Ten rows split 5, 3, 2 with nothing owed. Three rows a
    batch, by hand: the first batch is owed 1.5, 0.9 and 0.6 rows, so domain 0 gets its whole row and the
    two largest remainders (0.9, 0.6) the other two, leaving 0.5, -0.1 and -0.4 owed; the second is owed
    2.0, 0.8 and 0.2, and gets 2, 1, 0; ... the fifth is owed 1.5, 0.5 and 1.0: the tie of remainders goes to
    the lower domain. After every batch each domain's rows are within one row of its share of all rows
    so far, and after ten batches (30 rows) they are exactly 15, 9 and 6. Float weights 0.5, 0.3, 0.2 (whose
    binary values are not exactly 3/10 and 1/5) split the same."""
    from fractions import Fraction

    from lifelong.strategies.replay import apportion

    owed: dict[int, Fraction] = {}
    assert apportion(10, {0: 5, 1: 3, 2: 2}, owed) == {0: 5, 1: 3, 2: 2} and set(owed.values()) == {0}
    by_hand = [(1, 1, 1), (2, 1, 0), (1, 1, 1), (2, 1, 0), (2, 0, 1), (1, 1, 1), (2, 1, 0), (1, 1, 1), (2, 1, 0),
               (1, 1, 1)]
    shares = (Fraction(1, 2), Fraction(3, 10), Fraction(1, 5))
    for weights in ({0: 5, 1: 3, 2: 2}, {0: 0.5, 1: 0.3, 2: 0.2}):
        owed, total = {}, [0, 0, 0]
        for batch, expected in enumerate(by_hand, start=1):
            counts = apportion(3, weights, owed)
            assert tuple(counts.values()) == expected, (weights, batch)
            total = [t + c for t, c in zip(total, expected, strict=True)]
            assert all(abs(t - 3 * batch * share) < 1 for t, share in zip(total, shares, strict=True))
        assert total == [15, 9, 6]
    assert owed == {0: 0, 1: Fraction(-3, 2**53), 2: Fraction(3, 2**53)}  # the floats' rounding, carried on


def test_domain_mixture_gives_the_stated_shares_within_one_row_after_every_batch() -> None:
    """Mixture weights 0.5, 0.3, 0.2 over three earlier domains of a four-domain stream: replaying a quarter of
    batches of 16 (4 rows each) through the strategy's own path, domain d's replayed rows after batch k are
    within one row of 4k times its share; a domain of weight 0 never comes back, and the weights of domains
    not in the memory yet are left out (with domains 0 and 1 stored, shares 5/8 and 3/8)."""
    from lifelong.strategies.replay import ReplayMixture

    stream = domain_stream((20, 20, 20, 20))
    experiences = stream.experiences
    for mixture, stored, shares in (([0.5, 0.3, 0.2, 0.0], 3, [0.5, 0.3, 0.2]), ([0.5, 0.3, 0.2, 0.0], 2, [5 / 8, 3 / 8]),
                                    ([0.0, 0.3, 0.2, 0.5], 3, [0.0, 0.6, 0.4])):
        strategy = ReplayMixture(buffer_size=100, replay_fraction=0.25, domain_mixture=mixture)
        strategy.setup(StrategyContext(stream, 0))
        for experience in experiences[:stored]:
            strategy.after_experience(nn.Linear(4, 2), experience)
        totals = torch.zeros(stored)
        for batch in range(1, 21):
            replayed = strategy.weighted_replay(strategy.replay_rows(16))
            assert torch.equal(replayed["x"][:, 0], replayed["task"].float())  # the rows are the domain's own
            totals += torch.bincount(replayed["task"], minlength=stored)
            assert (totals - 4 * batch * torch.tensor(shares)).abs().max() < 1, (mixture, stored, batch)
    with pytest.raises(ConfigError, match=r"one weight >= 0 per domain of the stream \(4\)"):
        ReplayMixture(domain_mixture=[1.0, 1.0]).setup(StrategyContext(stream, 0))
    with pytest.raises(ConfigError, match="keep one of them"):
        ReplayMixture(domain_mixture=[1.0] * 4, domain_temperature=2.0).setup(StrategyContext(stream, 0))
    strategy = ReplayMixture(domain_mixture=[0.0, 1.0, 1.0, 1.0])
    strategy.setup(StrategyContext(stream, 0))
    strategy.after_experience(nn.Linear(4, 2), experiences[0])
    with pytest.raises(ConfigError, match=r"weight 0 to every domain in the memory \(\[0\]\)"):
        strategy.weighted_replay(4)
