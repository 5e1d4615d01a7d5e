"""The engines compared by ``bench/speed.py``, behind one small interface.

Every engine indexes the same integer document impacts (sparseir's uint8 impacts, in the corpus's
shared document order) and searches the same integer query weights, so in exact mode all of them
compute the same integer scores. An engine names a document by its position in the shared order.

An engine has a build configuration (``build_config``, part of its cache key) and operating points
(``points``: search settings). ``build(corpus_dir, out)`` writes its index under ``out`` from the
corpus files of ``corpus_dir`` (``docs-int.npz``, the integer impacts; ``sparseir/``, the sparseir
index); ``bench.speed_build`` runs it in a child process to measure its peak RSS. In the measuring
process: ``open(out)``, ``nbytes(out)``, ``prepare(q)`` (a query row in the engine's own form, made
outside the timed region), ``search(prepared, k, point)`` (positions, best first), ``close()``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from bench.speed_corpora import load_csr
from sparseir.search.approx import ApproxIndex, ApproxParams

Point = dict[str, Any]
PISA_ALGORITHMS = ("maxscore", "block_max_maxscore", "block_max_wand", "wand", "ranked_or")
BUILD_THREADS = 2  # builds run under the benchmark lock, which gives them the machine


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def load_int_docs(corpus_dir: Path) -> sp.csr_matrix:
    """The integer impacts in the shared order (``docs-int.npz``, written by ``bench.speed.prepare``)."""
    return load_csr(Path(corpus_dir) / "docs-int.npz")[0]


def _term_dicts(docs: sp.csr_matrix):
    """Each row as ``{str(dim): int(impact)}``."""
    for i in range(docs.shape[0]):
        lo, hi = docs.indptr[i], docs.indptr[i + 1]
        yield dict(zip(map(str, docs.indices[lo:hi].tolist()), docs.data[lo:hi].astype(np.int64).tolist()))


class Engine:
    name = "engine"
    exact_points: tuple[int, ...] = ()  # indices into ``points`` that are exact settings

    def __init__(self, build_config: Point | None = None, points: list[Point] | None = None) -> None:
        self.build_config = dict(build_config or {})
        self.points = list(points) if points is not None else [{}]

    @property
    def key(self) -> str:
        """Cache key of the built index: the engine and its build configuration."""
        return "-".join([self.name] + [f"{k}={v}" for k, v in sorted(self.build_config.items())])

    def build(self, corpus_dir: Path, out: Path) -> None:
        raise NotImplementedError

    def open(self, out: Path) -> None:
        raise NotImplementedError

    def nbytes(self, out: Path) -> int:
        return dir_size(out)

    def prepare(self, q: sp.csr_matrix) -> Any:
        return q

    def search(self, prepared: Any, k: int, point: Point) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SparseirExact(Engine):
    """sparseir's exact search (``Searcher``) over its uint8 index, written by the harness."""

    name = "sparseir-exact"
    exact_points = (0,)

    def build(self, corpus_dir: Path, out: Path) -> None:
        raise NotImplementedError("the harness writes sparseir's index (bench.speed_build sparseir-index)")

    def open(self, out: Path) -> None:
        from sparseir.index import SparseIndex
        from sparseir.search import Searcher

        self.index = SparseIndex.load(out / "index", verify=False)
        self.searcher = Searcher(self.index)

    def nbytes(self, out: Path) -> int:
        return self.index.nbytes

    def search(self, q: sp.csr_matrix, k: int, point: Point) -> np.ndarray:
        ids, _, counts = self.searcher.search_vectors(q, k)
        return ids[0, :counts[0]]


