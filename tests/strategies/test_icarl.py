import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data import class_incremental
from lifelong.strategies import ICaRL
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.parts.features import herding


def test_icarl_shrinks_herded_sets_and_classifies_by_nearest_mean_of_exemplars(small_data) -> None:
    stream = class_incremental(small_data, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6))  # backbone = identity: features are the inputs
    strategy = ICaRL(buffer_size=12)
    strategy.setup(StrategyContext(stream, 0))
    strategy.after_experience(model, stream[0])
    first = strategy.memory.exemplars
    assert torch.bincount(first.y).tolist() == [4, 4, 4]  # 12 exemplars over 3 classes
    members = stream[0].train.x[stream[0].train.y == 0]
    expected = members[herding(F.normalize(members, dim=1), 4)]
    assert torch.equal(first.x[first.y == 0], expected)
    strategy.after_experience(model, stream[1])
    kept = strategy.memory.exemplars
    assert torch.bincount(kept.y).tolist() == [2] * 6  # the memory is total, not per class
    assert torch.equal(kept.x[kept.y == 0], expected[:2])  # shrinking keeps the first herded exemplars
    x = stream[1].test.x
    means = F.normalize(torch.stack([F.normalize(kept.x[kept.y == c], dim=1).mean(0) for c in range(6)]), dim=1)
    by_hand = torch.cdist(F.normalize(x, dim=1), means).argmin(1)
    assert torch.equal(strategy.predict(model, x, stream[1].test.task), by_hand)


def test_icarl_distills_old_classes_with_sigmoid_targets(small_data) -> None:
    stream = class_incremental(small_data, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6))
    strategy = ICaRL(buffer_size=12)
    strategy.setup(StrategyContext(stream, 0))
    strategy.after_experience(model, stream[0])
    strategy.before_experience(model, stream[1])
    batch = stream[1].train.batch()
    logits = model(batch.x)
    # old columns: targets are the old model's own sigmoid outputs; new columns: one-hot labels
    targets = torch.cat([torch.sigmoid(logits[:, :3]), F.one_hot(batch.y, 6)[:, 3:].float()], dim=1)
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1).mean()
    assert torch.allclose(strategy.observe(model, batch), expected)
