"""Runner overhead against hand-written PyTorch loops doing the same work, for every strategy family.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [--repeats 15] [--strategies naive,er,...]

On class-incremental digits (5 x 2 classes, MLP 256-256, SGD, batch 16, 5 epochs), each strategy
family (naive, er, der, derpp, er_ace, ewc, lwf, icarl) is run once through ``lifelong.train`` and
once through a plain loop written here, as interleaved pairs (which of the two goes first
alternates), several times. The plain loop does what the strategy does, in the same order and with
the same draws: the same model initialisation, the same batches (tensor slicing in the runner's
seeded order, :func:`lifelong.data.loader.epoch_order`), the same memory policy drawing from a
generator seeded as the strategy seeds its own, the same passes and the same evaluations after each
experience. So both give the same accuracy matrix, which is checked (``same matrix``: the largest
difference between the two, 0 when they agree bit for bit).

Prints the median wall time of each, the median of the per-pair ratios (each pair ran under the same
machine conditions) and the ratio of the minimum times (noise from a shared machine only ever adds
time, so the minimum is the least disturbed estimate).

A second workload, ``digits-resnet``, is the image setting: the reduced ResNet-18 (nf 8) on the
digits as 1x8x8 images, with the runner's training augmentation (inputs normalised once, every new
and every replayed batch cropped and flipped from the run's augmentation generator); the plain loop
does the same, with a generator seeded as the runner seeds its own, so the matrices agree there too.
Its gradients are clipped to norm 1 in both loops: the EWC penalty on the batch-norm scales is stiff
enough to diverge without it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from lifelong import (DER, ER, ERACE, EWC, DERpp, ICaRL, LwF, Naive, OptimConfig, Stream, class_incremental,
                      digits, mlp, resnet18, train)
from lifelong.data.augment import Augment
from lifelong.data.loader import derive_seed, epoch_order
from lifelong.runner.loop import AUGMENT_TAG
from lifelong.strategies.base import Strategy


@dataclass(frozen=True)
class Workload:
    """A stream, a model builder and optimizer settings to compare the runner and the plain loop on,
    with the runner's training augmentation or none."""

    name: str
    stream: Callable[[], Stream]
    model: Callable[[Stream], nn.Module]
    optim: OptimConfig
    augment: Augment | None = None


WORKLOADS = {
    "digits-mlp": Workload("digits MLP 256-256", lambda: class_incremental(digits(), 5),
                           lambda stream: mlp(stream.input_shape, stream.n_classes),
                           OptimConfig(lr=0.03, momentum=0.9, batch_size=16, epochs=5)),
    "digits-resnet": Workload("digits ResNet-18 nf=8 with crops and flips", lambda: class_incremental(digits(), 5),
                              lambda stream: resnet18(stream.input_shape, stream.n_classes, nf=8),
                              OptimConfig(lr=0.01, momentum=0.9, batch_size=16, epochs=2, grad_clip=1.0),
                              Augment(crop_padding=1, flip=True, mean=(0.3,), std=(0.4,))),
}
BUFFER_SIZE = 200


class Reservoir:
    """A reservoir memory written by hand (algorithm R, one draw per offered row) over rows of several
    tensors, drawing from ``generator`` in the order the strategy does."""

    def __init__(self, generator: torch.Generator, capacity: int = BUFFER_SIZE) -> None:
        self.generator, self.capacity, self.seen = generator, capacity, 0
        self.storage: list[torch.Tensor] = []

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def sample(self, n: int) -> list[torch.Tensor]:
        pick = torch.randperm(len(self), generator=self.generator)[:n]
        return [kept[pick] for kept in self.storage]

    def offer(self, *rows: torch.Tensor) -> None:
        if not self.storage:
            self.storage = [torch.zeros(self.capacity, *row.shape[1:], dtype=row.dtype) for row in rows]
        chosen = {}
        for row, u in enumerate(torch.rand(len(rows[0]), generator=self.generator).tolist()):
            position = self.seen + row
            slot = position if position < self.capacity else int(u * (position + 1))
            if slot < self.capacity:
                chosen[slot] = row
        self.seen += len(rows[0])
        if chosen:
            slots, index = torch.tensor(list(chosen)), torch.tensor(list(chosen.values()))
            for kept, row in zip(self.storage, rows, strict=True):
                kept[slots] = row[index]


