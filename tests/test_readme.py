"""The README's code runs as written (issue 18): its Python example prints the same matrix in two fresh
processes, and every command of its command blocks runs, in order, in an empty folder, next to the
files its TOML blocks name (``# job.toml``, ``# sweep.toml``).

The commands train at most :data:`EPOCHS` epochs (the one setting the documentation test shrinks, so
that they run in a couple of minutes, not many): this test caps every configuration its commands read
(:func:`capped_epochs`), and the capped value is what is stored. ``lifelong ...`` lines run through
``lifelong.cli.main`` (what the ``lifelong`` script calls) to spare a Python start-up per line; the
``torchrun`` line (given ``--set optim.epochs=1``) and the Python example run in their own processes.
The install steps of the Quickstart (a virtual environment, ``pip install``) are what ``.ci/run``
executes before running this suite, so here they are checked against it and the command after them is
run.
"""

from __future__ import annotations

import csv
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lifelong import config
from lifelong.cli import main
from lifelong.runner.results import ResultsStore
from tests.child import child_environment

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALL_STEPS = ("python3 -m venv ", ".venv/bin/pip install ")
EPOCHS = 1
"""The most epochs any configuration of the documentation test trains."""


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks of ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture
def capped_epochs(monkeypatch) -> None:
    """Every configuration read in this process trains at most :data:`EPOCHS` epochs: the command line
    reads each through :func:`lifelong.config.load_config`, which validates it last."""
    validate = config.validate_config

    def capped(data):
        optim = data.get("optim", {})
        if isinstance(optim.get("epochs"), int) and optim["epochs"] > EPOCHS:
            data = {**data, "optim": {**optim, "epochs": EPOCHS}}
        return validate(data)

    monkeypatch.setattr(config, "validate_config", capped)


def ci_command() -> str:
    """The command ``.ci/run`` executes: it installs from nothing and runs the test suite."""
    return (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]