class SparseirApprox(SparseirExact):
    """sparseir's approximate mode (``ApproxSearcher``); each point is passed to ``with_params``.

    The build configuration holds the build-time knobs (``n_postings``, ``block_size``, ``keep``); the
    structures are built in memory when the index is opened (timed there).
    """

    name = "sparseir-approx"

    def open(self, out: Path) -> None:
        import time

        from sparseir.search.approx import ApproxSearcher

        super().open(out)
        params = ApproxParams(**self.build_config)
        start = time.perf_counter()
        self.approx = ApproxIndex(self.index, params.n_postings, params.block_size, params.keep)
        self.open_s = time.perf_counter() - start
        self.base = ApproxSearcher(self.index, params=params, approx=self.approx)
        self._searchers: dict[str, Any] = {}

    def nbytes(self, out: Path) -> int:
        return self.index.nbytes + self.approx.nbytes

    def settings(self, point: Point) -> Point:
        """Every knob of ``point``'s searcher (for the report)."""
        return asdict(self._searcher(point).params)

    def _searcher(self, point: Point):
        key = repr(sorted(point.items()))
        if key not in self._searchers:
            self._searchers[key] = self.base.with_params(**point)
        return self._searchers[key]

    def search(self, q: sp.csr_matrix, k: int, point: Point) -> np.ndarray:
        ids, _, counts = self._searcher(point).search_vectors(q, k)
        return ids[0, :counts[0]]


class Pisa(Engine):
    """PISA through ``pyterrier-pisa``: its learned-sparse path (``toks_indexer`` with ``scale=1`` on
    the integer impacts, ``stemmer='none'``, the ``quantized`` scorer, ``query_weighted``), default
    ``block_simdbp`` encoding and 64-posting blocks. Each point names a query ``algorithm``; all are
    exact. Queries go straight to ``_pisathon.retrieve`` (what ``PisaRetrieve.transform`` calls,
    without its DataFrame work), one query per call, one thread.
    """

    name = "pisa"

    def __init__(self, build_config: Point | None = None, points: list[Point] | None = None) -> None:
        super().__init__(build_config, points or [{"algorithm": a} for a in PISA_ALGORITHMS])
        self.exact_points = tuple(range(len(self.points)))

    def build(self, corpus_dir: Path, out: Path) -> None:
        from pyterrier_pisa import PisaIndex

        docs = load_int_docs(corpus_dir)
        index = PisaIndex(str(out / "pisa"), stemmer="none", threads=BUILD_THREADS)
        index.toks_indexer(scale=1.0).index({"docno": str(i), "toks": t} for i, t in enumerate(_term_dicts(docs)))
        index.quantized(num_results=10)  # builds the block-max (wand) data and the compressed index

    def open(self, out: Path) -> None:
        from pyterrier_pisa import PisaIndex, _pisathon

        self._retrieve = _pisathon.retrieve
        self._ctxt = PisaIndex(str(out / "pisa"), stemmer="none", threads=1).quantized(num_results=10)._ctxt
        self._buffers: dict[int, tuple[np.ndarray, ...]] = {}

    def prepare(self, q: sp.csr_matrix) -> list[tuple[int, dict[str, float]]]:
        # pyterrier-pisa repeats a term int(weight) times; query_weighted then scores weight * impact
        return [(0, {str(c): float(w) for c, w in zip(q.indices.tolist(), q.data.tolist())})]

    def search(self, q, k: int, point: Point) -> np.ndarray:
        if k not in self._buffers:
            self._buffers[k] = (np.empty(k, np.int32), np.empty(k, object), np.empty(k, np.int32),
                                np.empty(k, np.float32))
        qidx, docnos, ranks, scores = self._buffers[k]
        n = self._retrieve(self._ctxt, point["algorithm"], q, k=k, threads=1, query_weighted=1, pretokenised=True,
                           result_qidxs=qidx, result_docnos=docnos, result_ranks=ranks, result_scores=scores)
        return np.array([int(d) for d in docnos[:n]], dtype=np.int64)


