"""The budget protocol (issue 24, Prabhu et al. 2023): every strategy at the same compute per experience,
stated relative to naive's measured epoch; what each run was given and spent is stored and shown."""

from __future__ import annotations

import csv
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong import experiment
from lifelong.cli import main
from lifelong.config import load_config
from lifelong.errors import ConfigError
from lifelong.protocol.budget import FORWARD_SHARE, budget_epochs, measure_reference, run_budgeted
from lifelong.runner.observers import Observer, TrainState
from lifelong.runner.results import ResultsStore
from lifelong.strategies import STRATEGIES
from tests.runner.test_checkpoint_resume import KillAt

SMALL = ["dataset.name=synthetic", "dataset.n_classes=6", "dataset.n_features=8", "dataset.n_per_class=40",
         "dataset.spread=0.5", "scenario.n_experiences=3", "model.hidden=[16]", "optim.lr=0.05", "run.progress=false"]
"""Three experiences of 60 training samples (4 steps of 16 per epoch), an MLP with one hidden layer of 16."""

CLASS_INCREMENTAL = [name for name, cls in STRATEGIES.items()
                     if not cls.CAPABILITIES.task_ids and name not in ("l2p", "dualprompt", "coda_prompt")]
"""Every strategy that runs on a class-incremental stream with an MLP (those that pick parameters by task
id need a task-incremental stream, and the prompt methods a ViT)."""

SETTINGS = {"er": {"buffer_size": 30}, "derpp": {"buffer_size": 30}, "gdumb": {"buffer_size": 30}}


def small_config(tmp_path: Path, *overrides: str):
    return load_config(None, [*SMALL, f"run.db={str(tmp_path / 'runs.db')!r}", *overrides])


class Training(Observer):
    """Records, per experience, the FLOPs spent when training stopped (before the closing hook), the
    steps, the costliest step and the FLOPs the next step would have cost."""

    def __init__(self) -> None:
        self.experiences: list[dict[str, float]] = []
        self.largest = 0.0

    def on_step(self, state: TrainState) -> None:
        self.largest = max(self.largest, state.step_flops)

    def on_training_end(self, state: TrainState) -> None:
        self.experiences.append({"flops": state.experience_flops, "steps": state.experience_step,
                                 "next_step_flops": state.next_step_flops, "largest_step": self.largest})
        self.largest = 0.0


@pytest.fixture
def recorded(monkeypatch):
    """Every budgeted run the protocol starts gets a :class:`Training` observer, by strategy name."""
    observers: dict[str, Training] = {}

    def observe(config):
        observer = Training()
        if config.optim.max_flops is not None:  # not the reference run
            observers[config.strategy.name] = observer
        return [observer]

    monkeypatch.setattr(experiment, "tracking_observers", observe)
    return observers


def test_flop_budget_of_one_naive_epoch_is_spent_within_one_step_by_every_strategy(tmp_path, recorded) -> None:
    """At 1x naive's FLOPs, each strategy spends each experience within one of its steps of the budget, or
    its minimum: one step (the first step always runs) or none (its plan does not train). The closing hook
    (a Fisher estimate, class means) is part of the spending: from the second experience on the steps stop
    early enough to leave it what it cost per sample in the experience before (the experiences here are of
    one size, so that is what it costs again unless the method's closing work changes); in the first, nothing
    measured it yet, so it comes on top.
    Training passes its share only by part of a step whose cost was not yet counted (a memory filling in the
    first experience makes each step of a replaying strategy dearer than the last), never by a whole step."""
    config = small_config(tmp_path)
    rows = run_budgeted(config, {name: SETTINGS.get(name, {}) for name in CLASS_INCREMENTAL}, [1.0], [0])
    assert len(rows) == len(CLASS_INCREMENTAL)
    store = ResultsStore(tmp_path / "runs.db")
    for row in rows:
        training = recorded[row.strategy].experiences
        costs = [e["cost"] for e in store.get(row.run_id).experiences]
        assert row.budget["spent_per_experience"] == [c["flops"] for c in costs]
        closing = [cost["flops"] - trained["flops"] for cost, trained in zip(costs, training, strict=True)]
        for index, (limit, cost, trained) in enumerate(zip(row.budget["limit_per_experience"], costs, training,
                                                           strict=True)):
            assert trained["steps"] == cost["steps"] and trained["flops"] <= cost["flops"], row.label
            reserved = closing[index - 1] if index else 0.0
            if cost["steps"] < 2 or reserved >= limit:  # its minimum: one step, or none
                continue
            spent = trained["flops"] + reserved  # the closing hook cost what it did the experience before
            assert abs(spent - limit) < trained["largest_step"], (row.label, index)
            assert limit < spent + trained["next_step_flops"], (row.label, index)
            if index and closing[index] == closing[index - 1]:  # the closing hook cost what was reserved:
                assert cost["flops"] == spent, (row.label, index)  # all of the experience within one step
    # NCM's closing hook grows when its adaptation ends (class means of every class so far): that experience
    # overspends by the growth alone, which no measure before it could foresee
    ncm = next(row for row in rows if row.label == "ncm")
    naive = next(row for row in rows if row.label == "naive")
    assert ncm.budget["spent_per_experience"][1] > ncm.budget["limit_per_experience"][1]
    assert naive.budget["spent_per_experience"] == naive.budget["reference_per_experience"]
    assert naive.budget["spent_fraction"] == 1.0
    # EWC's Fisher estimate over an experience's samples costs more than one naive epoch: it trains its
    # minimum of one step once that is known, and reports what it spent
    ewc = next(row for row in rows if row.label == "ewc")
    assert ewc.budget["spent_fraction"] > 1.0
    assert [cost["steps"] for cost in (e["cost"] for e in store.get(ewc.run_id).experiences)][1:] == [1, 1]


