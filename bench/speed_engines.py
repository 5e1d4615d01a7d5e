"""The engines compared by ``bench/speed.py``, behind one small interface.

Every engine indexes the same integer document impacts (``docs``: CSR of non-negative integers,
the sparseir uint8 impacts) and searches the same integer query weights, so in exact mode all
of them compute the same integer scores. A document is named by its row number as a string.

An engine exposes ``build()`` (returns nothing; timed by the caller), ``nbytes``, ``prepare(i)``
(query ``i`` in the engine's own form, made outside the timed region), ``search(prepared, k)``
(internal row numbers, best first), ``batch(k, threads)`` (all queries, where ``has_batch``), ``settings()`` (operating points) and ``close()``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparseir.index import SparseIndex
from sparseir.search import Searcher
from sparseir.search.approx import ApproxIndex, ApproxParams, ApproxSearcher


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


class Engine:
    name = "engine"
    has_batch = False
    point: dict[str, Any] = {}

    def __init__(self, docs: sp.csr_matrix, queries: sp.csr_matrix, workdir: Path) -> None:
        self.docs, self.queries, self.workdir = docs, queries, workdir

    def settings(self) -> Iterator[dict[str, Any]]:
        """Operating points; the engine searches with ``self.point`` set to each in turn."""
        yield {}

    def batch(self, k: int, threads: int) -> list[np.ndarray]:
        raise NotImplementedError(f"{self.name} has no multi-threaded batch search")

    def close(self) -> None:
        pass


class SparseirExact(Engine):
    """sparseir's exact search over its uint8 index (built from the float vectors by the caller)."""

    name = "sparseir-exact"
    has_batch = True

    def __init__(self, index: SparseIndex, queries: sp.csr_matrix) -> None:
        super().__init__(None, queries, index.path)
        self.index = index

    def build(self) -> None:
        self.searcher = Searcher(self.index)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes

    def prepare(self, i: int) -> sp.csr_matrix:
        return self.queries[i]

    def search(self, q: sp.csr_matrix, k: int) -> np.ndarray:
        ids, _, counts = self.searcher.search_vectors(q, k)
        return ids[0, :counts[0]]

    def batch(self, k: int, threads: int) -> list[np.ndarray]:
        ids, _, counts = self.searcher.search_vectors(self.queries, k, threads=threads)
        return [row[:c] for row, c in zip(ids, counts)]


class SparseirApprox(SparseirExact):
    """sparseir's approximate mode; ``sweep`` lists the per-query knob settings to measure."""

    name = "sparseir-approx"

    def __init__(self, index: SparseIndex, queries: sp.csr_matrix, params: ApproxParams,
                 sweep: list[dict[str, Any]]) -> None:
        super().__init__(index, queries)
        self.params, self.sweep = params, sweep

    def build(self) -> None:
        self.approx = ApproxIndex(self.index, self.params.n_postings, self.params.block_size)
        self.searcher = ApproxSearcher(self.index, params=self.params, approx=self.approx)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self.approx.nbytes

    def settings(self) -> Iterator[dict[str, Any]]:
        base = self.searcher
        for point in self.sweep:
            self.searcher = base.with_params(**point)
            self.point = asdict(self.searcher.params)
            yield point
        self.searcher = base


