"""The type check (issue 22): mypy, strict on the runner and on the strategy contract
(``strategies/base.py``), with the project's configuration (``[tool.mypy]`` in ``pyproject.toml``), finds
nothing. It runs here so that the README's test command (what CI runs) runs it too."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]


def test_the_runner_and_the_strategy_contract_type_check_strictly(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the configuration's paths are the repository's
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    assert status == 0, out + err