class Method:
    """One continual-learning method as a hand-written script has it: the loss of a batch, what happens
    after an experience, and the prediction rule. Plain fine-tuning by default. ``loss`` takes the batch
    as trained on (``x``, augmented) and as stored (``raw``); ``augment`` augments replayed inputs."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(derive_seed(seed, 0x5EED))  # as Strategy.setup seeds it
        self.augment: Callable[[torch.Tensor], torch.Tensor] = lambda x: x

    def training_set(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    def after_experience(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        pass

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x).argmax(1)


class ReplayMethod(Method):
    """ER (Chaudhry et al. 2019): the new batch and a batch from the reservoir in one cross-entropy."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.memory = Reservoir(self.generator)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        inputs, targets = x, y
        if len(self.memory):
            old_x, old_y = self.memory.sample(len(y))
            inputs, targets = torch.cat([x, self.augment(old_x)]), torch.cat([y, old_y])
        loss = F.cross_entropy(model(inputs), targets)
        self.memory.offer(raw, y)
        return loss


class AsymmetricReplayMethod(ReplayMethod):
    """ER-ACE (Caccia et al. 2022): the new batch competes only among its own classes."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        present = torch.zeros(logits.shape[1], dtype=torch.bool)
        present[y] = True
        loss = F.cross_entropy(logits.masked_fill(~present, torch.finfo(logits.dtype).min), y)
        if len(self.memory):
            old_x, old_y = self.memory.sample(len(y))
            loss = loss + F.cross_entropy(model(self.augment(old_x)), old_y)
        self.memory.offer(raw, y)
        return loss


class DarkReplayMethod(ReplayMethod):
    """DER (``beta = 0``) and DER++ (Buzzega et al. 2020): the logits of a replayed batch are pulled to
    those stored with it; DER++ adds cross-entropy on a second replayed batch's labels."""

    def __init__(self, seed: int, alpha: float = 0.2, beta: float = 0.0) -> None:
        super().__init__(seed)
        self.alpha, self.beta = alpha, beta

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        replayed = []  # drawn before the new batch enters the memory
        if len(self.memory):
            old_x, _, old_logits = self.memory.sample(len(y))
            replayed.append(self.alpha * F.mse_loss(model(self.augment(old_x)), old_logits))
            if self.beta:
                old_x, old_y, _ = self.memory.sample(len(y))
                replayed.append(self.beta * F.cross_entropy(model(self.augment(old_x)), old_y))
        out = model(x)
        loss = F.cross_entropy(out, y)
        self.memory.offer(raw, y, out.detach())
        for term in replayed:
            loss = loss + term
        return loss


