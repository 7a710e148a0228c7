import torch

from lifelong.models.ghost_batch_norm import GhostBatchNorm


def test_each_virtual_batch_is_normalized_by_its_own_statistics() -> None:
    norm = GhostBatchNorm(1, virtual_batch_size=2)
    out = norm(torch.tensor([[0.0], [2.0], [10.0], [14.0]]))  # virtual batches (0, 2) and (10, 14)
    assert torch.allclose(out.squeeze(1), torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-4)
    # running mean updated once per virtual batch: 0.9 * (0.9 * 0 + 0.1 * 1) + 0.1 * 12
    assert torch.allclose(norm.running_mean, torch.tensor([0.09 + 1.2]))
    norm.eval()
    assert torch.allclose(norm(torch.tensor([[1.29]])), torch.tensor([[0.0]]), atol=1e-3)