def test_steps_budget_is_exact_and_joint_gets_the_sum(tmp_path) -> None:
    config = small_config(tmp_path)
    rows = run_budgeted(config, ["naive", "cumulative", "joint"], [0.5, 2.0], [0], unit="steps")
    store = ResultsStore(tmp_path / "runs.db")
    reference = store.get(rows[0].budget["reference_run"])
    assert [e["cost"]["steps"] for e in reference.experiences] == [4, 4, 4]  # one epoch of 60 samples
    for row in rows:
        steps = [e["cost"]["steps"] for e in store.get(row.run_id).experiences]
        expected = [row.level * 4 * 3] if row.label == "joint" else [row.level * 4] * 3
        assert steps == expected == row.budget["limit_per_experience"], row.label
        assert row.budget["spent_fraction"] == 1.0
    # enough epochs for the budget to end training: naive 2 of 4 steps at 2x, cumulative's union of the
    # first two experiences 8 steps per epoch, so one epoch covers its 8-step budget
    assert {(row.label, row.level): row.budget["epochs"] for row in rows} == {
        ("naive", 0.5): 1, ("naive", 2.0): 2, ("cumulative", 0.5): 1, ("cumulative", 2.0): 2,
        ("joint", 0.5): 1, ("joint", 2.0): 2}


def test_flop_and_seconds_budgets_get_forward_share_times_the_naive_epochs(tmp_path) -> None:
    config = small_config(tmp_path)
    store = ResultsStore(tmp_path / "runs.db")
    from lifelong.protocol.budget import BudgetSettings, Reference, experience_limits
    reference = measure_reference(config, BudgetSettings(), 0, store, store.create_group("budget", "x", {}))
    assert reference.steps == [4, 4, 4] and len(set(reference.cost)) == 1
    stream = experiment.build_stream(config)
    limits = experience_limits(BudgetSettings(), 2.0, reference)
    assert limits == [2 * cost for cost in reference.cost]
    # 2x = 8 naive steps; a step may cost a third of naive's: 24 steps, 6 epochs of 4
    assert budget_epochs(config, stream, limits, reference, "flops") == FORWARD_SHARE * 2 == 6
    assert budget_epochs(config, stream, limits, Reference(0, reference.cost, [4, 4, 4]), "steps") == 2


def test_absolute_levels_are_amounts_per_experience(tmp_path) -> None:
    rows = run_budgeted(small_config(tmp_path), ["naive"], [3e5], [0], absolute=True)
    (row,) = rows
    assert row.budget["limit_per_experience"] == [3e5] * 3 and row.budget["absolute"]
    assert all(s <= 3e5 for s in row.budget["spent_per_experience"])


def test_rerun_trains_nothing_and_the_group_summarises_each_strategy_and_level(tmp_path) -> None:
    config = small_config(tmp_path)
    first = run_budgeted(config, ["naive", "er"], [0.5, 1.0], [0, 1])
    assert all(row.trained for row in first) and [row.seed for row in first] == [0] * 4 + [1] * 4
    again = run_budgeted(config, ["naive", "er"], [0.5, 1.0], [0, 1])
    assert not any(row.trained for row in again)
    assert [row.run_id for row in again] == [row.run_id for row in first]
    store = ResultsStore(tmp_path / "runs.db")
    (group,) = store.groups()
    assert group.kind == "budget" and [m["role"] for m in group.members].count("reference") == 2
    cells = group.summary["cells"]
    assert [(c["label"], c["level"], c["seeds"]) for c in cells] == [
        ("naive", 0.5, [0, 1]), ("naive", 1.0, [0, 1]), ("er", 0.5, [0, 1]), ("er", 1.0, [0, 1])]
    assert cells[0]["metrics"]["final_accuracy"]["n"] == 2 and "spent" in cells[0]["metrics"]
    stored = store.get(first[0].run_id)
    assert stored.metrics["budget"] == first[0].budget and stored.config["budget"]["label"] == "naive"


