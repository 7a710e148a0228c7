"""A newcomer's day with the new features (issue 30): each refusal runs the real command (or API call) and
ends with exit code 2, one stderr line naming the field and the fix, no traceback, nothing on stdout (not
even the stream table) and a results store left as it was; each silently accepted setting is refused or
warned about in one line; and the friction points (help, listings, saving the tokenizer, exports, paths)
are gone.

Most commands call ``lifelong.cli.main`` in this process (the same code as the ``lifelong`` script without a
Python start-up each); ``torchrun`` and the run killed before ``--resume`` run in processes of their own.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lifelong as ll
from lifelong import OptimConfig, ResultsStore, class_incremental, mlp, synthetic, train
from lifelong.cli import main
from lifelong.data.corpora import TextDomain
from lifelong.errors import DataError
from lifelong.runner.checkpoint import checkpoint_files
from lifelong.strategies import Naive
from tests.child import child_environment

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "dataset.name=synthetic", "--set", "dataset.n_classes=4", "--set", "dataset.n_features=6",
         "--set", "scenario.n_experiences=2", "--set", "optim.epochs=1", "--set", "model.hidden=[8]",
         "--set", "run.progress=false", "--no-checkpoint"]
"""A run of a few steps on vectors: 2 experiences of 2 classes."""
DIGITS = ["--set", "scenario.n_experiences=2", "--set", "optim.epochs=1", "--set", "run.progress=false",
          "--no-checkpoint"]
"""The digits (1 x 8 x 8 images) in 2 experiences, one epoch."""
TEXT = ["--set", "dataset.name=text", "--set", "scenario.name=text_domains", "--set", "scenario.context=8",
        "--set", "scenario.train_tokens=64", "--set", "optim.epochs=1", "--set", "optim.batch_size=4",
        "--set", "run.progress=false", "--no-checkpoint"]
"""A text stream of 8-token windows over the domains a test writes (``dataset.domains``), one epoch."""


def snapshot(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table, read without writing."""
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: conn.execute(f"SELECT * FROM {table}").fetchall() for table in sorted(tables)}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A store holding one finished run."""
    db = tmp_path_factory.mktemp("template") / "runs.db"
    torch.manual_seed(0)
    with ResultsStore(db) as store:  # closed before the file is copied: its write-ahead log goes into it
        train(class_incremental(synthetic(n_classes=4, n_features=6), 2), mlp((6,), 4, hidden=(8,)), Naive(),
              OptimConfig(epochs=1), store=store)
    return db


@pytest.fixture
def folder(tmp_path, template, monkeypatch) -> Path:
    """An empty working folder holding a copy of the template store, the current folder of the test."""
    shutil.copy(template, tmp_path / "runs.db")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refuse(argv: list[str], message: str, folder: Path, template: Path, capsys) -> str:
    """Run ``lifelong ARGV --db runs.db`` and check the refusal: exit 2, one stderr line holding ``message``,
    no traceback, nothing on stdout, the store unchanged. The line."""
    capsys.readouterr()
    code = main([*argv, "--db", str(folder / "runs.db")])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert out == "", out  # bad settings stop before anything is printed, the stream table included
    assert snapshot(folder / "runs.db") == snapshot(template)
    return err


def numbered_documents(count: int, words: str = "the quick brown fox jumps over the lazy dog") -> str:
    return "\n\n".join(f"{words} number {i} of {count}" for i in range(count))


def text_folder(root: Path, name: str, count: int = 30) -> Path:
    """A folder of one ``.txt`` file of ``count`` paragraphs (documents)."""
    (root / name).mkdir(parents=True)
    (root / name / "a.txt").write_text(numbered_documents(count))
    return root / name


def domains(*paths: Path) -> list[str]:
    return ["--set", "dataset.domains=[" + ", ".join(f'"{p}"' for p in paths) + "]"]


# -- a refused strategy/model combination stores nothing -----------------------------------------------------

COMBINATIONS = {
    "l2p-on-mlp": ([*DIGITS, "--set", "strategy.name=l2p"], "strategy 'l2p' prompts a Vision Transformer: set "
                   "model.name='vit'"),
    "coda_prompt-on-mlp": ([*DIGITS, "--set", "strategy.name=coda_prompt"], "strategy 'coda_prompt' prompts a "
                           "Vision Transformer"),
    "dualprompt-beyond-the-depth": ([*DIGITS, "--set", "model.name=vit", "--set", "model.depth=3", "--set",
                                     "model.patch=2", "--set", "strategy.name=dualprompt", "--set",
                                     "strategy.e_layers=[9]"], "strategy.e_layers must be distinct block indices in "
                                    "[0, 3)"),
    "lora-on-cnn": ([*DIGITS, "--set", "model.name=cnn", "--set", "strategy.name=lora"],
                    "strategy.targets ['*'] match no nn.Linear layer"),
    "bn_only-without-norms": ([*SMALL, "--set", "scenario.name=task_incremental", "--set", "strategy.name=bn_only"],
                              "strategy 'bn_only' trains the backbone's normalization layers"),
}


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_a_refused_strategy_and_model_combination_stores_no_run(name, folder, template, capsys) -> None:
    argv, message = COMBINATIONS[name]
    refuse(["run", *argv], message, folder, template, capsys)  # nothing for `lifelong runs` to list as interrupted


REFUSED_BEFORE_TRAINING = {
    "task-ids-on-class-incremental": ([*SMALL, "--set", "strategy.name=hypernetwork"],
                                      "picks its parameters by each sample's task id"),
    "averaging-refused-by-the-strategy": ([*SMALL, "--set", "strategy.name=lora", "--set", "average.method=ema"],
                                          "average.method='ema' cannot be used with strategy LoRA"),
    "crops-of-vectors": ([*SMALL, "--set", "augment.flip=true"], "augment: random crops and flips need image inputs"),
    "unknown-compile-backend": ([*SMALL, "--set", 'run.compile="nope"'], "run.compile: unknown torch.compile backend"),
}


@pytest.mark.parametrize("name", list(REFUSED_BEFORE_TRAINING))
def test_a_refusal_of_the_runner_prints_no_stream_table_first(name, folder, template, capsys) -> None:
    argv, message = REFUSED_BEFORE_TRAINING[name]
    refuse(["run", *argv], message, folder, template, capsys)


def test_a_refused_run_of_several_seeds_leaves_no_group(folder, template, capsys) -> None:
    refuse(["run", *SMALL, "--set", "strategy.name=hypernetwork", "--seeds", "0,1"],
           "picks its parameters by each sample's task id", folder, template, capsys)


# -- a lazy image folder with an unreadable PNG --------------------------------------------------------------

def image_split(root: Path, truncated: str) -> Path:
    """``root/images/{train,test}/{a,b}/i.png``, 8 x 8, with ``truncated`` (e.g. ``test/a/1.png``) cut in half."""
    rng = np.random.default_rng(0)
    for part, count in (("train", 8), ("test", 3)):
        for name in ("a", "b"):
            (root / "images" / part / name).mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / "images" / part / name / f"{i}.png")
    whole = (root / "images" / truncated).read_bytes()
    (root / "images" / truncated).write_bytes(whole[:len(whole) // 2])
    return root / "images"


def lazy_images(path: Path) -> list[str]:
    return ["--set", "dataset.name=image_folder", "--set", f'dataset.path="{path}"', "--set", "dataset.lazy=true",
            "--set", "scenario.n_experiences=2", "--set", "optim.epochs=1", "--set", "run.progress=false",
            "--no-checkpoint"]


def test_an_unreadable_test_image_of_a_lazy_folder_stores_nothing_and_advises_what_lazy_mode_allows(
        folder, template, capsys) -> None:
    line = refuse(["run", *lazy_images(image_split(folder, "test/b/1.png"))], "1.png' is not a readable image",
                  folder, template, capsys)
    assert "needs dataset.lazy=false" in line and "or set dataset.skip_unreadable=true" not in line


def test_an_unreadable_training_image_of_a_lazy_folder_marks_the_run_failed(folder, capsys) -> None:
    code = main(["run", *lazy_images(image_split(folder, "train/a/2.png")), "--db", "runs.db"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "2.png' is not a readable image" in err, err
    assert "needs dataset.lazy=false" in err
    new = ResultsStore(folder / "runs.db", read_only=True).get(2)
    assert new.status == "failed" and "2.png" in (new.error or "")  # not left running


# -- trackers ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("log", ["csv", "tensorboard", "mlflow"])
@pytest.mark.parametrize("under", ["a-file", "a-file/logs"])
def test_a_log_folder_under_a_file_is_refused_before_training(log, under, folder, template, capsys) -> None:
    (folder / "a-file").write_text("not a folder")
    refuse(["run", *SMALL, "--set", f'run.log=["{log}"]', "--set", f"run.log_dir={under}"],
           "run.log_dir: 'a-file' is a file", folder, template, capsys)


# -- tokenizer and user datasets -----------------------------------------------------------------------------

def test_a_malformed_tokenizer_file_is_one_line(folder, template, capsys) -> None:
    (folder / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab"')
    refuse(["run", *TEXT, *domains(text_folder(folder, "en"), text_folder(folder, "de")), "--set",
            'dataset.tokenizer="tokenizer.json"'], "dataset.tokenizer: 'tokenizer.json' is not a tokenizer file",
           folder, template, capsys)


DATASET_FILE = '''
import numpy as np
import torch

import lifelong as ll


class Items(torch.utils.data.Dataset):
    def __init__(self, n, odd=None, broken=None):
        self.targets, self.odd, self.broken = [i % 2 for i in range(n)], odd, broken

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        if i == self.broken:
            raise ValueError("cannot decode record")
        return np.full(5 if i == self.odd else 4, i, dtype=np.float32), self.targets[i]


def build(test_odd=None, train_broken=None):
    train, test = Items(40, broken=train_broken), Items(10, odd=test_odd)
    return ll.from_dataset(train, test, train_targets=train.targets, test_targets=test.targets)
'''


def user_dataset(folder: Path, options: str, workers: int = 0) -> list[str]:
    (folder / "items.py").write_text(DATASET_FILE)
    return ["--set", "dataset.name=python", "--set", "dataset.factory=items.py:build", "--set",
            f"dataset.options={{{options}}}", "--set", f"dataset.num_workers={workers}", "--set",
            "scenario.n_experiences=2", "--set", "optim.epochs=1", "--set", "run.progress=false", "--no-checkpoint"]


def test_a_sample_of_another_shape_is_named_with_its_split(folder, template, capsys) -> None:
    refuse(["run", *user_dataset(folder, "test_odd = 7")], "dataset test: sample 7 has shape (5,), expected (4,)",
           folder, template, capsys)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_getitem_that_raises_is_named_with_its_index_and_split(workers, folder, capsys) -> None:
    code = main(["run", *user_dataset(folder, "train_broken = 7", workers), "--db", "runs.db"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "dataset train: reading sample 7 raised ValueError: cannot decode record" in err
    assert ResultsStore(folder / "runs.db", read_only=True).get(2).status == "failed"


# -- silently accepted settings ------------------------------------------------------------------------------

def test_a_crop_padding_larger_than_the_images_is_refused(folder, template, capsys) -> None:
    refuse(["run", *DIGITS, "--set", "model.name=cnn", "--set", "augment.crop_padding=100"],
           "augment.crop_padding=100 on 8x8 images: some random crops would hold no pixel of the image; use a "
           "padding smaller than the images' side, at most 7", folder, template, capsys)


def test_a_text_preset_whose_package_is_missing_is_refused(folder, template, capsys) -> None:
    from lifelong.data.corpora import installed

    if installed("manpages-es") is not False or not Path("/usr/share/man/es").is_dir():
        pytest.skip("needs a Debian system where manpages-es is missing but other packages' Spanish pages exist")
    refuse(["run", *TEXT, "--set", 'dataset.domains=["man-es"]'], "text domain 'man-es' needs the package "
           "manpages-es (/usr/share/man/es holds other packages' files only); install it with `apt-get install -y "
           "manpages-es`", folder, template, capsys)


def test_a_binary_file_in_a_text_folder_is_refused(folder, template, capsys) -> None:
    text = text_folder(folder, "en")
    (text / "b.txt").write_bytes(bytes(range(256)) * 4)
    refuse(["run", *TEXT, *domains(text, text_folder(folder, "de"))], "b.txt' is not UTF-8 text", folder, template,
           capsys)


@pytest.mark.parametrize(("setting", "method"), [("average.decay=0.99", "ema"), ("average.alpha=0.2", "merge"),
                                                 ("average.coefficient=0.9", "interpolate")])
def test_a_setting_of_another_averaging_method_is_refused(setting, method, folder, template, capsys) -> None:
    refuse(["run", *SMALL, "--set", setting], f"is a setting of average.method='{method}' and has no effect with "
           f"average.method='none'; set average.method='{method}'", folder, template, capsys)


def test_a_setting_of_another_averaging_method_than_the_chosen_one_is_warned_about() -> None:
    from lifelong.config import AverageConfig
    from lifelong.runner.averaging import Averaging

    with pytest.warns(UserWarning, match=r"^average.coefficient=0.6 is a setting of average.method='interpolate' and "
                                         r"has no effect with average.method='ema'; it is ignored$"):
        Averaging.check(AverageConfig(method="ema", coefficient=0.6), OptimConfig())


def test_fsdp_in_one_process_is_refused(folder, template, capsys) -> None:
    refuse(["run", *SMALL, "--set", "run.shard=fsdp"], "run.shard='fsdp' shards the model over the ranks of a "
           "torchrun job, and this run is one process", folder, template, capsys)


def test_a_probe_whose_power_iteration_did_not_converge_shows_no_ceiling(folder, capsys) -> None:
    code = main(["probe", *SMALL[:-1], "--max-iterations", "3", "--samples", "16", "--hessian-samples", "16"])
    out, err = capsys.readouterr()
    assert code == 0 and err.count("\n") == 1, err
    assert err.startswith("warning: the power iteration did not converge in 3 iterations") and "--max-iterations" in err
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines() if line.count("│") == 3}
    assert rows["lambda_max (top Hessian eigenvalue)"] == rows["max stable lr 2/lambda_max (no momentum)"] == "-"
    assert "inf" not in out


# -- errors that help ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["vit", "mlp", "cnn"])
def test_an_image_model_on_text_names_the_language_model(model, folder, template, capsys) -> None:
    refuse(["run", *TEXT, *domains(text_folder(folder, "en"), text_folder(folder, "de")), "--set",
            f"model.name={model}"], f"model.name='{model}' is not a language model, and a text stream's samples are "
           "windows of token ids; use model.name='gpt'", folder, template, capsys)


def test_freezing_the_gpt_blames_the_model_not_the_strategy(folder, template, capsys) -> None:
    line = refuse(["run", *TEXT, *domains(text_folder(folder, "en"), text_folder(folder, "de")), "--set",
                   "model.name=gpt", "--set", "model.freeze=backbone"], "model.freeze='backbone' trains a model's head "
                  "and freezes its backbone, and GPT is not split into the two", folder, template, capsys)
    assert "this strategy" not in line


def text_domains(count: int = 40) -> list[TextDomain]:
    return [TextDomain(name, tuple(numbered_documents(count, words).split("\n\n")))
            for name, words in (("en", "the quick brown fox"), ("de", "der schnelle braune fuchs"))]


def test_token_ids_beyond_the_model_vocabulary_name_the_vocabulary() -> None:
    stream = ll.text_stream(text_domains(), tokenizer="bpe", bpe_vocab_size=300, context=8, train_tokens=64)
    model = ll.gpt(stream.input_shape, stream.n_classes, vocab_size=257, seed=0)
    with pytest.raises(DataError, match=rf"cannot embed the stream's token ids .*of a vocabulary of "
                                        rf"{stream.vocab_size}\).*build it with vocab_size={stream.vocab_size}"):
        ll.train(stream, model, ll.Naive(), OptimConfig(epochs=1))


def test_an_mlp_given_tokens_through_the_api_names_a_language_model() -> None:
    stream = ll.text_stream(text_domains(), context=8, train_tokens=64)
    with pytest.raises(DataError, match=r"cannot read windows of 8 token ids, a text stream's inputs: .*use a "
                                        r"language model \(model.name='gpt'"):
        ll.train(stream, ll.mlp(stream.input_shape, stream.n_classes, seed=0), ll.Naive(), OptimConfig(epochs=1))


def test_torchrun_prints_a_refusal_once_and_exits_cleanly(folder, template) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun is not installed beside this Python")
    done = subprocess.run([str(torchrun), "--nproc_per_node=2", "-m", "lifelong", "run", *SMALL, "--set",
                           "strategy.name=hypernetwork", "--db", str(folder / "runs.db")], cwd=folder, text=True,
                          capture_output=True, env=child_environment(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("error: ") == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "picks its parameters by each sample's task id" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == "" and snapshot(folder / "runs.db") == snapshot(template)


# -- friction ------------------------------------------------------------------------------------------------

def test_run_help_lists_every_section(capsys) -> None:
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for section in ("[dataset]", "[scenario]", "[model]", "[strategy]", "[augment]", "[average]", "[optim]", "[run]"):
        assert section in text
    assert "lifelong models" in text


def test_models_lists_every_model_with_its_parameters_and_presets_list_their_packages(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, parameter in (("mlp", "hidden=(256, 256)"), ("cnn", "channels=(32, 64)"), ("resnet18", "nf=20"),
                            ("resnet32", "norm='batch'"), ("gpt", "d_model=128"), ("vit", "patch=4")):
        assert re.search(rf"│ {name} +│", out) and parameter in out, name
    assert "weights" in out and "freeze" in out
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    for preset, package in (("en", "fortunes"), ("de", "fortunes-de"), ("man-es", "manpages-es"),
                            ("man-en", "manpages")):
        assert re.search(rf"│ {preset} +│[^│]+│ {package} +│", out), preset


@pytest.mark.parametrize(("command", "default"), [("probe", "cap on the power iterations (default: 100)"),
                                                   ("tune", "trials in the study, counting stored ones (default: 20)")])
def test_probe_and_tune_help_show_the_defaults(command, default, capsys) -> None:
    assert main([command, "--help"]) == 0
    assert default in " ".join(capsys.readouterr().out.split())


def test_the_command_line_saves_the_bpe_tokenizer_it_trains_for_later_runs(folder, capsys) -> None:
    text = domains(text_folder(folder, "en"), text_folder(folder, "de"))
    stream = ["scenarios", *TEXT[:8], *text, "--set", "dataset.tokenizer=bpe", "--set", "dataset.bpe_vocab_size=300"]
    assert main([*stream, "--set", 'dataset.save_tokenizer="bpe.json"']) == 0
    trained = re.findall(r"BPETokenizer\(vocab_size=\d+\)", capsys.readouterr().out)
    assert (folder / "bpe.json").is_file() and trained
    assert main([*stream[:-2], "--set", 'dataset.tokenizer="bpe.json"']) == 0  # read back: the same vocabulary
    assert re.findall(r"BPETokenizer\(vocab_size=\d+\)", capsys.readouterr().out) == trained


def test_saving_the_byte_tokenizer_is_refused(folder, template, capsys) -> None:
    refuse(["run", *TEXT, *domains(text_folder(folder, "en")), "--set", 'dataset.save_tokenizer="t.json"'],
           "dataset.save_tokenizer saves a BPE tokenizer, and dataset.tokenizer='byte' needs no file", folder,
           template, capsys)


def test_install_hints_agree() -> None:
    """Every hint to install an optional extra reads ``pip install 'lifelong[EXTRA]'`` (the Quickstart's
    ``pip install -e '.[test]'`` installs the checkout itself, for its tests)."""
    sources = [ROOT / "README.md", *(ROOT / "src" / "lifelong").rglob("*.py")]
    hints = {"".join(hint) for path in sources for hint in
             re.findall(r"pip install (-e )?(['\"]?[\w.]*\[\w+\]['\"]?)", path.read_text(encoding="utf-8"))}
    extras = hints - {"-e '.[test]'"}
    assert len(extras) >= 4 and all(re.fullmatch(r"'lifelong\[\w+\]'", hint) for hint in extras), hints


def test_every_strategy_and_strategy_error_are_exported_at_the_top_level() -> None:
    from lifelong.strategies import STRATEGIES

    exported = {id(getattr(ll, name)) for name in ll.__all__}
    assert all(id(cls) in exported for cls in STRATEGIES.values())
    assert ll.StrategyError.__name__ == "StrategyError" and ll.LoRA is STRATEGIES["lora"]
    assert ll.load_weights.__name__ == "load_weights"


def test_the_readme_says_the_prompt_strategies_need_a_pretrained_backbone() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "The prompt methods (`l2p`, `dualprompt`, `coda_prompt`) freeze a ViT" in readme
    assert "so they need a pretrained one" in readme and '`model.weights = "vit.pt"`' in readme


def test_two_backbone_files_at_once_are_refused(folder, template, capsys) -> None:
    (folder / "b.pt").write_bytes(b"")
    refuse(["run", *DIGITS, "--set", "strategy.name=ncm", "--set", "model.weights=b.pt", "--set",
            "strategy.backbone_path=b.pt"], "model.weights and strategy.backbone_path both name a pretrained backbone; "
           "keep model.weights='b.pt'", folder, template, capsys)


def test_a_warning_is_one_line_without_the_source(folder, capsys) -> None:
    assert main(["run", *SMALL, "--set", "strategy.name=agem", "--db", "runs.db"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: strategy AGEM projects each step's gradient") and err.count("\n") == 1, err
    assert ".py:" not in err and "warnings.warn" not in err


def test_a_manual_page_folder_is_a_text_domain(folder, capsys) -> None:
    pages = folder / "man-fr" / "man1"
    pages.mkdir(parents=True)
    for i in range(30):
        roff = f".TH PAGE{i} 1\n.SH NOM\npage{i} \\- une page de manuel\n.SH DESCRIPTION\n.B page{i}\nlit le {i}.\n"
        (pages / f"page{i}.1.gz").write_bytes(gzip.compress(roff.encode()))
    assert main(["scenarios", *TEXT[:8], *domains(folder / "man-fr", text_folder(folder, "de"))]) == 0
    out = capsys.readouterr().out
    assert "man-fr" in out


CSV_RUN = ["--set", "dataset.name=csv", "--set", 'dataset.path="data/table.csv"', "--set", "scenario.n_experiences=2",
           "--set", "optim.epochs=3", "--set", "optim.batch_size=4", "--set", "model.hidden=[8]", "--set",
           "run.checkpoint_every_steps=2", "--set", "run.progress=false"]


def test_a_run_with_relative_paths_resumes_from_another_folder(tmp_path, monkeypatch, capsys) -> None:
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    (start / "data").mkdir(parents=True)
    elsewhere.mkdir()
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{label}" for label in "wxyz" for a, b in rng.random((30, 2)) + "wxyz".index(label)]
    (start / "data" / "table.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    process = subprocess.Popen([sys.executable, "-m", "lifelong", "run", *CSV_RUN, "--db", "runs.db"], cwd=start,
                               text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=child_environment())
    deadline = time.monotonic() + 120
    while not checkpoint_files(start / "runs-checkpoints" / "run-1"):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    stored = ResultsStore(start / "runs.db", read_only=True).get(1).config
    assert stored["dataset"]["path"] == str(start / "data" / "table.csv") and os.path.isabs(stored["run"]["db"])
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["run", "--resume", "1", "--db", str(start / "runs.db")]) == 0, capsys.readouterr().err
    assert ResultsStore(start / "runs.db", read_only=True).get(1).status == "finished"
