"""A reader process for the concurrency test: searches in a loop, refreshing to new commits.

    python tests/live_reader.py INDEX SEED

For every commit it sees, prints ``<generation> <signature>`` after checking that exact search
equals brute force on that commit's documents; prints ``ERROR ...`` on any exception.
"""

from __future__ import annotations

import signal
import sys
import traceback

import numpy as np

from live_worker import N_DIMS, index_state, random_rows
from reference import brute_force
from sparseir.index import is_index
from sparseir.search import Searcher

stop = False


def _stop(*_):
    global stop
    stop = True


def main(path: str, seed: int) -> None:
    signal.signal(signal.SIGTERM, _stop)
    rng = np.random.default_rng(seed)
    queries = random_rows(rng, 8)
    searcher = None
    while not stop:
        try:
            if searcher is None:
                if not is_index(path):
                    continue
                searcher = Searcher(path)
            else:
                searcher.refresh()
            index = searcher.index
            gen, sig, _, _ = index_state(path, index)
            ids, scores, counts = searcher.search_vectors(queries, 5)
            expected, _ = brute_force(index, queries, 5)
            for q, exp in enumerate(expected):
                got = list(zip(ids[q, :counts[q]].tolist(), scores[q, :counts[q]].tolist()))
                assert got == exp, (gen, q, got, exp)
            print(gen, sig, flush=True)
        except Exception:
            print("ERROR", traceback.format_exc().replace("\n", " | "), flush=True)
            return
    assert N_DIMS


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
