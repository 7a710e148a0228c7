"""Test-time adaptation: corruptions by hand, what each method may change, and adaptation on corrupted digits."""

from __future__ import annotations

import copy

import pytest
import torch

from lifelong import OptimConfig, ResultsStore, cnn, mlp
from lifelong.cli import main
from lifelong.data.streams import TensorSet
from lifelong.errors import ConfigError
from lifelong.tta.corruptions import contrast, corrupt, gradual_severities, pixel_dropout, shifted_stream
from lifelong.tta.loop import adapt, run_tta
from lifelong.tta.methods import BNAdapt, CoTTA, Source, Tent


def test_corruptions_by_hand() -> None:
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # mean 0.5
    assert torch.allclose(contrast(x, 1, torch.Generator()), torch.tensor([[[[0.3, 0.7], [0.3, 0.7]]]]))
    ones = torch.ones(1, 1, 100, 100)
    dropped = pixel_dropout(ones, 5, torch.Generator().manual_seed(0))
    assert abs(1.0 - dropped.mean().item() - 0.5) < 0.02  # severity 5 drops half the pixels
    flat = torch.full((1, 1, 6, 6), 0.25)
    assert torch.allclose(corrupt(flat, "blur", 3, torch.Generator()), flat)  # blur keeps a flat image
    assert gradual_severities(9, 3).tolist() == [1, 1, 2, 2, 3, 3, 2, 2, 1]
    with pytest.raises(ConfigError, match="severity must lie in"):
        corrupt(flat, "blur", 6, torch.Generator())
    with pytest.raises(ConfigError, match="allowed: gaussian_noise"):
        corrupt(flat, "fog", 1, torch.Generator())


def test_shifted_stream_keeps_labels_and_order_is_seeded(digits_data) -> None:
    data = TensorSet.of(digits_data.x_test, digits_data.y_test, 0)
    domains = shifted_stream(data, ["rotation", "contrast"], severity=2, gradual=True, seed=1)
    again = shifted_stream(data, ["rotation", "contrast"], severity=2, gradual=True, seed=1)
    assert [d.name for d in domains] == ["rotation@1-2", "contrast@1-2"]
    assert all(torch.equal(a.x, b.x) for a, b in zip(domains, again, strict=True))
    assert sorted(domains[0].y.tolist()) == sorted(digits_data.y_test.tolist())
    assert domains[1].severity.tolist().count(2) > 0


def test_methods_change_only_what_they_should(source_model, digits_data) -> None:
    x = digits_data.x_test[:32]
    source = copy.deepcopy(source_model)
    Source().setup(source, 0)
    bn = copy.deepcopy(source_model)
    BNAdapt().setup(bn, 0)
    # batch statistics: a batch's logits change when the rest of the batch changes
    assert not torch.allclose(bn(x)[:8], bn(x[:8])) and torch.allclose(source(x)[:8], source(x[:8]), atol=1e-5)
    tent_model = copy.deepcopy(source_model)
    tent = Tent(lr=0.01)
    tent.setup(tent_model, 0)
    tent.step(x)
    changed = {n for n, p in tent_model.named_parameters()
               if not torch.equal(p, dict(source_model.named_parameters())[n])}
    assert changed and all(".1." in n or ".5." in n for n in changed)  # the BatchNorm layers only
    restored = copy.deepcopy(source_model)
    cotta = CoTTA(restore_probability=1.0)
    cotta.setup(restored, 0)
    cotta.step(x)
    # restoring every weight after the step gives back the source weights
    assert all(torch.equal(p, q) for p, q in zip(restored.parameters(), source_model.parameters(), strict=True))
    with pytest.raises(ConfigError, match="normalization layers"):
        Tent().setup(mlp((1, 8, 8), 10), 0)


def test_adaptation_lowers_the_error_on_corrupted_digits(source_model, digits_data, tmp_path) -> None:
    data = TensorSet.of(digits_data.x_test, digits_data.y_test, 0)
    domains = shifted_stream(data, ["gaussian_noise", "blur", "pixel_dropout"], severity=3, seed=0)
    store = ResultsStore(tmp_path / "runs.db")
    errors = {name: adapt(copy.deepcopy(source_model), method, domains, 64, 0, store)
              for name, method in (("source", Source()), ("bn_adapt", BNAdapt()), ("tent", Tent()))}
    assert errors["bn_adapt"].mean_error < errors["source"].mean_error
    assert errors["tent"].mean_error < errors["source"].mean_error
    record = store.get(errors["tent"].run_id)
    assert len(record.experiences) == 3  # one per domain
    assert record.metrics["mean_error"] == pytest.approx(errors["tent"].mean_error)


def test_tta_command_stores_one_run_per_method(tmp_path, capsys) -> None:
    db = tmp_path / "runs.db"
    argv = ["tta", "--db", str(db), "--method", "source,bn_adapt", "--corruptions", "contrast", "--severity", "2",
            "--set", "model.channels=[8]", "--set", "optim.epochs=1", "--set", "run.progress=false"]
    assert main(argv) == 0
    assert "contrast@2" in capsys.readouterr().out
    runs = ResultsStore(db).runs()
    assert [r.strategy for r in runs] == ["source", "bn_adapt"] and all(r.status == "finished" for r in runs)
    assert main(["tta", "--db", str(db), "--method", "magic"]) == 2
    assert "allowed: source, bn_adapt, tent, cotta" in capsys.readouterr().err


def test_run_tta_trains_once_and_adapts_each_method(digits_data) -> None:
    torch.manual_seed(0)
    results = run_tta(digits_data, cnn(digits_data.input_shape, 10, channels=(8,)), ["source", "cotta"],
                      ["rotation"], severity=1, optim=OptimConfig(epochs=1), seed=0)
    assert list(results) == ["source", "cotta"]
    assert all(0.0 <= r.errors[0] <= 1.0 and r.domains == ["rotation@1"] for r in results.values())
