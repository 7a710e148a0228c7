"""Model weights from local files: ``model.weights``, the frozen-feature strategies' ``backbone_path``, and
the backbone files that ``lifelong pretrain`` writes.

Nothing is downloaded: a pretrained model is one the library trained itself (``lifelong pretrain``,
:mod:`lifelong.protocol.pretrain`) or a file the user has. A file is a ``torch.save``'d dict of tensors,
read with ``weights_only=True`` (no code in the file runs on load; a pickled ``nn.Module`` is refused), or,
by its ``.safetensors`` suffix, a safetensors file (the optional package: ``pip install 'lifelong[weights]'``).
Loading is strict: every tensor of the target and nothing else, with equal shapes; otherwise one line
names the missing and unexpected keys (the first few and their counts) and the shape mismatches.

A backbone file holds only a backbone's tensors, each key prefixed ``backbone.`` as in the full model's
state dict, beside a sidecar ``<stem>.json`` that describes it (model and settings, dataset, classes,
seed, accuracy). The prefix makes the rule unambiguous: a file whose every key starts with ``backbone.``
loads into the target's ``backbone`` (a :class:`~lifelong.models.classifier.Classifier`'s head, whose
classes differ from the pretraining's, keeps its initialisation), or, prefix stripped, into a target that
is a backbone itself (``backbone_path``); any other file loads into the whole target. A plain state dict
of a backbone (no prefix) still loads through ``backbone_path``.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifelong.errors import ConfigError, MissingFileError
from lifelong.models.nets import split_model

BACKBONE = "backbone."
"""The prefix of every key of a backbone file."""

SIDECAR_FORMAT = "lifelong-backbone"
"""The ``format`` entry of a backbone file's sidecar JSON."""

SHOWN_KEYS = 3
"""Keys named per kind of mismatch in an error; the rest are counted."""


def sidecar_path(path: str | Path) -> Path:
    """The description beside a weights file: ``backbone.pt`` -> ``backbone.json``."""
    return Path(path).with_suffix(".json")


def check_backbone_output(path: str | Path, field: str = "--output") -> None:
    """Refuse, before anything trains, a backbone path that cannot be written as asked: its description
    would overwrite it (a ``.json`` path), it names a folder, a part of its folder is a regular file, or
    it asks for safetensors without the package."""
    path = Path(path)
    if sidecar_path(path) == path:
        raise ConfigError(f"{field} {str(path)!r}: the backbone's description is written to a .json file beside "
                          "it; give a .pt or .safetensors path")
    if path.is_dir():
        raise ConfigError(f"{field} {str(path)!r} is a folder; give a file path such as "
                          f"{str(path / 'backbone.pt')!r}")
    blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"{field} {str(path)!r}: {str(blocking)!r} is a file, not a folder; choose another path")
    if path.suffix == ".safetensors" and importlib.util.find_spec("safetensors") is None:
        raise ConfigError(f"{field} {str(path)!r}: writing safetensors needs the safetensors package: "
                          "pip install 'lifelong[weights]', or give a .pt path")


def check_weights_file(path: str, field: str) -> None:
    """Raise :class:`MissingFileError` naming ``field`` unless ``path`` is a file."""
    if not Path(path).is_file():
        raise MissingFileError(f"{field}: no such file {path!r}; give a state dict saved with torch.save or a "
                               ".safetensors file")


def read_weights(path: str, field: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, on the CPU; one-line :class:`ConfigError` naming ``field`` when the
    file is not a dict of tensors."""
    check_weights_file(path, field)
    if path.endswith(".safetensors"):
        return _read_safetensors(path, field)
    try:
        loaded = torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"{field}: {path!r} holds objects other than tensors (a pickled module?); save "
                          "module.state_dict() instead") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ConfigError(f"{field}: {path!r} is not a torch.save file: {str(error).splitlines()[0]}") from None
    if not isinstance(loaded, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in loaded.items()):
        raise ConfigError(f"{field}: {path!r} holds a {type(loaded).__name__}, not a dict of tensors; save "
                          "module.state_dict()")
    return dict(loaded)


def _read_safetensors(path: str, field: str) -> dict[str, torch.Tensor]:
    try:
        import safetensors
        from safetensors.torch import load_file
    except ImportError:
        raise ConfigError(f"{field}: reading {path!r} needs the safetensors package: "
                          "pip install 'lifelong[weights]'") from None
    try:
        return load_file(path, device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise ConfigError(f"{field}: {path!r} is not a safetensors file: {str(error).splitlines()[0]}") from None


def describe_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``given`` from loading strictly where ``expected`` is: missing and unexpected keys and
    shape mismatches, each with a count and the first :data:`SHOWN_KEYS`; empty when it fits."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {list(given[k].shape)} vs {list(expected[k].shape)}" for k in expected
              if k in given and given[k].shape != expected[k].shape]
    return "; ".join(f"{len(names)} {label}: {_first(names)}" for label, names in
                     (("missing", missing), ("unexpected", unexpected), ("shape mismatches (file vs model)", shapes))
                     if names)


def _first(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN_KEYS])
    return shown + (f", ... ({len(names) - SHOWN_KEYS} more)" if len(names) > SHOWN_KEYS else "")


def load_weights(model: nn.Module, path: str, field: str = "model.weights") -> str:
    """Load a weights file into ``model`` strictly (the module rule above) and return what was loaded:
    ``"model"`` or ``"backbone"`` (a backbone file into a model with a ``backbone``)."""
    state = read_weights(path, field)
    target, part = model, "model"
    own = model.state_dict()
    if state and all(k.startswith(BACKBONE) for k in state) and not all(k.startswith(BACKBONE) for k in own):
        state = {k.removeprefix(BACKBONE): v for k, v in state.items()}
        backbone = getattr(model, "backbone", None)
        if isinstance(backbone, nn.Module):
            target, part = backbone, "backbone"
            own = backbone.state_dict()
    problem = describe_mismatch(own, state)
    if problem:
        raise ConfigError(f"{field}: {path!r} does not fit the {part}{_origin(path)}: {problem}")
    target.load_state_dict(state)
    return part


def _origin(path: str) -> str:
    """Where a backbone file came from, read from its sidecar (empty without one)."""
    sidecar = sidecar_path(path)
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(info, dict) or info.get("format") != SIDECAR_FORMAT:
        return ""
    return f" (the file holds a {info.get('model', {}).get('name')} backbone pretrained on " \
           f"{info.get('dataset', {}).get('name')} inputs {info.get('input_shape')})"


def save_backbone(model: nn.Module, path: str | Path, description: Mapping[str, Any]) -> Path:
    """Write ``model``'s backbone as a backbone file (``torch.save``, or safetensors by the suffix) and
    ``description`` in its sidecar JSON; returns the sidecar's path."""
    backbone = split_model(model)[0]
    state = {BACKBONE + k: v.detach().cpu().clone().contiguous() for k, v in backbone.state_dict().items()}
    path = Path(path)
    check_backbone_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"format": SIDECAR_FORMAT})
    else:
        torch.save(state, path)
    sidecar = sidecar_path(path)
    sidecar.write_text(json.dumps({"format": SIDECAR_FORMAT, **description}, indent=2) + "\n", encoding="utf-8")
    return sidecar
