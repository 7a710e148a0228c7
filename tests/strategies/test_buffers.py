import torch

from lifelong.strategies.parts.memory import ClassBalancedBuffer, ReservoirBuffer


def offer(buffer, start: int, n: int, label: int = 0) -> None:
    ids = torch.arange(start, start + n)
    buffer.add(x=ids.float().unsqueeze(1), y=torch.full((n,), label), task=torch.zeros(n, dtype=torch.long))


def test_reservoir_fills_then_keeps_capacity() -> None:
    buffer = ReservoirBuffer(5, torch.Generator().manual_seed(0))
    offer(buffer, 0, 3)
    assert len(buffer) == 3 and buffer.contents()["x"].flatten().tolist() == [0, 1, 2]
    offer(buffer, 3, 10)
    assert len(buffer) == 5 and buffer.seen == 13
    assert len(set(buffer.contents()["x"].flatten().tolist())) == 5


def test_reservoir_inclusion_probability_is_capacity_over_seen() -> None:
    # 20 samples offered in batches of 4 to a memory of 5: each is kept with probability 5/20.
    counts = torch.zeros(20)
    trials = 2000
    generator = torch.Generator().manual_seed(1)
    for _ in range(trials):
        buffer = ReservoirBuffer(5, generator)
        for start in range(0, 20, 4):
            offer(buffer, start, 4)
        counts[buffer.contents()["x"].flatten().long()] += 1
    frequency = counts / trials
    # standard error sqrt(.25 * .75 / 2000) ~ 0.0097: 5 sigma
    assert (frequency - 0.25).abs().max() < 0.05
    # early and late samples alike (the order of offers does not matter)
    assert abs(frequency[:10].mean() - frequency[10:].mean()) < 0.02


def test_reservoir_sample_without_replacement_and_state_roundtrip() -> None:
    buffer = ReservoirBuffer(8, torch.Generator().manual_seed(2))
    offer(buffer, 0, 8)
    drawn = buffer.sample(8)["x"].flatten().tolist()
    assert sorted(drawn) == list(range(8))
    state = buffer.state_dict()
    copy = ReservoirBuffer(8, torch.Generator())
    copy.load_state_dict(state)
    offer(buffer, 8, 20)
    offer(copy, 8, 20)
    assert torch.equal(buffer.contents()["x"], copy.contents()["x"])


def test_class_balanced_keeps_equal_counts_per_class() -> None:
    buffer = ClassBalancedBuffer(12, torch.Generator().manual_seed(0))
    offer(buffer, 0, 30, label=0)  # fills the whole memory with class 0
    assert buffer.class_counts() == {0: 12}
    offer(buffer, 100, 30, label=1)
    assert buffer.class_counts() == {0: 6, 1: 6}
    offer(buffer, 200, 3, label=2)  # only 3 samples: class 2 gets them all
    assert buffer.class_counts() == {0: 5, 1: 4, 2: 3} or buffer.class_counts() == {0: 4, 1: 5, 2: 3}
    offer(buffer, 300, 30, label=2)
    assert buffer.class_counts() == {0: 4, 1: 4, 2: 4}
    assert len(buffer) == 12
