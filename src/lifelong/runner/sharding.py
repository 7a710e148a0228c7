"""A model too large for one device, sharded over the data-parallel ranks with FSDP2 (``run.shard = "fsdp"``).

PyTorch's ``torch.distributed.fsdp.fully_shard`` (FSDP2; Zhao et al. 2023, "PyTorch FSDP: Experiences
on Scaling Fully Sharded Data Parallel", VLDB; the ZeRO-3 partitioning of Rajbhandari et al. 2020)
keeps on each rank 1/N of every parameter, its gradient and its optimizer state: each block's
parameters are all-gathered just before its forward (and again before its backward) and freed after,
and its gradients are reduce-scattered (averaged) as backward produces them. The runner therefore
does no gradient averaging of its own for a sharded model (:class:`~lifelong.runner.gradsync.Backward`).

The blocks (:func:`blocks`): every module of each ``nn.ModuleList`` (a transformer's layers) and
every other direct child, with parameters, of the model's ``backbone`` (of the model itself when it
has none); the root then takes what is left (a classifier's head). It works on CPU with gloo as well
as on CUDA with nccl (torch >= 2.6).

What a sharded run cannot do, refused by :func:`check_sharding` before training: strategies that copy
or read whole parameters (a regulariser's anchor, a teacher copy, a projection of the gradient) see
one rank's shards, so only those whose capabilities declare ``sharding`` (they change the data or the loss
alone) run; a checkpoint written by rank 0 would hold its shard only; and the continual-evaluation
curve shards its test sets unevenly over ranks, while every forward of a sharded model is a
collective all ranks must join. The end-of-experience evaluation runs every test set on every rank
for the same reason. :func:`full_state_dict` gathers the trained model's full weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from lifelong.errors import ConfigError

if TYPE_CHECKING:
    pass


def check_sharding(checkpointing: bool, periodic_evaluation: bool, other_weights: bool = False,
                   agvm: bool = False) -> None:
    """Refuse what a sharded run would get wrong (see the module's docstring), in one line each;
    ``other_weights``: the run evaluates weights other than the trained ones (a decayed branch, an
    average), which copies whole parameters; ``agvm``: ``optim.agvm``, which compares whole gradients. A
    strategy that reads whole parameters is refused by its capabilities
    (:func:`lifelong.runner.validation.check_capabilities`)."""
    if agvm:
        raise ConfigError("run.shard='fsdp' cannot run optim.agvm (it compares each module's whole gradients, and "
                          "each rank holds a shard of them); unset optim.agvm or use run.shard='none'")
    if checkpointing:
        raise ConfigError("run.shard='fsdp' cannot write checkpoints yet (rank 0 would save its shard only); "
                          "set run.checkpoint=false")
    if other_weights:
        raise ConfigError("run.shard='fsdp' cannot evaluate a decayed branch or averaged weights yet (they copy "
                          "whole parameters); unset optim.branch_decay and [average], or use run.shard='none'")
    if periodic_evaluation:
        raise ConfigError("run.shard='fsdp' cannot keep an evaluation curve yet (ranks would run different numbers "
                          "of collective forwards); remove run.eval_every_steps / run.eval_every_samples")


def blocks(model: nn.Module) -> list[nn.Module]:
    """The modules sharded one by one (each all-gathered on its own): every module of an
    ``nn.ModuleList`` and every other direct child of ``model.backbone`` (or ``model``) with parameters,
    except a module holding a parameter tied to another module (a language model's token embedding and
    output layer): FSDP2 needs tied parameters in one group, so those stay in the root's."""
    backbone = getattr(model, "backbone", None)
    root = backbone if isinstance(backbone, nn.Module) else model
    uses: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        uses[id(parameter)] = uses.get(id(parameter), 0) + 1
    out: list[nn.Module] = []
    for child in root.children():
        members = list(child) if isinstance(child, nn.ModuleList) else [child]
        out += [m for m in members if next(m.parameters(), None) is not None
                and all(uses[id(p)] == 1 for p in m.parameters())]
    return out


def shard_model(model: nn.Module) -> None:
    """Shard ``model`` in place over the default process group: each of its :func:`blocks`, then the root.

    The root is resharded after forward too (FSDP2 keeps it gathered by default, for the backward that
    usually follows): after an evaluation, which has no backward, ``model.parameters()`` would otherwise
    still be the gathered copies, and an optimizer built then would update those instead of the shards."""
    from torch.distributed.fsdp import fully_shard

    for block in blocks(model):
        fully_shard(block)
    fully_shard(model, reshard_after_forward=True)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights as plain tensors, on every rank (a collective: every rank calls it),
    with the names of the unsharded model; a model that is not sharded returns its ``state_dict``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}  # all, gathered