def test_python_example_prints_the_same_matrix_in_two_fresh_processes(tmp_path) -> None:
    (example,) = blocks("python")
    script = tmp_path / "example.py"
    script.write_text(example)
    processes = [subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=child_environment(),
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    # the last line is training seconds and steps; everything before it (the 5x5 matrix, final accuracy
    # and forgetting) must be the same in both processes, the model's initial weights included
    printed = [out.strip().splitlines() for out, _ in outputs]
    assert len(printed[0]) == 7 and printed[0][:-1] == printed[1][:-1], printed


def run_line(line: str, folder: Path, capsys) -> None:
    """Run one README command line; fail with its output if it does not exit with 0."""
    words = shlex.split(line, comments=True)
    if not words:
        return
    if words[0] == "lifelong":
        code = main(words[1:])
        output = capsys.readouterr()
    elif words[0] == "torchrun":  # its own processes, beyond capped_epochs: the cap is given on its command line
        done = subprocess.run([str(Path(sys.executable).parent / "torchrun"), *words[1:], "--set",
                               f"optim.epochs={EPOCHS}"], cwd=folder, text=True, capture_output=True,
                              env=child_environment(), timeout=300)
        code, output = done.returncode, done
    else:
        raise AssertionError(f"the README runs {words[0]!r}, which this test does not know how to run")
    assert code == 0, f"`{line}` exited with {code}:\n{output.out if hasattr(output, 'out') else output.stdout}\n" \
                      f"{output.err if hasattr(output, 'err') else output.stderr}"


def test_command_blocks_run_as_written(tmp_path, monkeypatch, capsys, capped_epochs) -> None:
    commands = blocks("bash")
    assert len(commands) == 3
    for index, block in enumerate(commands):  # each block in an empty folder of its own, with the TOML files
        folder = tmp_path / f"block-{index}"
        folder.mkdir()
        for toml in blocks("toml"):
            name = toml.splitlines()[0].removeprefix("# ").strip()
            assert re.fullmatch(r"[\w-]+\.toml", name), f"a TOML block must start with `# FILE.toml`, got {name!r}"
            (folder / name).write_text(toml)
        monkeypatch.chdir(folder)
        for line in block.strip().splitlines():
            steps = [step.strip() for step in line.split("&&")]
            installs = [step for step in steps if step.startswith(INSTALL_STEPS)]
            if installs:  # the Quickstart: set-up that .ci/run performs, then the command after it
                ci = [step.strip() for step in ci_command().split("&&")]
                assert all(step in ci or step.replace("-e .", "-e '.[test]'") in ci for step in installs), installs
                rest = steps[len(installs):]
                assert len(rest) == 1 and rest[0].startswith(".venv/bin/"), rest
                if line.strip() == ci_command():
                    continue  # the README's test command is the one .ci/run runs: this suite itself
                line = rest[0].removeprefix(".venv/bin/")
            run_line(line, folder, capsys)

    # what the command list left behind is what the README says it does
    folder = tmp_path / "block-2"
    store = ResultsStore(folder / "lifelong-runs.db", read_only=True)
    ewc = store.get(2).config
    assert ewc["strategy"] == {"name": "ewc", "lam": 100, "decay": 1.0, "fisher_labels": "sampled"} and ewc["optim"]["epochs"] == EPOCHS
    assert store.get(3).curve and [g.kind for g in store.groups()] == ["seeds", "sweep", "protocol"]
    assert len(store.group(2).members) == 8  # the sweep file's 2 seeds x 2 rates x 2 strategies
    assert (folder / "report.html").stat().st_size > 10_000 and len(list((folder / "plots").glob("*.png"))) == 4
    with open(folder / "runs.csv", newline="") as handle:  # written before tta's 4 runs and torchrun's 1
        assert len(list(csv.DictReader(handle))) == len(store.runs()) - 5
    unfinished = [(r.id, r.error) for r in store.runs() if r.status != "finished"]
    # every run finished but tuning trials whose loss diverged (a result of the search, counted as such)
    assert all(store.get(i).config["protocol"]["role"] == "tuning" and "loss became" in error
               for i, error in unfinished), unfinished
    # finished runs leave no checkpoints; a run that failed keeps its own (it may be resumed)
    checkpoints = folder / "lifelong-runs-checkpoints"
    left = {path.name for path in checkpoints.iterdir()} if checkpoints.exists() else set()
    assert left == {f"run-{i}" for i, _ in unfinished}


def test_the_hugging_face_model_and_dataset_commands_run_as_written(tmp_path, monkeypatch, capsys,
                                                                    capped_epochs) -> None:
    """The first block of each part of "Bring your Hugging Face model or dataset", Models and Datasets: each
    makes its own tiny model or dataset, so it runs here (the pip lines are the ``hf`` and ``datasets`` extras,
    which the test extra holds; the second block of each names the user's folders and files)."""
    pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    section = README.split("## Bring your Hugging Face model or dataset\n", 1)[1].split("\n## ", 1)[0]
    monkeypatch.chdir(tmp_path)
    for part, extra in zip(section.split("\n### Datasets\n"), ("hf", "datasets"), strict=True):
        block = re.findall(r"^```sh\n(.*?)^```", part, flags=re.DOTALL | re.MULTILINE)[0]
        for line in block.strip().splitlines():
            if line.startswith("pip install "):
                assert line == f"pip install 'lifelong[{extra}]'"
            elif line.startswith("python -c "):
                subprocess.run([sys.executable, *shlex.split(line)[1:]], cwd=tmp_path, env=child_environment(),
                               check=True, capture_output=True, timeout=300)
            else:
                run_line(line, tmp_path, capsys)
    from transformers import AutoModelForImageClassification

    assert AutoModelForImageClassification.from_pretrained(tmp_path / "vit-ranpac").config.num_labels == 10
    store = ResultsStore(tmp_path / "lifelong-runs.db")
    runs = store.runs()
    assert [r.strategy for r in runs] == ["ranpac", "l2p", "er"]
    digits = store.get(runs[-1].id)
    assert digits.config["dataset"] == {**digits.config["dataset"], "name": "hf", "path": str(tmp_path / "digits-hf")}
    # the 10 digits in 5 experiences of 2, each trained for the test's one epoch: well above chance (0.1)
    assert len(digits.rows) == 5 and digits.metrics["final_accuracy"] > 0.2
