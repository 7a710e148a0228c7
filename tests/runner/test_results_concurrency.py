"""Two processes writing runs to one results database at the same time both land whole."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import torch

from lifelong import OptimConfig, ResultsStore, class_incremental, mlp, train
from lifelong.strategies import ER

WRITES = 10


def write_run(path, stream, seed: int, go: int) -> None:
    """In a child: wait for the start signal, open the store (maybe creating it), train and record a
    run, and interleave extra single-row writes with the other child's."""
    os.read(go, 1)
    store = ResultsStore(path)
    torch.manual_seed(seed)
    result = train(stream, mlp((8,), 6, hidden=(16,)), ER(buffer_size=20), OptimConfig(epochs=1), seed=seed,
                   store=store)
    for index in range(WRITES):
        store.record_experience(result.run_id, 100 + index, [float(seed)], {"index": index})


def test_two_processes_write_one_database_at_once(small_data, tmp_path) -> None:
    path = tmp_path / "runs.db"  # not created yet: both processes race to create the schema too
    stream = class_incremental(small_data, 3)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])  # torch's lazy imports, once, before forking
    read_end, write_end = os.pipe()
    children = []
    for seed in (1, 2):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                write_run(path, stream, seed, read_end)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    os.write(write_end, b"gg")  # release both at once
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    assert all(os.WIFEXITED(s) and os.WEXITSTATUS(s) == 0 for s in statuses)

    store = ResultsStore(path)
    records = [store.get(run.id) for run in store.runs()]
    assert sorted(r.seed for r in records) == [1, 2]
    for record in records:
        assert record.status == "finished" and len(record.matrix) == 3 and record.metrics is not None
        assert [e["index"] for e in record.experiences] == [0, 1, 2, *range(100, 100 + WRITES)]
        assert np.allclose([e["accuracies"] for e in record.experiences[:3]], record.matrix)
        assert all(e["accuracies"] == [float(record.seed)] for e in record.experiences[3:])
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
