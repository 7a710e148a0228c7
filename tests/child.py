"""The environment of a child process a test starts (the ``lifelong`` command, a script, ``torchrun``)."""

from __future__ import annotations

import os
from pathlib import Path

import lifelong


def child_environment() -> dict[str, str]:
    """This process's environment as it is now, with the child on one thread and importing the lifelong
    under test (the one this process imported, whether installed or on ``PYTHONPATH``)."""
    source = str(Path(lifelong.__file__).parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)}
