"""Online class-incremental Split Fashion-MNIST with each normalization layer (issue 16): one pass over
the stream in batches of 10, experience replay with a 500-sample memory, the same small CNN with
BatchNorm, LayerNorm, GroupNorm, Weight Standardization + Batch-Channel Normalization and AdaB2N.

    OMP_NUM_THREADS=1 python benchmarks/online_norms.py > docs/results/online-norms.md

Settings are fixed before any run and are the same for every norm (none was chosen by looking at test
accuracy): SGD lr 0.05 without momentum, batch 10 (plus 10 replayed samples once the memory holds any),
``optim.epochs = 1`` (each training image is seen once), ER with a reservoir of 500, the ``cnn`` of
``--channels`` with ``model.norm`` the row's norm, no augmentation. Each run trains on the first
``--per-class`` training images of each class in the fixed shuffle of ``benchmarks/fmnist.py`` (the
same subset for every norm and seed; the seed draws the model's initialisation, the order of the batches
and the replay draws), 5 experiences of 2 classes, and is tested on the first ``--test-per-class`` test
images of each class in the same fixed shuffle (the subset and the narrow CNN keep the table of 4 norms
x 3 seeds within 10 minutes of one CPU thread). Runs one after the other on one thread. Prints a markdown
table: mean ± std over seeds of final accuracy (mean over experiences) and average forgetting, and
training seconds per run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from fmnist import PATH  # noqa: E402
from runs import spread, subset  # noqa: E402

from lifelong import ER, OptimConfig, train  # noqa: E402
from lifelong.data import class_incremental  # noqa: E402
from lifelong.data.files import fashion_mnist  # noqa: E402
from lifelong.models import cnn  # noqa: E402
from lifelong.protocol.seeds import parse_seeds  # noqa: E402

NORMS = {"batch": "BatchNorm", "layer": "LayerNorm", "group": "GroupNorm (8 groups)",
         "ws_bcn": "WS + BCN (estimated statistics)", "adab2n": "AdaB2N (kappa 0.5)"}
"""Every ``model.norm`` the table can show; ``--norms`` picks (default: all but ``group``)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=500)
    parser.add_argument("--channels", default="32,64", help="the cnn's widths")
    parser.add_argument("--norms", default="batch,layer,ws_bcn,adab2n")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds, norms = parse_seeds(args.seeds), args.norms.split(",")
    channels = tuple(int(c) for c in args.channels.split(","))
    stream = class_incremental(subset(fashion_mnist(PATH), args.per_class, args.test_per_class), 5)
    optim = OptimConfig(lr=0.05, momentum=0.0, batch_size=10, epochs=1)
    print("# Online class-incremental Split Fashion-MNIST: normalization layers\n")
    print(f"`OMP_NUM_THREADS=1 python benchmarks/online_norms.py --seeds {args.seeds} --per-class {args.per_class} "
          f"--test-per-class {args.test_per_class} --channels {args.channels} --norms {args.norms}` "
          f"(torch {torch.__version__}, one thread)\n")
    print(f"5 experiences of 2 classes, {args.per_class} training images per class (of 6,000) seen once in batches "
          f"of 10, {args.test_per_class} test images per class (of 1,000); ER with a 500-sample reservoir (10 replayed "
          f"per batch); SGD lr 0.05; `cnn(channels={channels})` with `model.norm` set per row. Mean ± std over "
          f"seeds {args.seeds}; training seconds per run.\n")
    print("| norm | final accuracy | forgetting | seconds |")
    print("|---|---|---|---|")
    started = time.perf_counter()
    for norm in norms:
        results = []
        for seed in seeds:
            model = cnn(stream.input_shape, stream.n_classes, channels, norm=norm, seed=seed)
            result = train(stream, model, ER(buffer_size=500), optim, seed=seed, device="cpu")
            results.append((result.metrics["final_accuracy"], result.metrics["forgetting"],
                            sum(c.seconds for c in result.costs)))
        print(f"| {NORMS[norm]} (`{norm}`) | {spread([r[0] for r in results])} | {spread([r[1] for r in results])} | "
              f"{statistics.mean(r[2] for r in results):.0f} |", flush=True)
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
