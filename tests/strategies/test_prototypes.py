import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong import OptimConfig, ResultsStore, mlp, train
from lifelong.data import TensorSet, class_incremental, task_incremental
from lifelong.errors import ConfigError, MissingFileError
from lifelong.runner.observers import Observer
from lifelong.strategies import NCM, SLCA, FeTrIL, RanPAC, slca
from lifelong.strategies.base import Strategy, StrategyContext
from lifelong.strategies.fetril import translate
from lifelong.strategies.slca import mean_scales, normalized_logits
from tests.runner.test_checkpoint_resume import assert_same_run, killed_run, start


def identity_features_model(n_features: int = 8, n_classes: int = 6) -> nn.Sequential:
    """A model whose backbone is the identity on flat inputs, so features are the inputs themselves."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes))


def test_ncm_equals_the_hand_computed_nearest_mean(small_data) -> None:
    stream = class_incremental(small_data, 2)
    model, strategy = identity_features_model(), NCM(adapt_experiences=0)
    strategy.setup(StrategyContext(stream, 0))
    for index, experience in enumerate(stream):
        strategy.before_experience(model, experience)
        assert not strategy.plan(stream.experiences, index).trains  # frozen backbone: no gradient step
        strategy.after_experience(model, experience)
    x = stream[1].test.x
    means = torch.stack([small_data.x_train[small_data.y_train == c].mean(0) for c in range(6)])  # (6, 8)
    expected = torch.cdist(x, means).argmin(1)
    assert torch.equal(strategy.predict(model, x, stream[1].test.task), expected)
    # task-incremental: only the sample's task classes compete
    task_stream = task_incremental(small_data, 2)
    strategy.setup(StrategyContext(task_stream, 0))
    for experience in task_stream:
        strategy.after_experience(model, experience)
    tasks = torch.zeros(len(x), dtype=torch.long)  # pretend every sample belongs to task 0 (classes 0-2)
    assert strategy.predict(model, x, tasks).max() <= 2


def test_ncm_adapts_on_the_first_experiences_then_freezes(small_data) -> None:
    stream = class_incremental(small_data, 3)
    model, strategy = identity_features_model(), NCM(adapt_experiences=2)
    strategy.setup(StrategyContext(stream, 0))
    sizes = []
    for index, experience in enumerate(stream):
        strategy.before_experience(model, experience)
        planned = strategy.plan(stream.experiences, index).train_size
        sizes.append(len(strategy.training_set(experience)) if planned else 0)
        assert sizes[-1] == planned
        strategy.after_experience(model, experience)
    train_sizes = [len(e.train) for e in stream]
    assert sizes == [train_sizes[0], train_sizes[0] + train_sizes[1], 0]  # merged adaptation session
    assert strategy.statistics.classes == list(range(6)) and strategy.memory_size() == 0


def test_fetril_pseudo_features_sit_on_the_old_centroid(small_data) -> None:
    new = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    pseudo = translate(new, new.mean(0), torch.tensor([10.0, 10.0]))
    assert pseudo.tolist() == [[9.0, 9.0], [11.0, 11.0]]
    stream = class_incremental(small_data, 2)
    model, strategy = identity_features_model(), FeTrIL(adapt_experiences=0)
    strategy.setup(StrategyContext(stream, 0))
    for experience in stream:
        strategy.after_experience(model, experience)
    # the linear head, fitted on translated features, separates all six well-separated classes
    test = TensorSet.concat([e.test for e in stream])
    accuracy = (strategy.predict(model, test.x, test.task) == test.y).float().mean().item()
    assert accuracy > 0.9 and strategy.statistics.classes == list(range(6))


def test_slca_slows_the_backbone_after_adaptation_and_aligns_the_head(small_data) -> None:
    stream = class_incremental(small_data, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6))
    strategy = SLCA(backbone_lr_scale=0.01, adapt_experiences=1, samples_per_class=64)
    strategy.setup(StrategyContext(stream, 0))
    assert [len(g["params"]) for g in strategy.parameter_groups(model)] == [2, 2]  # backbone, head
    assert strategy.plan(stream.experiences, 0).lr_scales == (1.0, 1.0)
    assert strategy.plan(stream.experiences, 1).lr_scales == (0.01, 1.0)
    strategy.after_experience(model, stream[0])
    strategy.after_experience(model, stream[1])
    assert strategy.statistics.classes == list(range(6)) and strategy.statistics.covariances().shape == (6, 16, 16)
    test = TensorSet.concat([e.test for e in stream])
    accuracy = (strategy.predict(model, test.x, test.task) == test.y).float().mean().item()
    assert accuracy > 0.8  # head refitted on sampled features of all classes (random ReLU features)


class HeadSnapshots(Observer):
    """The head's weight and bias at each experience's first step and after its last (before the strategy's
    ``after_experience``, so before any alignment)."""

    def __init__(self, head: nn.Linear) -> None:
        self.head, self.starts, self.ends = head, [], []

    def snapshot(self) -> torch.Tensor:
        return torch.cat([self.head.weight, self.head.bias.unsqueeze(1)], dim=1).detach().clone()  # (C, D + 1)

    def on_experience_start(self, state) -> None:
        self.starts.append(self.snapshot())

    def on_training_end(self, state) -> None:
        self.ends.append(self.snapshot())


def test_slca_trains_only_the_current_logits_and_the_next_experience_starts_from_the_unaligned_head(
        small_data) -> None:
    # Issue 25: the reference trains cross-entropy on the current task's logits with the old heads frozen,
    # and puts the pre-alignment head back after the evaluation.
    stream = class_incremental(small_data, 3)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    observer = HeadSnapshots(model.head)
    optim = OptimConfig(lr=0.05, epochs=2, batch_size=16, momentum=0.9, reset_per_experience=False)
    train(stream, model, SLCA(samples_per_class=16), optim, seed=0, observers=[observer])
    for index, experience in enumerate(stream):
        current = list(experience.classes)
        old = [c for c in range(stream.n_classes) if c not in current]
        start, end = observer.starts[index], observer.ends[index]
        assert torch.equal(end[old], start[old]), index  # no step moved another experience's row ...
        assert not torch.equal(end[current], start[current]), index  # ... the current ones trained
        if index:  # the head the previous experience trained, not the one aligned for its evaluation
            assert torch.equal(start, observer.ends[index - 1]), index
    assert not torch.equal(observer.snapshot(), observer.ends[-1])  # the last alignment stays for the evaluation


@pytest.mark.parametrize("kill_at", [17, 23], ids=["first-step-after-an-alignment", "inside-the-experience"])
def test_slca_resumed_after_sigkill_equals_the_uninterrupted_run(small_data, tmp_path, kill_at) -> None:
    # The aligned head of experience 1 is evaluated, then the unaligned one trains on in experience 2.
    stream = class_incremental(small_data, 3)
    settings = {"slca": {"samples_per_class": 16}}
    reference, reference_model = start(stream, "slca", ResultsStore(tmp_path / "reference.db"), settings)
    store = ResultsStore(tmp_path / "runs.db")
    killed_run(stream, "slca", store, kill_at=kill_at, settings=settings)
    resumed, resumed_model = start(stream, "slca", store, settings, resume_run=1)
    assert_same_run(resumed, resumed_model, reference, reference_model)


def test_slca_logit_normalization_and_mean_scales_by_hand() -> None:
    logits = torch.tensor([[3.0, 4.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    groups = [torch.tensor([0, 1]), torch.tensor([2, 3])]  # two tasks of two classes
    # row 0: task norms 5 and 1, mean 3; row 1: 1 and 1e-7, mean ~0.5
    expected = torch.stack([logits[0] / 3.0, logits[1] / ((1 + 1e-7 + 1e-7) / 2)]) / 0.1
    assert torch.allclose(normalized_logits(logits, groups, 0.1), expected)
    assert torch.allclose(normalized_logits(2 * logits, groups, 0.1), normalized_logits(logits, groups, 0.1))
    assert torch.allclose(mean_scales(4), torch.tensor([0.925, 0.95, 0.975, 1.0], dtype=torch.float64))
    assert mean_scales(1).tolist() == [1.0]


def test_slca_aligns_on_features_drawn_around_the_scaled_means(small_data, monkeypatch) -> None:
    stream = class_incremental(small_data, 3)
    model, strategy = identity_features_model(), SLCA(adapt_experiences=0, samples_per_class=8)
    drawn = []
    original = slca.sample_gaussian
    monkeypatch.setattr(slca, "sample_gaussian", lambda mean, *rest: drawn.append(mean) or original(mean, *rest))
    strategy.setup(StrategyContext(stream, 0))
    for index, experience in enumerate(stream):
        drawn.clear()
        strategy.before_experience(model, experience)
        strategy.after_experience(model, experience)
        if index == 0:
            assert not drawn  # no alignment after the first experience (the reference's cur_task > 0)
    scales = torch.tensor([0.9 + 0.1 / 3] * 2 + [0.9 + 0.2 / 3] * 2 + [1.0] * 2).unsqueeze(1)  # tasks 0, 1, 2
    assert torch.allclose(torch.stack(drawn), strategy.statistics.means() * scales)


def test_ncm_cosine_equals_the_hand_computed_most_similar_mean(small_data) -> None:
    stream = class_incremental(small_data, 2)
    model, strategy = identity_features_model(), NCM(adapt_experiences=0, metric="cosine")
    strategy.setup(StrategyContext(stream, 0))
    for experience in stream:
        strategy.after_experience(model, experience)
    x = torch.cat([stream[0].test.x, stream[1].test.x])
    means = torch.stack([small_data.x_train[small_data.y_train == c].mean(0) for c in range(6)])  # (6, 8)
    expected = (F.normalize(x, dim=1) @ F.normalize(means, dim=1).T).argmax(1)
    assert torch.equal(strategy.predict(model, x, torch.zeros(len(x), dtype=torch.long)), expected)
    with pytest.raises(ConfigError, match="strategy.metric"):
        NCM(metric="manhattan")


def test_pretrained_backbone_is_loaded_from_a_file(small_data, tmp_path) -> None:
    stream = class_incremental(small_data, 2)
    pretrained = nn.Sequential(nn.Linear(8, 8))
    torch.save(pretrained.state_dict(), tmp_path / "backbone.pt")
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 6))
    strategy = NCM(adapt_experiences=0, backbone_path=str(tmp_path / "backbone.pt"))
    strategy.setup(StrategyContext(stream, 0))
    strategy.before_experience(model, stream[0])
    assert torch.equal(model[0].weight, pretrained[0].weight)
    with pytest.raises(MissingFileError, match="strategy.backbone_path"):
        FeTrIL(backbone_path=str(tmp_path / "absent.pt"))  # checked when the strategy is built


def test_bad_prototype_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="strategy.adapt_experiences"):
        NCM(adapt_experiences=-1)
    with pytest.raises(ConfigError, match="strategy.backbone_lr_scale"):
        SLCA(backbone_lr_scale=2.0)
    with pytest.raises(ConfigError, match="strategy.samples_per_class"):
        SLCA(samples_per_class=0)


@pytest.mark.parametrize("cls", [NCM, FeTrIL, RanPAC])
def test_frozen_feature_methods_hold_their_adaptation_and_refuse_model_freeze_only_while_adapting(cls) -> None:
    assert cls.__bases__ == (Strategy,)
    assert cls(adapt_experiences=0).capabilities == cls.CAPABILITIES  # nothing to adapt: the freeze applies
    adapting = cls(adapt_experiences=3).capabilities
    assert not adapting.freeze and "strategy.adapt_experiences=3" in adapting.freeze_refusal
    assert adapting.with_(freeze=True, freeze_refusal="") == cls.CAPABILITIES  # nothing else changes
