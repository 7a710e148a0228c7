"""Continual pre-training of a small GPT: English fortunes, then German (then, with ``--domains en,de,es``,
Spanish), every schedule and replay fraction of the papers on the same runner, against count models of
the same text.

    apt-get install -y fortunes fortunes-de fortunes-es     # the text, in /usr/share/games/fortunes
    python benchmarks/pretraining.py --seeds 0,1,2 --workers 2 > docs/results/continual-pretraining.md

Rows (settings fixed before any run, the same model, optimizer, batch and token budget for every row; no
value was chosen by looking at the validation losses reported):

* ``unigram counts`` and ``bigram counts``: add-one smoothed byte counts
  (:func:`lifelong.metrics.objectives.count_model_loss`) fitted on each domain's own training windows and
  evaluated on its validation windows, and a bigram of the union of the domains: what any counter gets
  from the text. Forgetting measures what a language model learned only where its losses lie well below
  these; at 300k tokens and 147 steps per domain every GPT row was above the English bigram, so the
  default budget is now 2M tokens per domain (most of the English fortunes), one pass;

* ``union (reference)``: one model trained from scratch on the union of the domains (``joint``), a cosine
  decay over all of it: the re-training Ibrahim et al. 2024 compare against;
* ``naive, constant``: continuation at a constant learning rate, no re-warm, no replay;
* ``rewarm + redecay, replay p``: every domain re-warms the learning rate (``rewarm``: linear warmup, cosine
  to 0 over the domain; Gupta et al. 2023) with ``p`` of every batch replayed from the earlier domains
  (``replay``; Ibrahim et al. 2024) out of a memory of 32,000 windows (every English window at the default
  budget, as the papers replay from the whole earlier data): 0, 1 %, 5 %, 25 %;
* ``infinite``: the infinite schedule (Singh et al. 2025: one warmup, a cooldown to a constant held across
  the domain switch, no re-warm, and an anneal over the last 10 % of the whole run), no replay;
* ``wsd, branch-off``: the run stays at its constant rate and a copy decays over the last 10 % more steps
  of each domain (``optim.branch_decay``, WSD-S: Wen et al. 2024); the decayed copy is evaluated.

Columns: validation loss (nats per byte) on each domain after the last one, forgetting of the first domain
(its final loss minus its loss right after its own training), the stability gap (mean rise of the earlier
domains' loss after a switch, from an evaluation every ``--eval-every`` steps), the tokens trained on
after the first domain (what continuing costs; the union's: all of its tokens) and in all, and seconds.
Mean ± std over seeds; the seed draws the model, the batches and the document split. A closing summary,
computed from the table, compares every row with the bigram and states what each replay fraction recovers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lifelong import OptimConfig, train
from lifelong.data.streams import Stream
from lifelong.data.text import text_stream
from lifelong.errors import LifelongError
from lifelong.metrics.objectives import count_model_loss
from lifelong.metrics.utilization import lm_flops_per_token, measured_peak, mfu
from lifelong.models.gpt import gpt
from lifelong.protocol.seeds import parse_seeds
from lifelong.strategies import STRATEGIES

sys.path.insert(0, str(Path(__file__).parent))
from runs import finished_runs, record, row_results, spread  # noqa: E402


@dataclass(frozen=True)
class Row:
    label: str
    strategy: str
    schedule: str
    settings: tuple[tuple[str, object], ...] = ()
    schedule_params: tuple[tuple[str, object], ...] = ()
    branch_decay: float | None = None


RESET_PER_DOMAIN = True
"""``optim.reset_per_experience``, a choice stated in the document: a fresh AdamW state at each domain, as a
run restarted from the last domain's weights without its optimizer state has (``false`` keeps the moments
across the switch)."""

ROWS = [
    Row("union (reference)", "joint", "cosine", schedule_params=(("warmup_steps", 20),)),
    Row("naive, constant", "naive", "warmup", schedule_params=(("warmup_steps", 20), ("horizon", "stream"))),
    *(Row(f"rewarm + redecay, replay {fraction:.0%}", "replay" if fraction else "naive", "rewarm",
          (("replay_fraction", fraction), ("buffer_size", 32_000)) if fraction else (),
          (("warmup_steps", 20),)) for fraction in (0.0, 0.01, 0.05, 0.25)),
    Row("infinite", "naive", "infinite", schedule_params=(("warmup_steps", 20), ("cooldown_steps", 100),
                                                          ("constant", 0.25), ("anneal_fraction", 0.1))),
    Row("wsd, branch-off", "naive", "warmup", schedule_params=(("warmup_steps", 20), ("horizon", "stream")),
        branch_decay=0.1),
]


COUNTS = [("unigram counts, each domain's own", 0, False), ("bigram counts, each domain's own", 1, False),
          ("bigram counts, union of the domains", 1, True)]
"""The count baselines: label, order (0 unigram, 1 bigram), fitted on every domain's training windows."""


