"""``lifelong pretrain`` end to end on digits: the command writes a backbone file and its description, which
``model.weights`` loads, and a continual run from it learns its base session far better than from a random
backbone at the same (frozen) cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lifelong.cli.pretrain import parse_classes
from lifelong.config import validate_config
from lifelong.errors import ConfigError
from lifelong.experiment import prepare, run_config
from lifelong.models.weights import read_weights
from tests.child import child_environment


def base_session_run(weights: str) -> dict:
    """B-5 Inc-5 on digits in class order, a CNN whose backbone is frozen: only the head trains."""
    return {"model": {"name": "cnn", "channels": [8, 16], "freeze": "backbone", "weights": weights},
            "scenario": {"name": "base_increment", "base_classes": 5, "increment": 5, "shuffle": False},
            "strategy": {"name": "naive"}, "optim": {"epochs": 1, "lr": 0.05},
            "run": {"progress": False, "checkpoint": False}}


def test_pretrain_command_writes_a_backbone_that_a_run_loads_and_starts_from(tmp_path) -> None:
    output = tmp_path / "digits-base.pt"
    done = subprocess.run([sys.executable, "-m", "lifelong", "pretrain", "--set", "dataset.name=digits",
                           "--set", "model.name=cnn", "--set", "model.channels=[8, 16]", "--set", "optim.epochs=3",
                           "--set", "optim.lr=0.05", "--set", "run.progress=false", "--classes", "0-4",
                           "--output", str(output)], cwd=tmp_path, env=child_environment(), text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "validation accuracy" in done.stdout and f"model.weights=\"{output}\"" in done.stdout.replace("\n", "")
    description = json.loads(output.with_suffix(".json").read_text())
    assert description["classes"] == [0, 1, 2, 3, 4] and description["model"]["channels"] == [8, 16]
    assert description["dataset"]["name"] == "digits" and description["input_shape"] == [1, 8, 8]
    assert description["train_samples"] + description["validation_samples"] == 675  # classes 0-4 of the 1347
    assert description["validation_accuracy"] > 0.9
    stored = read_weights(str(output), "model.weights")
    assert all(key.startswith("backbone.") for key in stored)  # the backbone only: the head's classes differ

    pretrained = validate_config(base_session_run(str(output)))
    stream, model, strategy = prepare(pretrained)
    assert torch.equal(model.backbone[0].weight, stored["backbone.0.weight"])
    from_file = run_config(pretrained, prepared=(stream, model, strategy)).matrix
    from_random = run_config(validate_config(base_session_run(""))).matrix
    # after the base session (a linear head on frozen features): pretrained features separate its 5 classes
    assert from_file[0, 0] > 0.9 and from_file[0, 0] > from_random[0, 0] + 0.2, (from_file, from_random)
    assert torch.equal(model.backbone[0].weight.cpu(), stored["backbone.0.weight"])  # frozen through the run


def test_classes_are_parsed_from_ranges_and_lists() -> None:
    assert parse_classes("0-2,7") == [0, 1, 2, 7] and parse_classes("4") == [4]
    with pytest.raises(ConfigError, match="--classes: expected class ids such as 0-4"):
        parse_classes("a-b")


def test_pretrain_refuses_classes_the_dataset_lacks(tmp_path) -> None:
    from lifelong.protocol.pretrain import pretrain

    with pytest.raises(ConfigError, match=r"--classes must name classes of digits \(0-9\), got \[3, 12\]"):
        pretrain(validate_config({}), tmp_path / "x.pt", classes=[3, 12])
    assert not Path(tmp_path / "x.pt").exists()


@pytest.mark.parametrize(("output", "settings", "fragment"), [
    ("side.json", [], "description is written to a .json file beside it"),
    ("folder", [], "is a folder"),
    ("plain/x.pt", [], "'plain' is a file, not a folder"),
    ("x.pt", ["dataset.name=text", 'dataset.domains=["abc.txt"]', "scenario.name=text_domains", "model.name=gpt"],
     "is a text corpus"),
])
def test_pretrain_refuses_what_it_cannot_do_in_one_line_before_training(tmp_path, monkeypatch, capsys, output,
                                                                       settings, fragment) -> None:
    from lifelong.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_text("not a folder")
    (tmp_path / "abc.txt").write_text("a b c\n\nc b a\n\nb a c\n")
    before = sorted(path.name for path in tmp_path.iterdir())
    overrides = [word for setting in ["dataset.name=digits", *settings] for word in ("--set", setting)]
    assert main(["pretrain", "--output", output, *overrides]) == 2
    error = capsys.readouterr().err
    assert fragment in error and error.count("\n") == 1 and "Traceback" not in error
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # nothing trained, nothing written


def test_a_safetensors_output_without_the_package_is_refused_before_training(tmp_path, monkeypatch) -> None:
    import importlib.util

    from lifelong.models.weights import check_backbone_output

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "safetensors" else real(name, *a))
    with pytest.raises(ConfigError, match="needs the safetensors package"):
        check_backbone_output(tmp_path / "b.safetensors")
