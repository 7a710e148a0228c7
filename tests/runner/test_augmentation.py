"""The runner's training augmentation: new batches and (by default) replayed ones are cropped and flipped
with draws from the run's seed, memories keep un-augmented samples, evaluation sees inputs normalised
only, and the same seed gives the same run."""

from __future__ import annotations

import numpy as np
import torch

from lifelong import ER, OptimConfig, class_incremental, cnn, digits, train
from lifelong.config import load_config
from lifelong.data.augment import Augment
from lifelong.experiment import run_config

FLIP = Augment(flip=True)


class Recording(ER):
    """ER that keeps every training batch it is given and every batch it replays."""

    def setup(self, context):
        super().setup(context)
        self.batches, self.replays = [], []

    def observe(self, model, batch):
        self.batches.append(batch)
        return super().observe(model, batch)

    def as_replayed(self, rows):
        replayed = super().as_replayed(rows)
        self.replays.append((self.memory.contents()["x"].clone(), replayed["x"]))
        return replayed


def run(stream, strategy, seed=0, **kwargs):
    torch.manual_seed(seed)
    return train(stream, cnn(stream.input_shape, stream.n_classes, channels=(8,)), strategy,
                 OptimConfig(epochs=1, batch_size=16), seed=seed, **kwargs)


def is_row_or_mirror(image: torch.Tensor, rows: torch.Tensor) -> tuple[bool, bool]:
    """Whether ``image`` is one of ``rows``, and whether it is the mirror image of one."""
    same = bool((rows == image).flatten(1).all(1).any())
    mirrored = bool((rows == image.flip(-1)).flatten(1).all(1).any())
    return same, mirrored


def test_new_and_replayed_batches_are_flipped_and_memories_keep_the_originals() -> None:
    stream = class_incremental(digits(), 3)
    strategy = Recording(buffer_size=50)
    run(stream, strategy, augment=FLIP)
    flipped = 0
    for batch in strategy.batches:
        assert batch.raw is not None
        for raw, seen in zip(batch.raw, batch.x, strict=True):
            assert torch.equal(seen, raw) or torch.equal(seen, raw.flip(-1))
            flipped += not torch.equal(seen, raw)
    total = sum(len(b.y) for b in strategy.batches)
    assert 0.4 * total < flipped < 0.6 * total  # each sample flipped with probability 1/2
    train_images = torch.cat([e.train.x for e in stream])
    stored = strategy.memory.contents()["x"]
    assert all(is_row_or_mirror(image, train_images)[0] for image in stored)  # memories keep originals
    mirrored_replays = 0
    for memory, replayed in strategy.replays:
        for image in replayed:
            same, mirrored = is_row_or_mirror(image, memory)
            assert same or mirrored
            mirrored_replays += not same
    assert mirrored_replays > 0  # replayed samples are augmented afresh


def test_replay_can_be_left_unaugmented_and_evaluation_is_never_augmented() -> None:
    stream = class_incremental(digits(), 3)
    strategy = Recording(buffer_size=50)
    result = run(stream, strategy, augment=FLIP, augment_replay=False)
    for memory, replayed in strategy.replays:
        assert all(is_row_or_mirror(image, memory)[0] for image in replayed)
    again = run(stream, Recording(buffer_size=50), augment=FLIP, augment_replay=False)
    assert np.array_equal(result.matrix, again.matrix)  # the same seed draws the same crops and flips
    # an augmentation that changes nothing gives the run without one: evaluation sees plain inputs
    assert np.array_equal(run(stream, ER(buffer_size=50), augment=Augment()).matrix,
                          run(stream, ER(buffer_size=50)).matrix)


def test_normalisation_is_applied_once_to_training_and_test_inputs() -> None:
    stream = class_incremental(digits(), 3)
    normalise = Augment(mean=(0.5,), std=(0.25,))
    strategy = Recording(buffer_size=50)
    run(stream, strategy, augment=normalise)
    first = strategy.batches[0]
    train_images = (torch.cat([e.train.x for e in stream]) - 0.5) / 0.25
    assert first.raw is None and all(is_row_or_mirror(image, train_images)[0] for image in first.x)


def test_the_augment_table_reaches_the_runner() -> None:
    config = load_config(None, ["augment.flip=true", "augment.crop_padding=1", "optim.epochs=1",
                                "scenario.n_experiences=2", "model.name=cnn", "run.checkpoint=false"])
    plain = load_config(None, ["optim.epochs=1", "scenario.n_experiences=2", "model.name=cnn", "run.checkpoint=false"])
    augmented, reference = run_config(config), run_config(plain)
    assert not np.array_equal(augmented.matrix, reference.matrix)
    assert augmented.config["augment"]["crop_padding"] == 1 and augmented.config["augment"]["flip"] is True