def test_interrupted_cell_resumes_from_its_checkpoint_bit_exactly(tmp_path, monkeypatch) -> None:
    """The protocol killed with SIGKILL inside a cell continues that run from its checkpoint when rerun,
    and ends with what an uninterrupted protocol gives."""
    config = small_config(tmp_path / "killed", "run.checkpoint_every_steps=3")
    (tmp_path / "killed").mkdir()
    (tmp_path / "reference").mkdir()

    def protocol(store_config):
        return run_budgeted(store_config, {"er": {"buffer_size": 30}}, [2.0], [0])

    torch.optim.SGD([torch.zeros(1, requires_grad=True)])  # torch's lazy imports, once, before forking
    pid = os.fork()
    if pid == 0:
        try:  # the reference run (naive) finishes; the ER cell is killed inside its second experience
            monkeypatch.setattr(experiment, "tracking_observers",
                                lambda c: [KillAt(11)] if c.strategy.name == "er" else [])
            protocol(config)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    store = ResultsStore(tmp_path / "killed" / "runs.db")
    assert [r.status for r in store.runs()] == ["finished", "interrupted"]

    (resumed,) = protocol(config)
    (reference,) = protocol(small_config(tmp_path / "reference", "run.checkpoint_every_steps=3"))
    assert resumed.run_id == 2 and resumed.trained and len(store.runs()) == 2
    assert np.array_equal(store.get(2).matrix, ResultsStore(tmp_path / "reference" / "runs.db").get(2).matrix)
    assert resumed.budget == {**reference.budget, "reference_run": resumed.budget["reference_run"]}


@pytest.mark.parametrize("call, message", [
    (lambda c: run_budgeted(c, ["naive"], [1.0], unit="joules"), "budget unit must be one of flops, seconds, steps"),
    (lambda c: run_budgeted(c, ["naive"], [0.0]), "budget levels must be finite numbers > 0"),
    (lambda c: run_budgeted(c, ["naive"], [1.0, 1.0]), "budget levels must be distinct"),
    (lambda c: run_budgeted(c, ["nope"], [1.0]), "budget: unknown strategy 'nope'"),
    (lambda c: run_budgeted(c, ["naive"], [1.0], reference="joint"), "budget reference 'joint' trains all"),
    (lambda c: run_budgeted(c, [], [1.0]), "budget: give the strategies to compare"),
    (lambda c: run_budgeted(c, ["naive"], [1.0], [0, 0]), "budget seeds must be distinct"),
    (lambda c: run_budgeted(c.model_copy(update={"optim": c.optim.model_copy(update={"max_steps": 3})}),
                            ["naive"], [1.0]), "leave optim.max_steps unset"),
])
def test_mistakes_are_refused_before_anything_trains(tmp_path, call, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        call(small_config(tmp_path))
    assert not (tmp_path / "runs.db").exists() or not ResultsStore(tmp_path / "runs.db").runs()


def readme_command() -> str:
    """The command of the README's "Compare methods at equal cost" section."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Compare methods at equal cost", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"^```sh\n(lifelong budget .*?)\n```", section, flags=re.MULTILINE | re.DOTALL)
    return command


def test_cli_budget_show_compare_and_report(tmp_path, monkeypatch, capsys) -> None:
    """The README's command, on a small stream, then what show, compare, groups and report print of it."""
    monkeypatch.chdir(tmp_path)
    words = readme_command().replace("\\\n", " ").split()
    assert words[:2] == ["lifelong", "budget"] and "--png" in words
    small = [word for item in SMALL for word in ("--set", item)]
    assert main([*words[1:], *small, "--seeds", "0", "--levels", "0.5,1"]) == 0
    out = capsys.readouterr().out
    assert "final accuracy at equal flops" in out and "Pareto" in out and re.search(r"er\s+│\s+0.5x", out)
    png = Path(words[words.index("--png") + 1])
    assert sorted(p.name for p in png.iterdir()) == ["budget_accuracy_vs_compute.png", "budget_accuracy_vs_memory.png"]

    store = ResultsStore("lifelong-runs.db", read_only=True)
    cell = next(r for r in store.runs() if r.strategy == "er")
    assert main(["show", str(cell.id)]) == 0
    out = capsys.readouterr().out
    assert "naive's flops for one epoch" in out and "spent per experience" in out and "memory_bytes" in out
    assert main(["compare", "1", str(cell.id)]) == 0
    out = capsys.readouterr().out
    assert "budget spent" in out and "memory_bytes" in out and "flops" in out
    assert main(["groups"]) == 0 and "budget levels" in capsys.readouterr().out
    assert main(["show", "--group", "1"]) == 0 and "Pareto" in capsys.readouterr().out
    assert main(["export", "-o", "runs.csv"]) == 0
    with open("runs.csv", newline="") as handle:
        exported = {int(row["id"]): row for row in csv.DictReader(handle)}
    assert float(exported[cell.id]["metrics.budget.spent"]) == cell.metrics["budget"]["spent"]
    assert exported[cell.id]["metrics.budget.level"] in ("0.5", "1.0") and int(exported[cell.id]["memory_bytes"]) > 0
    assert main(["report", "--group", "1", "-o", "report.html"]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "Compute-matched comparison" in page and 'id="budget_accuracy_vs_memory"' in page
