"""Input subspaces of a network's layers, the machinery of the gradient-projection methods (GPM, CUBER): the
part they hold, :class:`LayerSubspaces` (each layer's basis, grown after every experience, and the projection
of gradients off bases), and the linear algebra under it.

A linear layer ``y = W x + b`` maps an input ``x`` the same way after an update ``dW, db`` exactly when
``[dW db] [x; 1] = 0``. So if every update of a layer is orthogonal to the span of the inputs ``[x; 1]``
an old task fed it, the layer's outputs on that task do not move (Saha et al., ICLR 2021). A convolution
is the same linear map on each patch its kernel covers, so its inputs are the unfolded patches. Here a
layer's weight and bias are one matrix ``[W b]`` of shape (out, d) over inputs ``[x; 1]`` of size d (no
bias column for a layer without a bias), and its input subspace is an orthonormal basis ``M`` (d, K).

Representations are summarized by their Gram matrix ``C = sum x x^T`` (d, d), accumulated batch by
batch in float64: the squared singular values of the representation matrix are the eigenvalues of ``C``,
so the energy criterion of the paper's SVD reads the same from ``C``, whose size does not grow with
the number of samples (or of patches)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, TensorSet
from lifelong.errors import ConfigError
from lifelong.models.modes import eval_mode
from lifelong.models.nets import split_model

#: Relative slack on the energy criterion, so that a threshold met exactly is met in floating point too.
ENERGY_SLACK = 1e-9


def projected_layers(model: nn.Module) -> dict[str, nn.Linear | nn.Conv2d]:
    """The model's linear and (ungrouped) 2-D convolution layers whose weights train, by module name."""
    layers: dict[str, nn.Linear | nn.Conv2d] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ConfigError(f"strategy: gradient projection handles ungrouped convolutions only; layer {name!r} "
                              f"has groups={module.groups}")
        if isinstance(module, nn.Linear | nn.Conv2d) and module.weight.requires_grad:
            layers[name] = module
    return layers


