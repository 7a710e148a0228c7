import math

import pytest
import torch

from lifelong import Naive, OptimConfig, ResultsStore, class_incremental, mlp, train
from lifelong.cli import main
from lifelong.errors import ConfigError
from lifelong.optim.scaling import resolve_rule, scale_lr
from lifelong.optim.setup import resolve


def test_scaling_rules_and_auto() -> None:
    assert scale_lr(0.1, 64, 16, "linear") == pytest.approx(0.4)
    assert scale_lr(0.1, 64, 16, "sqrt") == pytest.approx(0.2)
    assert scale_lr(0.1, 64, 16, "none") == 0.1
    assert [resolve_rule("auto", n) for n in ("sgd", "lars", "adam", "adamw", "lamb")] == \
        ["linear", "linear", "sqrt", "sqrt", "sqrt"]
    with pytest.raises(ConfigError, match="optim.lr_scaling must be one of"):
        resolve_rule("cubic", "sgd")


def test_base_batch_size_defaults_to_the_batch_size() -> None:
    assert resolve(OptimConfig(name="lamb", lr=0.01, batch_size=512)).lr_for(512) == 0.01
    assert resolve(OptimConfig(name="lamb", lr=0.01, batch_size=512, base_batch_size=128)).lr_for(512) == \
        pytest.approx(0.02)


def test_largest_lr_is_the_peak_rate_the_penalties_bound_their_stiffness_by() -> None:
    assert resolve(OptimConfig(lr=0.05, batch_size=32)).largest_lr() == pytest.approx(0.05)
    assert resolve(OptimConfig(lr=0.05, batch_size=32)).largest_lr(ranks=4) == pytest.approx(0.2)  # linear
    adaptive = OptimConfig(lr=0.05, batch_size=32, batch_size_test="norm",
                           batch_size_test_params={"max_batch_size": 128})
    assert resolve(adaptive).largest_lr() == pytest.approx(0.2)  # at the largest batch it may grow to
    assert resolve(OptimConfig(lr=0.05, batch_size=32, agvm=True)).largest_lr() == pytest.approx(0.05 * math.sqrt(10))
    assert resolve(OptimConfig(lr=0.05, batch_size="probe")).largest_lr() == pytest.approx(0.05)
    assert resolve(OptimConfig(lr=0.05, batch_size="probe", base_batch_size=32)).largest_lr() is None


@pytest.mark.parametrize("field, value, message", [("precision", "fp8", "optim.precision must be one of"),
                                                   ("sampler", "easy", "optim.sampler must be one of"),
                                                   ("batch_size_test", "gns", "optim.batch_size_test must be")])
def test_bad_names_are_config_errors(field, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(OptimConfig(**{field: value}))


def test_cli_lamb_at_batch_512_stores_the_effective_lr(tmp_path) -> None:
    db = tmp_path / "runs.db"
    code = main(["run", "--set", "optim.name=lamb", "--set", "optim.batch_size=512", "--set", "optim.lr_scaling=auto",
                 "--set", "optim.base_batch_size=128", "--set", "optim.epochs=2", "--set", f'run.db="{db}"',
                 "--set", "run.progress=false"])
    assert code == 0
    record = ResultsStore(db).get(1)
    assert record.metrics["effective_lr"] == pytest.approx(0.03 * math.sqrt(512 / 128))
    assert record.config["optim"]["name"] == "lamb" and record.config["optim"]["lr_scaling"] == "auto"


def test_cli_bad_schedule_parameter_exits_2(tmp_path, capsys) -> None:
    code = main(["run", "--set", "optim.schedule=wsd", "--set", "optim.schedule_params.decay_fraction=3",
                 "--set", f'run.db="{tmp_path / "r.db"}"'])
    assert code == 2
    assert "optim.schedule_params.decay_fraction must be in [0, 1], got 3" in capsys.readouterr().err


def test_budgets_cap_steps_samples_and_flops(small_data) -> None:
    stream = class_incremental(small_data, 2)

    def run(**limits):
        torch.manual_seed(0)
        return train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,)), Naive(),
                     OptimConfig(lr=0.05, batch_size=16, epochs=3, **limits), seed=0)

    assert [c.steps for c in run(max_steps=3).costs] == [3, 3]
    assert [c.samples for c in run(max_samples=40).costs] == [32, 32]  # a third batch would pass 40
    flops = run(max_flops=1e5).costs
    # forward + backward of an 8-16-6 MLP: forward 2*(8*16 + 16*6) = 448 per sample, backward of the
    # second layer twice that, of the first (weights only) once: 448 + 2*192 + 256 = 1088
    assert all(c.flops == 1088 * c.samples and c.flops <= 1e5 < c.flops + 16 * 1088 for c in flops)


def test_bf16_autocast_trains(small_data) -> None:
    stream = class_incremental(small_data, 2)
    with resolve(OptimConfig(precision="bf16")).autocast(torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    result = train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0), Naive(),
                   OptimConfig(lr=0.05, epochs=3, precision="bf16"), seed=0)
    assert result.matrix[0, 0] > 0.9 and result.matrix[1, 1] > 0.9
