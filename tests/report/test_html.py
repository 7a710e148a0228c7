import base64
import re
import shutil
import subprocess

import pytest

from lifelong.cli import main
from lifelong.config import load_config
from lifelong.experiment import run_config
from lifelong.report.html import write_report
from lifelong.report.plots import FIGURES, points_of
from lifelong.runner.results import ResultsStore

SMALL = ["dataset.name=synthetic", "dataset.n_classes=6", "dataset.n_features=8", "dataset.n_per_class=40",
         "scenario.n_experiences=3", "optim.epochs=2", "model.hidden=[16]"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync"]
# sets data-loaded="complete/total" on <body> once every image has decoded (or failed)
MARKER = ("<script>window.addEventListener('load',()=>{const images=[...document.images];"
          "document.body.dataset.loaded=images.filter(i=>i.complete&&i.naturalWidth>0).length+'/'+images.length;});"
          "</script></body>")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ResultsStore:
    """Two runs with curves (naive, er) and one without (er): the report's three cases."""
    store = ResultsStore(tmp_path_factory.mktemp("report") / "runs.db")
    for name, every in (("naive", 2), ("er", 2), ("er", None)):
        extra = [f"run.eval_every_steps={every}"] if every else []
        run_config(load_config(None, [*SMALL, f"strategy.name={name}", *extra]), store=store)
    return store


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    """The report on all three runs, with its PNG files: (folder, written paths)."""
    folder = tmp_path_factory.mktemp("written")
    return folder, write_report([store.get(i) for i in (1, 2, 3)], folder / "report.html", folder / "png")


def test_report_is_self_contained_with_every_figure(report) -> None:
    tmp_path, paths = report
    page = (tmp_path / "report.html").read_text()
    sources = re.findall(r'<img id="(\w+)"[^>]* src="data:image/png;base64,([^"]+)"', page)
    assert [name for name, _ in sources] == list(FIGURES)
    for name, data in sources:
        assert base64.b64decode(data) == (tmp_path / "png" / f"{name}.png").read_bytes()
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(paths) == 1 + len(FIGURES)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from a network
    assert "run 1 (naive, seed 0)" in page and "Runs 3 have no continual-evaluation curve" in page


def test_run_without_curve_is_drawn_from_experience_ends(store) -> None:
    record = store.get(3)
    points = points_of(record)
    steps_per_experience = [e["cost"]["steps"] for e in record.experiences]
    assert [p["step"] for p in points] == [0, steps_per_experience[0], sum(steps_per_experience[:2]),
                                           sum(steps_per_experience)]
    assert points[-1]["accuracies"] == record.matrix[-1] and points[0]["accuracies"] == record.initial


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
def test_report_renders_every_image_in_headless_chromium(report, tmp_path) -> None:
    page = (report[0] / "report.html").read_text()
    (tmp_path / "probe.html").write_text(page.replace("</body>", MARKER))
    done = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=10000", "--dump-dom", (tmp_path / "probe.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    loaded = re.search(r'data-loaded="(\d+)/(\d+)"', done.stdout)
    assert loaded is not None, done.stderr[-2000:]
    assert loaded.groups() == (str(len(FIGURES)), str(len(FIGURES)))


def test_report_and_export_commands(store, tmp_path, capsys) -> None:
    db = str(store.path)
    assert main(["report", "3", "-o", str(tmp_path / "r.html"), "--db", db]) == 0
    assert (tmp_path / "r.html").stat().st_size > 10_000
    assert main(["report", "1", "--db", db]) == 2
    assert "report: nothing to write" in capsys.readouterr().err
    assert main(["report", "9", "-o", str(tmp_path / "r.html"), "--db", db]) == 2
    assert "run id 9" in capsys.readouterr().err
    assert main(["report", "1", "-o", str(tmp_path / "no" / "r.html"), "--db", db]) == 2
    crashed = store.start_run("crashed", "er", 0, {"run": {"seed": 0}})
    assert main(["report", str(crashed), "-o", str(tmp_path / "r.html"), "--db", db]) == 2
    assert f"run {crashed} has no finished experience to plot (status running)" in capsys.readouterr().err


def test_bad_output_paths_are_one_line_errors(store, tmp_path, capsys) -> None:
    db = str(store.path)
    (tmp_path / "plots").write_text("a file, not a folder")
    assert main(["report", "1", "--png", str(tmp_path / "plots"), "--db", db]) == 2
    assert "--png:" in capsys.readouterr().err and (tmp_path / "plots").read_text() == "a file, not a folder"
    assert main(["export", "--db", db, "-o", str(tmp_path / "no" / "runs.csv")]) == 2
    assert "-o: the folder" in capsys.readouterr().err
