"""A writer process for the kill and concurrency tests: seeded random commits on tiny vectors.

    python tests/live_worker.py INDEX SEED [N_OPS]

Prints ``READY`` once started, then for every commit ``BEGIN <generation> <signature>`` just
before :meth:`IndexWriter.commit` and ``ACK <generation>`` after it returned. The signature
(:func:`signature`) identifies the live documents, their order and their vectors.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sparseir.index import IndexWriter, MergePolicy, is_index, open_index

N_DIMS = 16
TERMS = [f"t{j}" for j in range(N_DIMS)]
POLICY = MergePolicy(merge_factor=3, min_docs=4, max_segments=12)


def signature(ids: list[str], rows: sp.csr_matrix) -> str:
    h = hashlib.sha256()
    rows = sp.csr_matrix(rows, dtype=np.float32)
    rows.sort_indices()
    for i, doc_id in enumerate(ids):
        lo, hi = rows.indptr[i], rows.indptr[i + 1]
        h.update(doc_id.encode() + b"\0" + rows.indices[lo:hi].astype(np.int32).tobytes() +
                 rows.data[lo:hi].tobytes() + b"\1")
    return h.hexdigest()


def index_state(path: Path | str, index=None) -> tuple[int, str, list[str], sp.csr_matrix]:
    """(generation, signature, live ids, live vectors) of the latest commit of ``path``."""
    index = index if index is not None else open_index(path)
    x = index.to_csr()
    live = np.ones(index.max_doc, bool)
    for s, dead in enumerate(index.dead):
        if dead is not None:
            live[index.bases[s]:index.bases[s + 1]] &= dead == 0
    ids = index.live_ids()
    rows = x[np.flatnonzero(live)]
    return index.generation, signature(ids, rows), ids, rows


def random_rows(rng: np.random.Generator, n: int) -> sp.csr_matrix:
    dense = (rng.random((n, N_DIMS)) < 0.3) * rng.integers(1, 16, (n, N_DIMS)) / 4
    return sp.csr_matrix(dense.astype(np.float32))


def main(path: str, seed: int, n_ops: int) -> None:
    rng = np.random.default_rng(seed)
    if is_index(path):
        _, _, ids, rows = index_state(path)
        model = {i: rows[j] for j, i in enumerate(ids)}
    else:
        model = {}
    print("READY", flush=True)
    for op in range(n_ops):
        kind = rng.choice(["add", "add", "upsert", "delete", "optimize", "overwrite"], p=[.3, .1, .2, .2, .1, .1])
        create = kind == "overwrite" or not model
        w = IndexWriter(path, terms=TERMS, quantize="float32", create=create, merge_policy=POLICY,
                        max_buffered_docs=int(rng.integers(3, 12)), store=bool(seed % 2))
        if create:
            model = {}
        if kind in ("add", "upsert", "overwrite") or not model:
            n = int(rng.integers(1, 25))
            new = [f"s{seed}o{op}d{j}" for j in range(n)]
            if kind == "upsert" and model:
                keys = list(model)
                new[: n // 2] = list(dict.fromkeys(keys[int(rng.integers(len(keys)))] for _ in range(n // 2)))
                new = list(dict.fromkeys(new))
            rows = random_rows(rng, len(new))
            for lo in range(0, len(new), 7):  # several adds per commit
                w.add(new[lo:lo + 7], rows[lo:lo + 7], upsert=kind == "upsert")
            for j, i in enumerate(new):
                model.pop(i, None)
                model[i] = rows[j]
        elif kind == "delete":
            keys = list(model)
            gone = list({keys[int(rng.integers(len(keys)))] for _ in range(int(rng.integers(1, 6)))})
            assert w.delete(gone + ["no-such-id"]) == ["no-such-id"]
            for i in gone:
                del model[i]
        else:
            w.optimize(int(rng.integers(1, 3)))
        ids = list(model)
        rows = sp.vstack([model[i] for i in ids], format="csr") if ids else sp.csr_matrix((0, N_DIMS))
        print(f"BEGIN {w.generation + 1} {signature(ids, rows)}", flush=True)
        gen = w.commit()
        print(f"ACK {gen}", flush=True)
        w.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 10**9)
