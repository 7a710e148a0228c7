import torch

from lifelong.data.loader import epoch_order
from lifelong.optim.samplers import HardBatchSampler, RS2Sampler


def no_scores(order, batch_size):
    raise AssertionError("not used")


def test_rs2_draws_without_replacement_across_epochs() -> None:
    sampler = RS2Sampler(fraction=0.3)  # 3 of 10 samples per epoch
    epochs = [sampler.order(10, 0, 1, e, 2, no_scores) for e in range(4)]
    assert all(len(e) == 3 for e in epochs)
    first_round = torch.cat(epochs)[:10]
    assert sorted(first_round.tolist()) == list(range(10))  # every sample once before any repeats
    assert torch.equal(sampler.order(10, 0, 1, 2, 2, no_scores), epochs[2])  # pure in (seed, experience, epoch)


def test_hard_batch_keeps_the_highest_loss_batches_in_order() -> None:
    sampler = HardBatchSampler(fraction=0.5)

    def index_sum(order, batch_size):  # a "loss" per batch: the sum of its sample indices
        return torch.stack([chunk.sum().float() for chunk in order.split(batch_size)])

    order = sampler.order(8, 0, 0, 0, 2, index_sum)
    batches = order.split(2)
    assert len(batches) == 2
    full = epoch_order(8, 0, 0, 0).split(2)
    sums = [int(b.sum()) for b in full]
    kept = sorted(sorted(range(4), key=lambda i: -sums[i])[:2])
    assert [b.tolist() for b in batches] == [full[i].tolist() for i in kept]
