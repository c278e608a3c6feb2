"""The SQLite writer gate holds across processes (``--workers N``), not only threads:
a read-modify-write of a plain file done under it by several processes at once
loses no update."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from orchestrator.registry.database import Database, WriterGate

ROUNDS = 300
PROCESSES = 3
THREADS = 2


def _bump(gate_path: str, counter: str, rounds: int) -> None:
    import threading

    gate = WriterGate(Path(gate_path))

    def work() -> None:
        for _ in range(rounds):
            with gate:
                path = Path(counter)
                n = int(path.read_text())
                path.write_text(str(n + 1))

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gate.close()


def test_the_gate_lets_one_writer_in_across_processes_and_threads(tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=_bump, args=(str(tmp_path / "gate"), str(counter), ROUNDS))
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)  # only gives up on a hang
        assert p.exitcode == 0
    assert int(counter.read_text()) == ROUNDS * PROCESSES * THREADS


def test_a_sqlite_registry_gates_its_writers_on_a_hidden_file_beside_it(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        with db.tx():
            pass
        gate = tmp_path / ".registry.db.writers"
        assert gate.exists()
        assert gate.stat().st_mode & 0o777 == 0o600
    finally:
        db.close()