class FisherMethod(Method):
    """Online EWC (Kirkpatrick et al. 2017): ``lam / 2 * sum F (theta - theta*)^2``, with the Fisher of
    labels sampled from the model, per-sample gradients by ``torch.func``, summed over experiences."""

    def __init__(self, seed: int, lam: float = 100.0) -> None:
        super().__init__(seed)
        self.lam = lam
        self.fisher: list[torch.Tensor] = []
        self.anchor: list[torch.Tensor] = []

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        if self.anchor:
            penalty = sum((f * (p - a) ** 2).sum() for p, a, f in zip(model.parameters(), self.anchor, self.fisher))
            loss = loss + 0.5 * self.lam * penalty
        return loss

    def after_experience(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        model.eval()
        params = {k: v.detach() for k, v in model.named_parameters()}

        def nll(p: dict[str, torch.Tensor], sample: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            out = functional_call(model, p, (sample.unsqueeze(0),))  # (1, C)
            return -F.log_softmax(out, dim=1)[0].gather(0, label.unsqueeze(0))[0]

        per_sample = vmap(grad(nll), in_dims=(None, 0, 0))
        fisher = [torch.zeros_like(p) for p in params.values()]
        chunk = 4 * 2**20 // sum(4 * p.numel() for p in params.values())  # 4 MiB of per-sample gradients a call
        for begin in range(0, len(x), 256):
            inputs = x[begin:begin + 256]
            with torch.no_grad():
                labels = torch.multinomial(F.softmax(model(inputs), dim=1), 1, generator=self.generator).flatten()
            for start in range(0, len(inputs), chunk):
                grads = per_sample(params, inputs[start:start + chunk], labels[start:start + chunk]).values()
                for total, g in zip(fisher, grads, strict=True):
                    total += (g**2).sum(dim=0)
        model.train()
        fisher = [f / len(x) for f in fisher]
        self.fisher = [old + new for old, new in zip(self.fisher, fisher, strict=True)] if self.fisher else fisher
        self.anchor = [p.detach().clone() for p in model.parameters()]


class DistillationMethod(Method):
    """LwF (Li & Hoiem 2017): distillation at temperature 2 from the model of the previous experience on
    the classes seen so far."""

    def __init__(self, seed: int, alpha: float = 1.0, temperature: float = 2.0) -> None:
        super().__init__(seed)
        self.alpha, self.temperature = alpha, temperature
        self.old: nn.Module | None = None
        self.seen: list[int] = []

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        out = model(x)
        loss = F.cross_entropy(out, y)
        if self.old is not None:
            with torch.no_grad():
                teacher = self.old(x)[:, self.seen]
            t = self.temperature
            loss = loss + self.alpha * t**2 * F.kl_div(F.log_softmax(out[:, self.seen] / t, dim=1),
                                                       F.softmax(teacher / t, dim=1), reduction="batchmean")
        return loss

    def after_experience(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.seen = sorted(set(self.seen) | set(y.tolist()))
        self.old = copy.deepcopy(model).eval().requires_grad_(False)


class ExemplarMethod(Method):
    """iCaRL (Rebuffi et al. 2017): sigmoid cross-entropy with the old model's outputs as targets for the
    old classes, exemplars herded per class, nearest-mean-of-exemplars classification."""

    def __init__(self, seed: int, memory: int = BUFFER_SIZE) -> None:
        super().__init__(seed)
        self.memory = memory
        self.exemplars: tuple[torch.Tensor, torch.Tensor] | None = None
        self.old: nn.Module | None = None
        self.seen: list[int] = []
        self.active: list[int] = []
        self.distilled: list[int] = []
        self.means = torch.zeros(0)
        self.mean_classes = torch.zeros(0, dtype=torch.long)

    def training_set(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        arrived = sorted(set(y.tolist()))
        self.active = sorted(set(self.seen) | set(arrived))
        self.distilled = [c for c in self.seen if c not in arrived]
        if self.exemplars is None:
            return x, y
        return torch.cat([x, self.exemplars[0]]), torch.cat([y, self.exemplars[1]])

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        logits = model(x)[:, self.active]
        targets = (y.unsqueeze(1) == torch.tensor(self.active)).float()
        if self.old is not None and self.distilled:
            columns = [self.active.index(c) for c in self.distilled]
            with torch.no_grad():
                targets[:, columns] = torch.sigmoid(self.old(x)[:, self.distilled])
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(dim=1).mean()

    @staticmethod
    def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        backbone = model.backbone
        backbone.eval()
        with torch.no_grad():
            out = F.normalize(torch.cat([backbone(x[b:b + 1024]) for b in range(0, len(x), 1024)]), dim=1)
        backbone.train()
        return out

    @staticmethod
    def herd(features: torch.Tensor, count: int) -> torch.Tensor:
        target, running = features.mean(dim=0), torch.zeros(features.shape[1])
        available, chosen = torch.ones(len(features), dtype=torch.bool), []
        for k in range(1, min(count, len(features)) + 1):
            distance = (target - (running + features) / k).norm(dim=1).masked_fill(~available, float("inf"))
            index = int(distance.argmin())
            chosen.append(index)
            available[index] = False
            running += features[index]
        return torch.tensor(chosen, dtype=torch.long)

    def after_experience(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        train_x, train_y = x, y
        self.seen = sorted(set(self.seen) | set(train_y.tolist()))
        self.old = copy.deepcopy(model).eval().requires_grad_(False)
        per_class = self.memory // len(self.seen)
        kept_x, kept_y = [], []
        for c in self.seen:
            old_x = None if self.exemplars is None else self.exemplars[0][self.exemplars[1] == c]
            if (train_y == c).any():
                members = train_x[train_y == c] if old_x is None else torch.cat([old_x, train_x[train_y == c]])
                kept = members[self.herd(self.features(model, members), per_class)]
            else:
                kept = old_x[:per_class]
            kept_x.append(kept)
            kept_y.append(torch.full((len(kept),), c))
        self.exemplars = (torch.cat(kept_x), torch.cat(kept_y))
        features = self.features(model, self.exemplars[0])
        self.mean_classes = torch.tensor(self.seen)
        self.means = F.normalize(torch.stack([features[self.exemplars[1] == c].mean(dim=0) for c in self.seen]), dim=1)

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not len(self.means):
            return model(x).argmax(1)
        return self.mean_classes[torch.cdist(self.features(model, x), self.means).argmin(dim=1)]


#: name -> (the library's strategy, the hand-written method)
FAMILIES: dict[str, tuple[Callable[[], Strategy], Callable[[int], Method]]] = {
    "naive": (Naive, Method),
    "er": (lambda: ER(buffer_size=BUFFER_SIZE), ReplayMethod),
    "der": (lambda: DER(buffer_size=BUFFER_SIZE, alpha=0.2), DarkReplayMethod),
    "derpp": (lambda: DERpp(buffer_size=BUFFER_SIZE, alpha=0.2, beta=1.0),
              lambda seed: DarkReplayMethod(seed, alpha=0.2, beta=1.0)),
    "er_ace": (lambda: ERACE(buffer_size=BUFFER_SIZE), AsymmetricReplayMethod),
    "ewc": (lambda: EWC(lam=100.0), FisherMethod),
    "lwf": (lambda: LwF(alpha=1.0, temperature=2.0), DistillationMethod),
    "icarl": (lambda: ICaRL(buffer_size=BUFFER_SIZE), ExemplarMethod),
}


def accuracy(model: nn.Module, method: Method, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = int((method.predict(model, x) == y).sum())
    model.train()
    return correct / len(y)


def plain_loop(workload: Workload, stream: Stream, seed: int, family: str) -> list[list[float]]:
    """What a user would write by hand: slicing in the seeded order, the method's loss, SGD."""
    optim = workload.optim
    torch.manual_seed(seed)
    model = workload.model(stream)
    method = FAMILIES[family][1](seed)
    augment, generator = workload.augment, None
    if augment is not None:  # as the runner does: inputs normalised once, its own generator for the draws
        stream = stream.map_inputs(augment.normalize)
        generator = torch.Generator().manual_seed(derive_seed(seed, AUGMENT_TAG, 0))
        method.augment = lambda x: augment(x, generator)
    tests = [(e.test.x, e.test.y) for e in stream]
    [accuracy(model, method, x, y) for x, y in tests]
    rows = []
    for index, experience in enumerate(stream):
        optimizer = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum)
        x_all, y_all = method.training_set(experience.train.x, experience.train.y)
        model.train()
        for epoch in range(optim.epochs):
            order = epoch_order(len(y_all), seed, index, epoch)
            for begin in range(0, len(order), optim.batch_size):
                batch = order[begin:begin + optim.batch_size]
                raw = x_all[batch]
                loss = method.loss(model, raw if augment is None else augment(raw, generator), y_all[batch], raw)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if optim.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
                optimizer.step()
                loss.item()
        method.after_experience(model, experience.train.x, experience.train.y)
        rows.append([accuracy(model, method, x, y) for x, y in tests])
    return rows


def runner_loop(workload: Workload, stream: Stream, seed: int, family: str) -> list[list[float]]:
    torch.manual_seed(seed)
    model = workload.model(stream)
    return train(stream, model, FAMILIES[family][0](), workload.optim, seed=seed, device="cpu",
                 augment=workload.augment).matrix.tolist()


def compare(workload: Workload, stream: Stream, family: str, repeats: int) -> str:
    """One table row: interleaved pairs of the plain loop and the runner, after a warm-up pair whose
    accuracy matrices are compared."""
    plain_rows = plain_loop(workload, stream, 0, family)  # warm-up: first optimizer step imports torch internals
    runner_rows = runner_loop(workload, stream, 0, family)
    difference = (torch.tensor(plain_rows) - torch.tensor(runner_rows)).abs().max().item()
    plain_times: list[float] = []
    runner_times: list[float] = []
    for repeat in range(repeats):
        pair = [(plain_times, plain_loop), (runner_times, runner_loop)]
        for times, fn in pair if repeat % 2 == 0 else pair[::-1]:
            started = time.perf_counter()
            fn(workload, stream, repeat, family)
            times.append(time.perf_counter() - started)
    ratio = statistics.median(r / p for r, p in zip(runner_times, plain_times, strict=True))
    plain, runner = statistics.median(plain_times), statistics.median(runner_times)
    fastest = min(runner_times) / min(plain_times)
    return f"| {family} | {plain:.3f} | {runner:.3f} | {ratio:.3f} | {fastest:.3f} | {difference:.3g} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--strategies", default=",".join(FAMILIES), help="comma-separated families to compare")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated workloads")
    args = parser.parse_args()
    families = args.strategies.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.repeats} interleaved repeats")
    for key in args.workloads.split(","):
        workload = WORKLOADS[key]
        stream = workload.stream()
        print()
        print(f"{workload.name}: {stream.name}, batch {workload.optim.batch_size}, {workload.optim.epochs} epochs")
        print()
        print("| strategy | plain loop (s, median) | runner (s, median) | runner / plain, median of pairs "
              "| runner / plain, minimum times | same matrix (largest difference) |")
        print("|---|---|---|---|---|---|")
        for family in families:
            print(compare(workload, stream, family, args.repeats), flush=True)


if __name__ == "__main__":
    main()
