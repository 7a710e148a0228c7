"""One self-contained HTML page on stored runs: every figure embedded as a base64 PNG and a comparison
table, no script, stylesheet or font fetched from anywhere, so it opens offline and can be mailed."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from lifelong.errors import ConfigError
from lifelong.metrics.efficiency import compute_axes, mean_accuracy, time_to_accuracy
from lifelong.report.budget import UNIT_NAMES, budget_points, budgeted, on_front
from lifelong.report.plots import BUDGET_FIGURES, FIGURES, png_bytes, points_of, run_label
from lifelong.runner.results import RunRecord

METRICS = ("final_accuracy", "final_accuracy_pooled", "average_incremental_accuracy",
           "average_incremental_accuracy_per_experience", "forgetting", "backward_transfer", "forward_transfer",
           "stability_gap", "relative_stability_gap", "min_old_accuracy", "worst_case_accuracy")

_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}h2{margin-top:1.6em}.note{color:#666;font-size:13px}.wide{overflow-x:auto}"""


def render_figures(records: Sequence[RunRecord], budget_only: bool = False) -> dict[str, bytes]:
    """Every report figure as PNG bytes, by name: those of every run, then, when runs were run by a
    budget protocol, the comparison at equal compute (only those with ``budget_only``)."""
    if not records:
        raise ConfigError("report: give at least one run id; `lifelong runs` lists them")
    adaptation = [record.id for record in records if record.is_adaptation]
    if adaptation:
        raise ConfigError(f"report: run {adaptation[0]} is a test-time adaptation run (accuracy per domain, no "
                          f"accuracy matrix or training curve to draw); `lifelong show {adaptation[0]}` prints it, "
                          "and the report takes training runs")
    losses = [record.id for record in records if "final_loss" in (record.metrics or {})]
    if losses:
        raise ConfigError(f"report: run {losses[0]} is a language model's (a loss matrix; the report draws accuracies "
                          f"and the time to reach one); `lifelong show {losses[0]}`, `lifelong compare` and "
                          "`lifelong export` take it")
    empty = [record.id for record in records if not record.experiences]
    if empty:
        raise ConfigError(f"report: run {empty[0]} has no finished experience to plot (status "
                          f"{next(r.status for r in records if r.id == empty[0])}); leave it out")
    if budget_only and not budgeted(records):
        raise ConfigError("report: none of these runs was run by the budget protocol (`lifelong budget`); drop the "
                          "budget-only option, or give the runs of a budget group")
    figures = {**({} if budget_only else FIGURES), **(BUDGET_FIGURES if budgeted(records) else {})}
    return {name: png_bytes(builder(records)) for name, (_, builder) in figures.items()}


def budget_rows(records: Sequence[RunRecord]) -> list[list[object]]:
    """One row per strategy and budget level of the budgeted runs: what was given and spent, the final
    accuracy and the memory over seeds, and whether the point is on the Pareto front of accuracy for its
    compute (among the points of its unit)."""
    points = budget_points(records)
    return [[p.label, p.budget, UNIT_NAMES[p.unit], len(p.runs), f"{p.spent:.4g}", p.spent_fraction, p.accuracy,
             p.accuracy_std, f"{p.memory_bytes:.0f}", "yes" if front else ""]
            for p, front in zip(points, on_front(points), strict=True)]


def _cell(value: object) -> str:
    """A table cell: ``-`` for a missing value, floats to three decimals, integers (and everything else)
    as they are."""
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def comparison_rows(records: Sequence[RunRecord], target: float) -> list[list[object]]:
    """One row per run: identity, status, metrics, cost and time to ``target`` mean accuracy."""
    rows = []
    for record in records:
        metrics = record.metrics or {}
        costs = [e["cost"] for e in record.experiences]
        points = points_of(record)
        axes = compute_axes(points, costs)
        accuracy = mean_accuracy(points)
        reach = {name: time_to_accuracy(axes[name], accuracy, target) for name in ("samples", "seconds")}
        samples = reach["samples"]
        rows.append([run_label(record), record.name, record.status, *(metrics.get(m) for m in METRICS),
                     sum(float(c["seconds"]) for c in costs), sum(int(c["samples"]) for c in costs),
                     int(samples) if samples is not None else None, reach["seconds"]])
    return rows