class Seismic(Engine):
    """Seismic (``pyseismic-lsr``): pruned, clustered posting lists with summary vectors, and an
    optional kNN graph (``nknn`` at build, ``n_knn`` per query) that refines the results."""

    name = "seismic"

    def build(self, corpus_dir: Path, out: Path) -> None:
        import seismic

        docs = load_int_docs(corpus_dir)
        dataset = seismic.SeismicDataset(dim=docs.shape[1])
        dataset.add_documents_by_id([str(i) for i in range(docs.shape[0])], docs.indices.astype(np.int64),
                                    docs.data.astype(np.float32), docs.indptr.astype(np.int64))
        del docs
        index = seismic.SeismicIndex.build_from_dataset(dataset, num_threads=BUILD_THREADS, **self.build_config)
        out.mkdir(parents=True, exist_ok=True)
        index.save(str(out / "index"))
        if self.build_config.get("nknn"):
            index.save_knn(str(out / "index.knn"))

    def open(self, out: Path) -> None:
        import seismic

        self.index = seismic.SeismicIndex.load(str(out / "index.index.seismic"))
        if self.build_config.get("nknn") and not self.index.knn_len:
            self.index.load_knn(str(out / "index.knn.knn.seismic"))  # save_knn appends .knn.seismic
        self._string = seismic.get_seismic_string()

    def prepare(self, q: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        return np.array([str(c) for c in q.indices], dtype=self._string), q.data.astype(np.float32)

    def search(self, q, k: int, point: Point) -> np.ndarray:
        res = self.index.search("q", q[0], q[1], k=k, **point)
        return np.array([int(r[2]) for r in res], dtype=np.int64)

    def close(self) -> None:
        del self.index


class BMP(Engine):
    """Block-Max Pruning (``bmp``): block upper bounds over a block forward index, on the shared
    (BP-reordered, when available) document order as its README prescribes. ``bsize`` is built;
    ``alpha``/``beta`` per query, ``alpha = beta = 1`` being exact."""

    name = "bmp"

    def __init__(self, build_config: Point | None = None, points: list[Point] | None = None) -> None:
        super().__init__(build_config, points)
        self.exact_points = tuple(i for i, p in enumerate(self.points)
                                  if p.get("alpha", 1.0) == 1.0 and p.get("beta", 1.0) == 1.0)

    def build(self, corpus_dir: Path, out: Path) -> None:
        import bmp

        out.mkdir(parents=True, exist_ok=True)
        indexer = bmp.Indexer(str(out / "index.bmp"), bsize=self.build_config["bsize"], compress_range=False)
        for i, terms in enumerate(_term_dicts(load_int_docs(corpus_dir))):
            indexer.add_document(str(i), terms)
        indexer.finish()

    def open(self, out: Path) -> None:
        import bmp

        self.searcher = bmp.Searcher(str(out / "index.bmp"))

    def prepare(self, q: sp.csr_matrix) -> dict[str, int]:
        return dict(zip(map(str, q.indices.tolist()), q.data.astype(np.int64).tolist()))

    def search(self, q: dict[str, int], k: int, point: Point) -> np.ndarray:
        names, _ = self.searcher.search(q, k=k, alpha=point.get("alpha", 1.0), beta=point.get("beta", 1.0))
        return np.array([int(n) for n in names], dtype=np.int64)

    def close(self) -> None:
        del self.searcher


class LuceneImpact(Engine):
    """Lucene impact search through Pyserini/Anserini (``sparseir.baselines.lucene_impact``), exact."""

    name = "lucene-impact"
    exact_points = (0,)

    def build(self, corpus_dir: Path, out: Path) -> None:
        from sparseir.baselines.lucene_impact import build_impact_index

        docs = load_int_docs(corpus_dir)
        build_impact_index([str(i) for i in range(docs.shape[0])], docs, out / "lucene", scale=None, threads=1)  # 1: keeps the order

    def open(self, out: Path) -> None:
        from sparseir.baselines.lucene_impact import ImpactSearcher

        self.searcher = ImpactSearcher(out / "lucene", scale=None)

    def prepare(self, q: sp.csr_matrix):
        from jnius import autoclass  # the JVM is up: open() started it

        jmap, jint = autoclass("java.util.HashMap"), autoclass("java.lang.Integer")
        jq = jmap()
        for c, w in zip(q.indices.tolist(), q.data.astype(np.int64).tolist()):
            jq.put(str(c), jint(w))
        return jq

    def search(self, jq, k: int, point: Point) -> np.ndarray:
        return np.array([int(h.docid) for h in self.searcher._searcher.search(jq, k)], dtype=np.int64)

    def close(self) -> None:
        self.searcher.close()


ENGINES: dict[str, type[Engine]] = {e.name: e for e in (SparseirExact, SparseirApprox, Pisa, Seismic, BMP,
                                                           LuceneImpact)}


def make(name: str, build_config: Point | None = None, points: list[Point] | None = None) -> Engine:
    return ENGINES[name](build_config, points)
