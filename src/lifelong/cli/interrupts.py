"""How to continue after Ctrl-C: the runner's :class:`~lifelong.runner.checkpoint.RunInterrupted` says
where the run stopped, and each command puts in its message the command that continues it (with the
``--db`` it used): ``lifelong run --resume ID``, or for a sweep the sweep again (it skips the cells
already finished). Command-line wording, so it lives in the ``cli`` layer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def continue_with(how: Callable[[int | None], str]) -> Iterator[None]:
    """Re-raise a :class:`RunInterrupted` inside the block with ``how(run_id)`` as the way to continue.
    (The runner is imported here, by the commands that train, so that the others start without torch.)"""
    from lifelong.runner.checkpoint import RunInterrupted

    try:
        yield
    except RunInterrupted as interrupt:
        raise interrupt.continued_with(how(interrupt.run_id)) from None


def resume_command(db: str) -> Callable[[int | None], str]:
    """``lifelong run --resume ID --db DB``, the command that continues an interrupted run."""
    return lambda run_id: f"`lifelong run --resume {run_id} --db {db}`"