def configuration_rows(records: Sequence[RunRecord]) -> list[list[object]]:
    """One row per configuration field (``section.field``) with each run's value, the fields whose
    values differ between the runs first: what the report's runs were, so it can be read (and rerun) on
    its own."""
    values = [{f"{section}.{key}".rstrip("."): value for section, fields in record.config.items()
               for key, value in (fields.items() if isinstance(fields, dict) else [("", fields)])}
              for record in records]
    names = list(dict.fromkeys(name for run in values for name in run))
    rows = [[name, *(run.get(name) for run in values)] for name in names]
    return sorted(rows, key=lambda row: len({repr(v) for v in row[1:]}) == 1)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return '<div class="wide"><table><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + \
        "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows) + "</table></div>"


def build_report(records: Sequence[RunRecord], figures: dict[str, bytes], target: float) -> str:
    """The report page as a string."""
    header = ["run", "stream", "status", *METRICS, "train seconds", "samples",
              f"samples to {target:.0%}", f"seconds to {target:.0%}"]
    table = _table(header, comparison_rows(records, target))
    configurations = _table(["field", *(run_label(r) for r in records)], configuration_rows(records))
    titles = {name: title for name, (title, _) in {**FIGURES, **BUDGET_FIGURES}.items()}
    sections = "".join(
        f'<h2>{html.escape(titles[name])}</h2><img id="{name}" alt="{html.escape(titles[name])}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">' for name, data in figures.items())
    budget = _table(["strategy", "budget", "unit", "seeds", "spent", "spent / budget", "final accuracy", "std",
                     "memory bytes", "Pareto front"], budget_rows(records)) if budgeted(records) else ""
    budget = (f"<h2>Compute-matched comparison</h2>"
              f'<p class="note">Each strategy at each budget level (means over seeds): what it spent of the budget '
              f"in all experiences (a closing hook such as a Fisher estimate runs after the budget ends training, "
              f"on top of it), its final accuracy and the memory it keeps; the Pareto front holds the best "
              f"accuracy for at most its compute.</p>{budget}") if budget else ""
    missing = [r.id for r in records if not r.curve]
    note = (f'<p class="note">Runs {", ".join(map(str, missing))} have no continual-evaluation curve '
            "(set run.eval_every_steps); they are drawn from end-of-experience points only.</p>") if missing else ""
    ids = ", ".join(str(r.id) for r in records)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>lifelong report: runs {ids}</title>'
            f"<style>{_STYLE}</style></head><body><h1>lifelong report: runs {ids}</h1>"
            f'<p class="note">generated {datetime.now(UTC).isoformat(timespec="seconds")}; time to accuracy is '
            f"the first evaluation whose mean accuracy over every experience reaches {target:.0%}.</p>{note}"
            f"{budget}<h2>Comparison</h2>{table}{sections}<h2>Configurations</h2>"
            f'<p class="note">Every setting of each run, those that differ between the runs first.</p>'
            f"{configurations}</body></html>")


def write_report(records: Sequence[RunRecord], output: str | Path | None, png_dir: str | Path | None = None,
                 target: float = 0.8, budget_only: bool = False) -> list[Path]:
    """Write the HTML page to ``output`` and/or each figure as ``png_dir/NAME.png``; return the paths.
    ``budget_only``: of the figures, only the comparison at equal compute (a budget protocol's many runs)."""
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"--target must lie in (0, 1], got {target}")
    if output is not None and Path(output).is_dir():
        raise ConfigError(f"-o: {str(output)!r} is a directory; give a file name such as report.html")
    for destination, label in ((output, "-o"), (png_dir, "--png")):
        if destination is not None and not Path(destination).parent.exists():
            raise ConfigError(f"{label}: the folder {str(Path(destination).parent)!r} does not exist; create it first")
    if png_dir is not None and Path(png_dir).exists() and not Path(png_dir).is_dir():
        raise ConfigError(f"--png: {str(png_dir)!r} is a file, not a folder; give a folder for the PNG plots")
    figures = render_figures(records, budget_only)
    written = []
    if output is not None:
        Path(output).write_text(build_report(records, figures, target), encoding="utf-8")
        written.append(Path(output))
    if png_dir is not None:
        Path(png_dir).mkdir(exist_ok=True)
        for name, data in figures.items():
            path = Path(png_dir) / f"{name}.png"
            path.write_bytes(data)
            written.append(path)
    return written