def make_stream(seed: int, args: argparse.Namespace) -> Stream:
    return text_stream(args.domains.split(","), context=args.context, train_tokens=args.train_tokens,
                       validation_tokens=args.validation_tokens, seed=seed)


def counts(order: int, union: bool, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """A count model's validation loss on each domain: fitted on that domain's training windows, or on
    all of them (``union``)."""
    started = time.perf_counter()
    stream = make_stream(seed, args)
    every = torch.cat([e.train.x for e in stream])
    final = [count_model_loss(every if union else e.train.x, e.test.x, stream.vocab_size, order) for e in stream]
    context = stream.input_shape[0] - 1
    return {"final": final, "tokens": context * len(every), "seconds": time.perf_counter() - started}


def run(row: Row, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One row's figures for one seed, or its one-line error."""
    torch.set_num_threads(1)
    stream = make_stream(seed, args)
    torch.manual_seed(seed)
    peak = measured_peak()
    model = gpt(stream.input_shape, stream.n_classes, stream.vocab_size, d_model=args.width, n_layers=args.layers,
                n_heads=args.heads)
    optim = OptimConfig(name="adamw", lr=args.lr, batch_size=args.batch, epochs=1, weight_decay=0.1, grad_clip=1.0,
                        schedule=row.schedule, schedule_params=dict(row.schedule_params),
                        branch_decay=row.branch_decay, reset_per_experience=RESET_PER_DOMAIN)
    try:
        result = train(stream, model, STRATEGIES[row.strategy](**dict(row.settings)), optim, seed=seed, device="cpu",
                       eval_every_steps=args.eval_every, eval_batch_size=256)
    except LifelongError as error:
        return {"error": str(error)}
    context = stream.input_shape[0] - 1
    first = result.matrix[0, 0] if len(result.matrix) > 1 else None
    return {"final": list(map(float, result.matrix[-1])), "after_first": first,
            "forgetting": None if first is None else float(result.matrix[-1, 0] - first),
            "gap": result.metrics.get("stability_gap"),
            "later_tokens": context * sum(c.samples for c in result.costs[1:]) if len(result.costs) > 1
            else context * result.costs[0].samples,
            "tokens": context * sum(c.samples for c in result.costs),
            "replayed_tokens": result.metrics["replayed_tokens"], "seconds": sum(c.seconds for c in result.costs),
            "flops_per_token": lm_flops_per_token(model), "peak_flops": peak}


def throughput(result: dict[str, Any]) -> tuple[float, float | None]:
    """A run's trained tokens per second of training, and its MFU against the matmul peak measured in the
    run's process before it trained (None for a run recorded before the peak was)."""
    seconds = result["seconds"]
    flops = result.get("flops_per_token")
    return result["tokens"] / seconds, mfu((flops or 0.0) * result["tokens"], seconds, result.get("peak_flops"))


def utilization(results: list[dict[str, Any]]) -> str:
    """The mean MFU of a row's runs in percent, ``n/a`` where a run has no measured peak."""
    values = [throughput(r)[1] for r in results]
    return "n/a" if any(v is None for v in values) else f"{100 * statistics.mean(values):.2f} %"  # type: ignore[misc]


def summary(labels: list[str], finals: dict[str, list[float]], forgetting: dict[str, float | None],
            domains: list[str]) -> None:
    """The closing paragraphs, computed from the table's means: each row against the bigram, and what each
    replay fraction recovers of the forgetting without replay."""
    bigram = finals[COUNTS[1][0]]
    print("\n## Summary (computed from the means above)\n")
    print(f"Bigram counts of each domain's own text: {', '.join(f'{d} {v:.3f}' for d, v in zip(domains, bigram))}. "
          "Final losses below (negative) or above (positive) them, per domain:\n")
    for label in labels:
        if label in finals and not label.startswith(("unigram", "bigram")):
            gaps = ", ".join(f"{d} {v - b:+.3f}" for d, v, b in zip(domains, finals[label], bigram))
            print(f"- {label}: {gaps}")
    base = forgetting.get("rewarm + redecay, replay 0%")
    if base:
        recovered = [f"{label.rsplit(' ', 1)[-1]} {(base - value) / base:.0%} (forgetting {value:.3f})"
                     for label, value in forgetting.items()
                     if label.startswith("rewarm + redecay, replay") and value is not None
                     and not label.endswith(" 0%")]
        print(f"\nForgetting of {domains[0]} without replay (re-warmed): {base:.3f} nats per byte. Recovered by "
              f"replay: {'; '.join(recovered)}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--domains", default="en,de")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--train-tokens", type=int, default=2_000_000, help="per domain")
    parser.add_argument("--validation-tokens", type=int, default=20_000, help="per domain")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", default="", help="row labels to run, separated by ';' (default: all)")
    parser.add_argument("--heading", default="#", help="the Markdown heading of the table's section")
    parser.add_argument("--results", type=Path, default=Path("pretraining-runs.jsonl"),
                        help="each finished run is appended here, and a rerun with the same settings reuses it")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    domains = args.domains.split(",")
    chosen = [label.strip() for label in args.rows.split(";") if label.strip()]
    rows = [row for row in ROWS if not chosen or row.label in chosen]
    count_rows = [entry for entry in COUNTS if not chosen or entry[0] in chosen]
    started = time.perf_counter()
    settings = {k: v for k, v in vars(args).items() if k not in ("seeds", "workers", "results", "rows", "heading")}
    done = finished_runs(args.results, settings)
    steps = args.train_tokens // args.context // args.batch
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {(row, seed): pool.submit(run, row, seed, args) for row in rows for seed in seeds
                   if ("text", row.label, seed) not in done}
        for (row, seed), future in futures.items():
            future.add_done_callback(lambda f, row=row, seed=seed: record(args.results, settings, "text", row.label,
                                                                          seed, f))
        print(f"{args.heading} Continual pre-training: {' -> '.join(domains)} fortunes, a small GPT\n")
        print(f"`python benchmarks/pretraining.py --seeds {args.seeds} --domains {args.domains} "
              f"--context {args.context} --train-tokens {args.train_tokens} "
              f"--validation-tokens {args.validation_tokens} --width {args.width} --layers {args.layers} "
              f"--heads {args.heads} --batch {args.batch} --lr {args.lr:g} "
              f"--eval-every {args.eval_every} --workers {args.workers}"
              + (f" --rows '{args.rows}'" if args.rows else "") + f"` (torch {torch.__version__}, one thread a "
              "run)\n")
        print(f"GPT (byte tokens, context {args.context}, d_model {args.width}, {args.layers} layers, {args.heads} "
              f"heads, tied embeddings); AdamW lr {args.lr:g}, weight decay 0.1 on the weight matrices only (biases, "
              f"LayerNorm parameters and embeddings take none), clipping 1.0, batch {args.batch} windows; "
              f"{args.train_tokens:,} training tokens per domain, one pass ({steps} optimizer steps per domain), "
              f"{args.validation_tokens:,} validation tokens per domain, split by document (documents differing only "
              f"in case, punctuation and spacing counted once); `optim.reset_per_experience = "
              f"{str(RESET_PER_DOMAIN).lower()}`: " + ("a fresh AdamW state at each domain, as a run restarted from "
                                                     "the last domain's weights alone has" if RESET_PER_DOMAIN else
                                                     "the AdamW moments carried across domains")
              + f"; an evaluation every {args.eval_every} steps for the stability gap. Losses in nats per byte "
              f"(bits per byte: divide by ln 2 = 0.693), lower is better; mean ± std over {len(seeds)} seeds.\n")
        loss_columns = " | ".join(f"final loss {d}" for d in domains)
        print(f"| row | {loss_columns} | forgetting {domains[0]} | stability gap | tokens after {domains[0]} | "
              "tokens | replayed tokens | seconds | tokens/s | MFU |")
        print("|---|" + "---|" * (len(domains) + 8))
        finals: dict[str, list[float]] = {}
        forgetting: dict[str, float | None] = {}
        for label, order, union in count_rows:
            results = [counts(order, union, seed, args) for seed in seeds]
            finals[label] = [statistics.mean(r["final"][j] for r in results) for j in range(len(domains))]
            losses = " | ".join(spread([r["final"][j] for r in results]) for j in range(len(domains)))
            print(f"| {label} | {losses} | - | - | - | {statistics.mean(r['tokens'] for r in results):,.0f} | 0 | "
                  f"{statistics.mean(r['seconds'] for r in results):.0f} | - | - |", flush=True)
        for row in rows:
            results = row_results(done, futures, "text", row, row.label, seeds, len(domains) + 9)
            if results is None:
                continue
            finals[row.label] = [statistics.mean(r["final"][j] for r in results) for j in range(len(domains))]
            forgetting[row.label] = (None if any(r["forgetting"] is None for r in results)
                                     else statistics.mean(r["forgetting"] for r in results))
            losses = " | ".join(spread([r["final"][j] for r in results]) for j in range(len(domains)))
            print(f"| {row.label} | {losses} | {spread([r['forgetting'] for r in results])} | "
                  f"{spread([r['gap'] for r in results])} | "
                  f"{statistics.mean(r['later_tokens'] for r in results):,.0f} | "
                  f"{statistics.mean(r['tokens'] for r in results):,.0f} | "
                  f"{statistics.mean(r['replayed_tokens'] for r in results):,.0f} | "
                  f"{statistics.mean(r['seconds'] for r in results):.0f} | "
                  f"{statistics.mean(throughput(r)[0] for r in results):,.0f} | {utilization(results)} |", flush=True)
        if COUNTS[1][0] in finals:
            summary([label for label, _, _ in COUNTS] + [row.label for row in rows], finals, forgetting, domains)
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
