"""Crash safety and concurrency with real processes: kill -9 a writer at random instants, and
search from several reader processes while a writer commits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from live_worker import index_state
from sparseir.index import IndexWriter, is_index, open_index
from sparseir.index.check import check_postings
from sparseir.index.commit import KEEP_COMMITS, SEGMENTS, generations, referenced

HERE = Path(__file__).resolve().parent
KILLS = 32


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}


def _worker(path: Path, seed: int, n_ops: int | None = None) -> subprocess.Popen:
    args = [sys.executable, str(HERE / "live_worker.py"), str(path), str(seed)]
    return subprocess.Popen(args + ([str(n_ops)] if n_ops else []), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def _wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    assert line.strip() == "READY", (line, proc.stderr.read() if proc.poll() is not None else "")


def _no_leftovers(path: Path) -> None:
    """After a writer opened and closed: nothing that the kept commits do not reference."""
    gens = generations(path)
    assert len(gens) <= KEEP_COMMITS + 1
    keep = referenced(path, gens)
    assert set(os.listdir(path / SEGMENTS)) <= keep
    assert not [n for n in os.listdir(path) if ".tmp-" in n]


def test_kill_9_at_random_instants_never_loses_a_commit(tmp_path):
    path = tmp_path / "ix"
    rng = np.random.default_rng(1234)
    known: dict[int, str] = {}
    last_ack = 0
    acked_commits = 0
    for kill in range(KILLS):
        proc = _worker(path, seed=kill)
        _wait_ready(proc)
        time.sleep(float(rng.uniform(0.0, 1.6)))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err
        for line in out.splitlines():
            word, gen, *rest = line.split()
            if word == "BEGIN":
                known[int(gen)] = rest[0]
            elif word == "ACK":
                last_ack = max(last_ack, int(gen))
                acked_commits += 1
        if not is_index(path):
            assert last_ack == 0
            continue
        index = open_index(path, verify=True)  # opens and verifies after every kill
        index.verify()
        for seg in index.segments:
            check_postings(seg)
        gen, sig, _, _ = index_state(path, index)
        assert gen >= last_ack, "an acknowledged commit was lost"
        assert known.get(gen) == sig, f"generation {gen} is not a committed state"
        IndexWriter(path).close()  # the next writer cleans up what the killed one left
        _no_leftovers(path)
    assert acked_commits >= KILLS // 2  # the kills landed among real commits, not only at start-up


def test_readers_see_only_committed_states_while_a_writer_works(tmp_path):
    path = tmp_path / "ix"
    first = _worker(path, seed=7, n_ops=3)
    _wait_ready(first)
    assert first.wait(timeout=120) == 0
    writer = _worker(path, seed=8, n_ops=60)
    readers = [subprocess.Popen([sys.executable, str(HERE / "live_reader.py"), str(path), "8"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
               for _ in range(3)]
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    known = {int(gen): sig for word, gen, sig in (line.split() for line in out.splitlines()
                                                  if line.startswith("BEGIN"))}
    seen = set()
    for r in readers:
        r.send_signal(signal.SIGTERM)
        rout, rerr = r.communicate(timeout=60)
        assert "ERROR" not in rout and "Traceback" not in rerr, rerr[-3000:]
        for line in rout.splitlines():
            gen, sig = line.split()
            seen.add(int(gen))
            if int(gen) in known:  # generations before the writer's first are the setup's
                assert known[int(gen)] == sig, f"a reader saw generation {gen} in no committed state"
    assert len(seen) >= 3, f"readers saw too few generations: {sorted(seen)}"
