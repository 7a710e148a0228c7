"""A fast command line: the facade imports lazily, and the commands that only read the results store
start without importing torch (``benchmarks/startup.py`` measures the times)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import lifelong
from lifelong import OptimConfig, ResultsStore, class_incremental, mlp, train
from lifelong.cli import COMMAND_MODULES, build_parser
from lifelong.strategies import Naive

SOURCE = Path(lifelong.__file__).parent


def heavy_modules_after(code: str) -> list[str]:
    """The heavy top-level modules a fresh interpreter has imported after running ``code``."""
    probe = code + "\nimport sys\nprint(sorted({m.split('.')[0] for m in sys.modules} & " \
                   "{'torch', 'scipy', 'sklearn', 'optuna', 'matplotlib', 'pandas', 'numpy'}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(SOURCE.parent), "PATH": "/usr/bin:/bin"})
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_every_public_name_resolves_to_its_definition() -> None:
    for package in (lifelong, importlib.import_module("lifelong.runner")):
        for name in package.__all__:
            value = getattr(package, name)
            module = package._EXPORTS.get(name)
            assert module is None or value is getattr(importlib.import_module(module), name), name
        assert set(package.__all__) <= set(dir(package))


def test_type_checkers_see_the_same_names_as_the_lazy_table() -> None:
    for path, package in ((SOURCE / "__init__.py", lifelong), (SOURCE / "runner" / "__init__.py",
                                                               importlib.import_module("lifelong.runner"))):
        checked = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                for statement in node.body:
                    checked.update({alias.name: statement.module for alias in statement.names})
        assert checked == package._EXPORTS


def test_import_and_the_store_reading_commands_leave_torch_alone(small_data, tmp_path) -> None:
    database = tmp_path / "runs.db"
    stream = class_incremental(small_data, 2)
    store = ResultsStore(database)
    run_id = train(stream, mlp((8,), 6, hidden=(8,)), Naive(), OptimConfig(epochs=1), store=store).run_id
    assert heavy_modules_after("import lifelong") == []
    for command in (["runs"], ["show", str(run_id)], ["compare", str(run_id), str(run_id)]):
        call = f"from lifelong.cli import main\nassert main({[*command, '--db', str(database)]!r}) == 0"
        assert heavy_modules_after(call) == [], command
    assert "torch" in heavy_modules_after("import lifelong\nlifelong.train")  # a name imports its module


def test_each_command_is_routed_to_the_module_that_registers_it() -> None:
    every = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(every) == set(COMMAND_MODULES)
    for module in set(COMMAND_MODULES.values()):
        alone = build_parser([module])._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert set(alone) == {command for command, home in COMMAND_MODULES.items() if home == module}