class Seismic(Engine):
    """Seismic (``pyseismic-lsr``): clustered blocks with summary vectors, query cut, heap factor."""

    name = "seismic"
    has_batch = True

    def __init__(self, docs, queries, workdir, build_args: dict[str, Any], sweep: list[dict[str, Any]],
                 threads: int) -> None:
        super().__init__(docs, queries, workdir)
        self.build_args, self.sweep, self.threads = build_args, sweep, threads

    def build(self) -> None:
        import seismic

        dataset = seismic.SeismicDataset(dim=self.docs.shape[1])
        dataset.add_documents_by_id([str(i) for i in range(self.docs.shape[0])], self.docs.indices.astype(np.int64),
                                    self.docs.data.astype(np.float32), self.docs.indptr.astype(np.int64))
        self.index = seismic.SeismicIndex.build_from_dataset(dataset, num_threads=self.threads, **self.build_args)
        del dataset
        self._string = seismic.get_seismic_string()
        path = self.workdir / "seismic"
        self.index.save(str(path))
        self._nbytes = os.path.getsize(f"{path}.index.seismic")
        os.remove(f"{path}.index.seismic")

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def _query(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        q = self.queries[i]
        return np.array([str(c) for c in q.indices], dtype=self._string), q.data.astype(np.float32)

    def prepare(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self._query(i)

    def settings(self) -> Iterator[dict[str, Any]]:
        for point in self.sweep:
            self.point = point
            yield point

    def search(self, q, k: int) -> np.ndarray:
        res = self.index.search("q", q[0], q[1], k=k, **self.point)
        return np.array([int(r[2]) for r in res], dtype=np.int64)

    def batch(self, k: int, threads: int) -> list[np.ndarray]:
        qs = [self._query(i) for i in range(self.queries.shape[0])]
        res = self.index.batch_search(np.array([str(i) for i in range(len(qs))], dtype=self._string),
                                      [c for c, _ in qs], [v for _, v in qs], k=k, num_threads=threads,
                                      **self.point)
        return [np.array([int(r[2]) for r in row], dtype=np.int64) for row in res]

    def close(self) -> None:
        del self.index


class BMP(Engine):
    """Block-Max Pruning (``bmp``): block upper bounds over a block forward index, 8-bit impacts.

    ``alpha = beta = 1`` is its exact setting.
    """

    name = "bmp"

    def __init__(self, docs, queries, workdir, bsize: int, sweep: list[dict[str, Any]]) -> None:
        super().__init__(docs, queries, workdir)
        self.bsize, self.sweep = bsize, sweep

    def build(self) -> None:
        import bmp

        self.path = self.workdir / "index.bmp"
        indexer = bmp.Indexer(str(self.path), bsize=self.bsize, compress_range=False)
        d = self.docs
        for i in range(d.shape[0]):
            lo, hi = d.indptr[i], d.indptr[i + 1]
            indexer.add_document(str(i), dict(zip(map(str, d.indices[lo:hi].tolist()),
                                                  d.data[lo:hi].astype(np.int64).tolist())))
        indexer.finish()
        self.searcher = bmp.Searcher(str(self.path))

    @property
    def nbytes(self) -> int:
        return os.path.getsize(self.path)

    def prepare(self, i: int) -> dict[str, int]:
        q = self.queries[i]
        return dict(zip(map(str, q.indices.tolist()), q.data.astype(np.int64).tolist()))

    def settings(self) -> Iterator[dict[str, Any]]:
        for point in self.sweep:
            self.point = point
            yield point

    def search(self, q: dict[str, int], k: int) -> np.ndarray:
        names, _ = self.searcher.search(q, k=k, **self.point)
        return np.array([int(n) for n in names], dtype=np.int64)

    def close(self) -> None:
        del self.searcher
        os.remove(self.path)


class LuceneImpact(Engine):
    """Lucene impact search through Pyserini/Anserini (``sparseir.baselines.lucene_impact``)."""

    name = "lucene-impact"
    has_batch = True

    def __init__(self, docs, queries, workdir, threads: int) -> None:
        super().__init__(docs, queries, workdir)
        self.threads = threads

    def build(self) -> None:
        from sparseir.baselines.lucene_impact import ImpactSearcher, build_impact_index

        self.path = self.workdir / "lucene"
        build_impact_index([str(i) for i in range(self.docs.shape[0])], self.docs, self.path, scale=None,
                           threads=self.threads)
        self.searcher = ImpactSearcher(self.path, scale=None)

    @property
    def nbytes(self) -> int:
        return dir_size(self.path)

    def prepare(self, i: int):
        from jnius import autoclass  # the JVM is up: build() started it

        jmap, jint = autoclass("java.util.HashMap"), autoclass("java.lang.Integer")
        q, jq = self.queries[i], jmap()
        for c, w in zip(q.indices.tolist(), q.data.astype(np.int64).tolist()):
            jq.put(str(c), jint(w))
        return jq

    def search(self, jq, k: int) -> np.ndarray:
        return np.array([int(h.docid) for h in self.searcher._searcher.search(jq, k)], dtype=np.int64)

    def batch(self, k: int, threads: int) -> list[np.ndarray]:
        qids = [str(i) for i in range(self.queries.shape[0])]
        run = self.searcher.batch_search(self.queries, qids, k=k, threads=threads)
        return [np.array([int(h.doc_id) for h in run[q]], dtype=np.int64) for q in qids]

    def close(self) -> None:
        self.searcher.close()
        shutil.rmtree(self.path, ignore_errors=True)


def workdir(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