def layer_inputs(layer: nn.Linear | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The rows ``[x; 1]`` (N, d) that ``layer`` multiplies by ``[W b]^T`` given its input ``x``: every
    position of a linear layer's input, every patch of a convolution's."""
    if isinstance(layer, nn.Conv2d):
        patches = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (B, d0, L)
        rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    else:
        rows = x.reshape(-1, x.shape[-1])
    rows = rows.double()
    if layer.bias is not None:
        rows = torch.cat([rows, rows.new_ones(len(rows), 1)], dim=1)
    return rows


@torch.no_grad()
def input_grams(model: nn.Module, layers: dict[str, nn.Linear | nn.Conv2d],
                forward: Callable[[], object]) -> dict[str, torch.Tensor]:
    """Gram matrices ``sum [x; 1][x; 1]^T`` (d, d), float64, of each layer's inputs during ``forward()``,
    which runs the model on the samples (read by forward hooks), in eval mode."""
    grams: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
            rows = layer_inputs(layers[name], inputs[0])
            grams[name] = grams[name] + rows.T @ rows if name in grams else rows.T @ rows
        return record

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    try:
        with eval_mode(model):
            forward()
    finally:
        for handle in handles:
            handle.remove()
    return grams


def gradient_matrix(layer: nn.Linear | nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``[dW db]`` (out, d) from a weight-shaped and a bias-shaped tensor (gradients; a layer with a bias
    whose gradient is None gets a zero column)."""
    matrix = weight.reshape(weight.shape[0], -1)
    if layer.bias is None:
        return matrix
    return torch.cat([matrix, (torch.zeros_like(layer.bias) if bias is None else bias).unsqueeze(1)], dim=1)


def layer_gradients(layers: dict[str, nn.Linear | nn.Conv2d], loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """``[dW db]`` (out, d) of ``loss`` for each layer, by name, leaving every ``.grad`` untouched."""
    params = [p for layer in layers.values() for p in (layer.weight, layer.bias) if p is not None and p.requires_grad]
    grads = dict(zip(map(id, params), torch.autograd.grad(loss, params, allow_unused=True), strict=True))
    matrices = {}
    for name, layer in layers.items():
        weight = grads.get(id(layer.weight))
        bias = None if layer.bias is None else grads.get(id(layer.bias))
        matrices[name] = gradient_matrix(layer, torch.zeros_like(layer.weight) if weight is None else weight, bias)
    return matrices


def write_gradient(layer: nn.Linear | nn.Conv2d, matrix: torch.Tensor) -> None:
    """Copy ``[dW db]`` (out, d) back into the layer's ``.grad`` tensors."""
    assert layer.weight.grad is not None
    width = layer.weight.grad[0].numel()
    layer.weight.grad.copy_(matrix[:, :width].reshape_as(layer.weight.grad))
    if layer.bias is not None and layer.bias.grad is not None:
        layer.bias.grad.copy_(matrix[:, width])


def project_out(gradient: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``G - G M M^T``: the gradient (out, d) with its component in the span of ``basis`` (d, K, orthonormal
    columns) removed, so the update leaves the layer's outputs on inputs in that span unchanged."""
    return gradient - (gradient @ basis) @ basis.T


def fewest_reaching(energies: torch.Tensor, needed: float, total: float) -> int:
    """How many of ``energies`` (descending) must be summed to reach ``needed``: the paper's "fewest
    directions whose energy reaches the threshold" (0 when ``needed <= 0``; all of them if they never do)."""
    if needed <= ENERGY_SLACK * total:
        return 0
    short = torch.cumsum(energies, 0) < needed - ENERGY_SLACK * total
    return min(int(short.sum()) + 1, len(energies))


def grow_basis(basis: torch.Tensor | None, gram: torch.Tensor, threshold: float) -> torch.Tensor:
    """GPM's memory update (Saha et al. 2021, Eqs. 5 and 8-9) from a task's representation Gram ``C``
    (d, d): the energy ``trace(M^T C M)`` the basis ``M`` (d, K) already captures counts first, then the
    fewest top eigenvectors of the residual ``(I - M M^T) C (I - M M^T)`` are appended so that the captured
    energy reaches ``threshold * trace(C)``. Returns the new basis (d, K + k), float32 on ``gram``'s device,
    the old columns unchanged and the new ones orthonormal to them."""
    gram = gram.double()
    d = gram.shape[0]
    old = gram.new_zeros(d, 0) if basis is None else basis.to(gram)
    total = float(gram.trace())
    kept = float((old.T @ gram @ old).trace())
    complement = torch.eye(d, dtype=gram.dtype, device=gram.device) - old @ old.T
    values, vectors = torch.linalg.eigh(complement @ gram @ complement)  # ascending
    values, vectors = values.flip(0).clamp_min(0.0), vectors.flip(1)
    rank = int((values > ENERGY_SLACK * max(total, 1e-300)).sum())
    k = min(fewest_reaching(values[:rank], threshold * total - kept, total), d - old.shape[1])
    if k == 0:
        return old.float()
    new = vectors[:, :k]
    new, _ = torch.linalg.qr(new - old @ (old.T @ new))  # orthogonal to the old columns to working precision
    return torch.cat([old, new], dim=1).float()


def column_energies(basis: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """``u_i^T C u_i`` (K,) for each column ``u_i`` of ``basis`` (d, K): how much of a task's
    representation energy each basis direction carries."""
    basis = basis.to(gram)
    return ((gram @ basis) * basis).sum(dim=0)


def representation_sample(model: nn.Module, data: TensorSet, samples: int, generator: torch.Generator) -> Batch:
    """``samples`` samples of ``data`` drawn with ``generator``, on the model's device: the experience's
    representation (125 training samples in Saha et al.)."""
    chosen = torch.randperm(len(data), generator=generator)[:samples]
    batch = data.subset(chosen).batch()
    device = next(model.parameters()).device
    return Batch(batch.x.to(device), batch.y.to(device), batch.task.to(device))


def check_layer_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """``strategy.layer_thresholds`` as a tuple, each in (0, 1], or the one-line refusal."""
    values = tuple(float(t) for t in thresholds)
    if any(not 0 < t <= 1 for t in values):
        raise ConfigError(f"strategy.layer_thresholds must each be > 0 and <= 1, got {list(values)}")
    return values


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """The model's BatchNorm layers normalize by the statistics of the batch they see, in training and in
    evaluation alike, and update no running statistics, for the block (GPM's official code builds its
    BatchNorm layers with ``track_running_stats=False``); each layer's mode and setting come back after."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.training, m.track_running_stats = True, False  # training mode, no running statistics: the batch's own
    try:
        yield
    finally:
        for m, (training, track) in zip(norms, saved, strict=True):
            m.training, m.track_running_stats = training, track


class LayerSubspaces:
    """Each projected layer's input basis (d, K) by module name, grown after every experience by GPM's rule
    (:func:`grow_basis`) at a threshold per layer, raised by ``threshold_increment`` per experience already
    in the bases (capped at 1); and the projection of every step's gradient off given bases (the bases
    themselves for GPM, what CUBER still protects of them).

    ``threshold``: every layer's threshold, unless ``layer_thresholds`` gives one per projected layer, in the
    order of ``model.named_modules()`` (the paper's permuted-MNIST MLP: 0.95, 0.99, 0.99).

    ``task_ids``: the stream gives task ids. The rows of the model's head (its backbone/head split,
    :func:`~lifelong.models.nets.split_model`) of classes no finished experience trained then stay free (the
    paper's separate heads, which it never projects): they never reach those tasks' logits.

    ``batch_norm_statistics``: the model's BatchNorm layers use batch statistics throughout
    (:func:`batch_statistics`, as in the official code) while the holder runs the model through
    :meth:`normalization`."""

    def __init__(self, threshold: float, threshold_increment: float, task_ids: bool,
                 layer_thresholds: Sequence[float] = (), batch_norm_statistics: bool = False) -> None:
        self.threshold, self.threshold_increment, self.task_ids = threshold, threshold_increment, task_ids
        self.layer_thresholds = tuple(layer_thresholds)
        self.batch_norm_statistics = batch_norm_statistics
        self.bases: dict[str, torch.Tensor] = {}
        self.consolidated = 0
        """Experiences whose representations are in the bases."""
        self.rows: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}
        """The head rows of a list of trained classes on a device, made once (an index made from a list
        at every step would make a GPU wait for the host)."""

    def normalization(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """The block runs the model's BatchNorm layers on batch statistics with ``batch_norm_statistics``, as
        they are otherwise."""
        return batch_statistics(model) if self.batch_norm_statistics else contextlib.nullcontext()

    def thresholds(self, names: Sequence[str]) -> dict[str, float]:
        """The threshold of each projected layer of ``names`` (in the model's order) for the next growth."""
        if self.layer_thresholds and len(self.layer_thresholds) != len(names):
            raise ConfigError(f"strategy.layer_thresholds gives {len(self.layer_thresholds)} thresholds but the model "
                              f"has {len(names)} projected layers ({', '.join(names)}): give one per layer")
        base = self.layer_thresholds or (self.threshold,) * len(names)
        raised = self.threshold_increment * self.consolidated
        return {name: min(value + raised, 1.0) for name, value in zip(names, base, strict=True)}

    def grow(self, model: nn.Module, forward: Callable[[], object]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Grow every layer's basis with the inputs ``forward()`` feeds it (the model run on the
        experience's representation); returns their Gram matrices (d, d) and the thresholds used, by layer."""
        layers = projected_layers(model)
        thresholds = self.thresholds(list(layers))
        grams = input_grams(model, layers, forward)
        for name, gram in grams.items():
            self.bases[name] = grow_basis(self.bases.get(name), gram, thresholds[name])
        self.consolidated += 1
        return grams, thresholds

    def project(self, model: nn.Module, bases: dict[str, torch.Tensor], trained_classes: Sequence[int]) -> None:
        """Project each layer's gradient off its basis in ``bases`` (d, K) and zero the gradient of every
        other parameter (normalisation scales and shifts are frozen after the first experience, as the
        official code does with its batch-norm parameters); nothing before the first experience ends.
        ``trained_classes``: the classes finished experiences trained (their head rows, with task ids)."""
        if not self.bases:
            return
        head = split_model(model)[1] if self.task_ids else None
        handled: set[int] = set()
        for name, layer in projected_layers(model).items():
            if name not in self.bases:
                continue
            handled.update(id(p) for p in (layer.weight, layer.bias) if p is not None)
            if layer.weight.grad is None:
                continue
            gradient = gradient_matrix(layer, layer.weight.grad, None if layer.bias is None else layer.bias.grad)
            basis = bases[name].to(gradient)
            if layer is head:
                rows = self.head_rows(trained_classes, gradient.device)
                gradient[rows] = project_out(gradient[rows], basis)
            else:
                gradient = project_out(gradient, basis)
            write_gradient(layer, gradient)
        for p in model.parameters():
            if p.grad is not None and id(p) not in handled:
                p.grad.zero_()

    def head_rows(self, classes: Sequence[int], device: torch.device) -> torch.Tensor:
        key = (tuple(classes), device)
        if key not in self.rows:
            self.rows[key] = torch.tensor(list(classes), dtype=torch.long).to(device)
        return self.rows[key]

    def state(self) -> dict[str, Any]:
        """The bases and the count of experiences in them, as :meth:`load` takes them."""
        return {"bases": dict(self.bases), "consolidated": self.consolidated}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (a strategy's state dict holding its keys)."""
        self.bases, self.consolidated = dict(state["bases"]), int(state["consolidated"])
