"""``model.weights``: local state dicts (torch and safetensors) loaded strictly, backbone files, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lifelong.errors import ConfigError, MissingFileError
from lifelong.models.nets import mlp
from lifelong.models.weights import load_weights, save_backbone


def test_state_dict_round_trip_with_torch_and_safetensors(tmp_path) -> None:
    source = mlp((4,), 3, hidden=(5,), seed=1)
    torch.save(source.state_dict(), tmp_path / "model.pt")
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    for name in ("model.pt", "model.safetensors"):
        fresh = mlp((4,), 3, hidden=(5,), seed=2)
        assert not torch.equal(fresh.head.weight, source.head.weight)
        assert load_weights(fresh, str(tmp_path / name)) == "model"
        for (key, expected), loaded in zip(source.state_dict().items(), fresh.state_dict().values(), strict=True):
            assert torch.equal(loaded, expected), (name, key)


def test_a_mismatch_is_one_line_naming_missing_unexpected_keys_and_shapes(tmp_path) -> None:
    model = mlp((4,), 3, hidden=(2,), seed=0)  # backbone.1: Linear(4, 2), head: Linear(2, 3)
    state = dict(model.state_dict())
    del state["head.bias"]
    state["backbone.1.weight"] = torch.zeros(3, 4)
    for index in range(5):
        state[f"extra.{index}"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ConfigError) as error:
        load_weights(model, str(tmp_path / "bad.pt"))
    message = str(error.value)
    assert "\n" not in message
    assert message == (f"model.weights: {str(tmp_path / 'bad.pt')!r} does not fit the model: 1 missing: head.bias; "
                       "5 unexpected: extra.0, extra.1, extra.2, ... (2 more); 1 shape mismatches (file vs model): "
                       "backbone.1.weight [3, 4] vs [2, 4]")


def test_missing_files_and_pickled_modules_are_refused_in_one_line(tmp_path) -> None:
    model = mlp((4,), 3, hidden=(2,))
    with pytest.raises(MissingFileError, match=r"^model.weights: no such file '.*absent.pt'; give a state dict"):
        load_weights(model, str(tmp_path / "absent.pt"))
    torch.save(model, tmp_path / "module.pt")  # a whole module: unpickling it would run code
    with pytest.raises(ConfigError, match="holds objects other than tensors"):
        load_weights(model, str(tmp_path / "module.pt"))
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match="holds a list, not a dict of tensors"):
        load_weights(model, str(tmp_path / "list.pt"))
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="is not a safetensors file"):
        load_weights(model, str(tmp_path / "broken.safetensors"))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_backbone_file_loads_the_backbone_and_leaves_a_head_of_other_classes_as_initialised(tmp_path,
                                                                                             suffix) -> None:
    pretrained = mlp((4,), 5, hidden=(6,), seed=1)  # pretrained on 5 classes
    description = {"model": {"name": "mlp"}, "dataset": {"name": "synthetic"}, "input_shape": [4], "classes": [0, 1]}
    sidecar = save_backbone(pretrained, tmp_path / f"backbone{suffix}", description)
    assert json.loads(sidecar.read_text())["format"] == "lifelong-backbone" and sidecar.name == "backbone.json"
    model = mlp((4,), 9, hidden=(6,), seed=2)  # continues on 9 classes
    head = model.head.weight.detach().clone()
    assert load_weights(model, str(tmp_path / f"backbone{suffix}")) == "backbone"
    assert torch.equal(model.backbone[1].weight, pretrained.backbone[1].weight)
    assert torch.equal(model.head.weight, head)
    # the strategies' backbone_path: the same file into a bare backbone module (prefix stripped)
    bare = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU())
    assert load_weights(bare, str(tmp_path / f"backbone{suffix}"), "strategy.backbone_path") == "model"
    assert torch.equal(bare[1].bias, pretrained.backbone[1].bias)
    # a backbone of another model says where the file came from
    with pytest.raises(ConfigError, match=r"does not fit the backbone \(the file holds a mlp backbone pretrained on "
                                          r"synthetic inputs \[4\]\): 2 shape mismatches \(file vs model\): "
                                          r"1.weight \[6, 4\] vs \[7, 4\], 1.bias \[6\] vs \[7\]$"):
        load_weights(mlp((4,), 9, hidden=(7,)), str(tmp_path / f"backbone{suffix}"))
