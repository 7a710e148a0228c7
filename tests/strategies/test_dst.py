"""DST-CL: old tasks' masks and the weights under them never change; ERK and uniform densities."""

from __future__ import annotations

import pytest
import torch

from lifelong import OptimConfig
from lifelong.errors import ConfigError
from lifelong.strategies import DST
from lifelong.strategies.dst import cosine_fraction, layer_densities
from tests.strategies.isolation import forgetting_against_naive, run_tasks, stored_floats, task_tensors

ADAM = OptimConfig(name="adam", lr=0.01, epochs=2, batch_size=16, weight_decay=1e-3)


@pytest.mark.parametrize("growth", ["random", "gradient"])
@pytest.mark.parametrize("optim", ["momentum", "adam"])
def test_old_masks_and_the_weights_under_them_stay_bit_identical(small_data, growth, optim) -> None:
    strategy = DST(sparsity=0.5, update_every=2, prune_fraction=0.5, growth=growth)
    model, snapshots, _ = run_tasks(small_data, strategy, **({"optim": ADAM} if optim == "adam" else {}))
    weight = model.state_dict()["backbone.1.weight"]
    final = task_tensors(strategy.state_dict(), "masks")
    for later in (1, 2):
        earlier = task_tensors(snapshots.states[later], "masks")
        old_weight = snapshots.models[later]["backbone.1.weight"]
        for task in range(later):
            mask = earlier[task]["backbone.1.weight"]
            assert torch.equal(mask, final[task]["backbone.1.weight"])
            assert torch.equal(old_weight[mask], weight[mask])
            own = task_tensors(snapshots.states[later])[task]
            assert all(torch.equal(v, task_tensors(strategy.state_dict())[task][k]) for k, v in own.items())
    # the masks moved while their task trained: task 2's final mask differs from the one it started with
    assert not torch.equal(task_tensors(snapshots.states[2], "masks")[2]["backbone.1.weight"],
                           final[2]["backbone.1.weight"])


@pytest.mark.parametrize("growth", ["random", "gradient"])
def test_regrowth_never_lands_on_other_tasks_frozen_weights(small_data, growth) -> None:
    """Every update grows only free positions, so the part of a task's mask it can train keeps its size
    (issue 25: growing anywhere took task 4's trainable share from 0.67 to 0.11 over 25 updates)."""
    strategy = DST(sparsity=0.5, update_every=2, decay_epochs=0, growth=growth)
    updates = []
    original = strategy.update_mask

    def recording(model, mask):
        before = {name: m.clone() for name, m in mask.items()}
        trainable = sum(int((m & ~strategy.frozen[name]).sum()) for name, m in mask.items())
        original(model, mask)
        grown_frozen = sum(int((m & ~before[name] & strategy.frozen[name]).sum()) for name, m in mask.items())
        updates.append((grown_frozen, trainable, sum(int((m & ~strategy.frozen[name]).sum())
                                                     for name, m in mask.items()),
                        sum(int(f.sum()) for f in strategy.frozen.values())))

    strategy.update_mask = recording
    run_tasks(small_data, strategy)
    assert sum(frozen > 0 for *_, frozen in updates) >= 8  # updates of tasks 1 and 2, beside older weights
    assert all(grown == 0 for grown, *_ in updates)
    assert all(after == before for _, before, after, _ in updates)


def test_the_prune_fraction_decays_along_a_cosine_over_the_decay_epochs(small_data) -> None:
    assert cosine_fraction(0.5, 0.005, 0.0) == 0.5
    assert cosine_fraction(0.5, 0.005, 0.5) == pytest.approx(0.2525)
    assert cosine_fraction(0.5, 0.005, 1.0) == pytest.approx(0.005)
    assert cosine_fraction(0.5, 0.005, 3.0) == pytest.approx(0.005)  # held at the end
    strategy = DST(decay_epochs=2)
    strategy.train_size, strategy.samples = 100, 100  # one pass of two: half way
    assert strategy.prune_rate() == pytest.approx(0.2525)
    assert DST(decay_epochs=0, prune_fraction=0.3).prune_rate() == 0.3


def test_sparsity_and_what_is_kept_per_task(small_data) -> None:
    strategy = DST(sparsity=0.75, init="uniform", update_every=3)
    run_tasks(small_data, strategy)
    assert strategy.task_sparsity() == {0: 0.75, 1: 0.75, 2: 0.75}  # round(0.25 * 128) = 32 kept of Linear(8, 16)
    # per task: the mask's 128 entries, the linear bias 16, BatchNorm1d(16) 4 * 16, the head 16 * 6 + 6
    state = strategy.state_dict()
    assert sum(m.numel() for mask in task_tensors(state, "masks").values() for m in mask.values()) == 3 * 128
    assert stored_floats(state) == 3 * (16 + 64 + 102) == 546


def test_erk_keeps_small_layers_denser_at_the_same_overall_density() -> None:
    shapes = [torch.Size([16, 8]), torch.Size([4, 16])]
    # raw densities (16 + 8) / 128 and (4 + 16) / 64; eps = 0.5 * 192 / (24 + 20)
    erk = layer_densities(shapes, 0.5, "erk")
    assert erk == pytest.approx([96 / 44 * 24 / 128, 96 / 44 * 20 / 64])
    assert erk[0] * 128 + erk[1] * 64 == pytest.approx(96)
    assert layer_densities(shapes, 0.5, "uniform") == [0.5, 0.5]
    assert layer_densities([torch.Size([2, 2]), torch.Size([64, 64])], 0.5, "erk")[0] == 1.0  # capped, dense


def test_bad_settings_name_the_field() -> None:
    for settings, field in [({"sparsity": 1.0}, "sparsity"), ({"init": "dense"}, "init"),
                            ({"growth": "magic"}, "growth"), ({"update_every": 0}, "update_every"),
                            ({"prune_fraction": 1.0}, "prune_fraction"),
                            ({"final_prune_fraction": -0.1}, "final_prune_fraction"),
                            ({"decay_epochs": -1}, "decay_epochs")]:
        with pytest.raises(ConfigError, match=f"strategy.{field} must be"):
            DST(**settings)


def test_forgets_clearly_less_than_naive(digits_data) -> None:
    ours, naive = forgetting_against_naive(digits_data, DST(update_every=10))
    assert ours < 0.02 and naive > 0.3, (ours, naive)


def test_a_channels_last_cnn_prunes_and_regrows_as_a_contiguous_one(digits_data) -> None:
    """Convolution weights in the channels-last format are not flat in memory: the mask update works in the
    tensors' logical order, so a channels-last run takes the same masks and weights as a contiguous one."""
    from lifelong import task_incremental, train
    from lifelong.models.nets import cnn

    stream = task_incremental(digits_data, 2)
    runs = {}
    for channels_last in (False, True):
        model = cnn(stream.input_shape, stream.n_classes, channels=(4, 8), seed=0)  # conv 2 has 4 input channels
        strategy = DST(update_every=5)
        result = train(stream, model, strategy, OptimConfig(epochs=1, batch_size=32), seed=0,
                       channels_last=channels_last)
        runs[channels_last] = result.matrix, strategy.task_sparsity()
    # the convolutions round differently in the two formats, so weights differ in their last bits; what the
    # method decides from them (the matrix, each task's sparsity) does not
    assert (runs[True][0] == runs[False][0]).all() and runs[True][1] == runs[False][1]
