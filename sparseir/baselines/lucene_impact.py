"""Lucene impact search over the same sparse vectors sparseir indexes (a cross-check).

Vectors are quantised to integers, ``round(w * scale)``, written as an Anserini
``JsonVectorCollection`` (the token of dimension ``j`` is the string ``"j"``, so
any vocabulary works), and indexed with ``-impact -pretokenized``. Anserini's
``SimpleImpactSearcher`` then scores ``sum_t q_t * d_t`` over integer weights, so
an engine fed the same integers must return the same scores.

API: :func:`quantize`, :func:`build_impact_index` (``ids`` + CSR -> index folder),
:class:`ImpactSearcher` (queries as CSR rows or ``{dim: int}`` dicts).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from sparseir._fs import atomic_dir, dir_bytes
from sparseir.java import init_java
from sparseir.search.params import check_k
from sparseir.search.results import Hit, batch_items
SparseQuery = sp.spmatrix | Mapping[int, int]


def quantize(vectors: sp.spmatrix, scale: float = 100.0) -> sp.csr_matrix:
    """``round(w * scale)`` as float32 integers, explicit zeros dropped; negative weights are an error."""
    csr = sp.csr_matrix(vectors, dtype=np.float32, copy=True)
    if csr.nnz and csr.data.min() < 0:
        raise ValueError("impact weights must be non-negative")
    csr.data = np.rint(csr.data.astype(np.float64) * scale).astype(np.float32)
    csr.eliminate_zeros()
    if csr.nnz and csr.data.max() >= 2**31:
        raise ValueError(f"quantised weight {csr.data.max():.0f} does not fit a Java int; lower the scale")
    return csr


def _is_integer(csr: sp.csr_matrix) -> bool:
    return bool(np.all(csr.data == np.rint(csr.data)))


def write_json_vectors(ids: Sequence[str], vectors: sp.csr_matrix, folder: Path, *,
                       show_progress: bool = True) -> int:
    """Write ``docs.jsonl`` in ``folder``; returns the number of non-empty documents written."""
    written = 0
    with open(folder / "docs.jsonl", "w", encoding="utf-8") as f:
        for i in tqdm(range(vectors.shape[0]), desc="impact vectors", unit="doc", disable=not show_progress):
            lo, hi = vectors.indptr[i], vectors.indptr[i + 1]
            if lo == hi:
                continue  # Lucene would skip an empty document; it can never match anyway
            vec = {str(j): int(w) for j, w in zip(vectors.indices[lo:hi].tolist(), vectors.data[lo:hi].tolist())}
            f.write(json.dumps({"id": ids[i], "contents": "", "vector": vec}) + "\n")
            written += 1
    return written


def build_impact_index(ids: Sequence[str], vectors: sp.spmatrix, out: str | Path, *,
                       scale: float | None = 100.0, threads: int = 1, show_progress: bool = True) -> Path:
    """Index document vectors with Lucene at ``out`` (atomically).

    ``scale`` quantises float weights with :func:`quantize`; pass ``None`` when
    ``vectors`` already hold non-negative integers. ``threads=1`` keeps Lucene's
    internal order (its tie-break) equal to the input order.
    """
    csr = sp.csr_matrix(vectors)
    if len(ids) != csr.shape[0]:
        raise ValueError(f"{len(ids)} ids for {csr.shape[0]} vectors")
    if len(set(ids)) != len(ids):
        raise ValueError("document ids must be unique")
    if scale is not None:
        csr = quantize(csr, scale)
    elif not _is_integer(csr) or (csr.nnz and csr.data.min() < 0):
        raise ValueError("scale=None needs non-negative integer weights")
    init_java()
    from jnius import autoclass

    index_collection = autoclass("io.anserini.index.IndexCollection")
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent) as collection:
        n_docs = write_json_vectors(ids, csr, Path(collection), show_progress=show_progress)
        index_collection.main(["-collection", "JsonVectorCollection", "-input", collection,
                               "-index", str(tmp), "-threads", str(int(threads)),
                               "-impact", "-pretokenized", "-optimize"])
        check = autoclass("io.anserini.search.SimpleImpactSearcher")(str(tmp))
        indexed = check.get_total_num_docs()
        check.close()
        if indexed != n_docs:
            raise RuntimeError(f"Lucene indexed {indexed} of {n_docs} documents")
    return Path(out)


class ImpactSearcher:
    """Anserini ``SimpleImpactSearcher`` with integer query weights.

    ``scale`` quantises float queries (CSR rows) as :func:`quantize` does; dict
    queries ``{dim: weight}`` must already be integers.
    """

    def __init__(self, index_dir: str | Path, *, scale: float | None = 100.0):
        if not any(Path(index_dir).glob("segments_*")):
            raise FileNotFoundError(f"{index_dir}: not a Lucene index")
        init_java()
        from jnius import autoclass

        self.index_dir = Path(index_dir)
        self.scale = scale
        self._searcher = autoclass("io.anserini.search.SimpleImpactSearcher")(str(index_dir))
        self._map = autoclass("java.util.HashMap")
        self._list = autoclass("java.util.ArrayList")
        self._int = autoclass("java.lang.Integer")

    @property
    def nbytes(self) -> int:
        return dir_bytes(self.index_dir)

    def _query_dicts(self, queries: SparseQuery) -> list[dict[int, int]]:
        if isinstance(queries, Mapping):
            if any(w != int(w) or w < 0 for w in queries.values()):
                raise ValueError("dict query weights must be non-negative integers")
            return [{int(j): int(w) for j, w in queries.items() if w}]
        csr = sp.csr_matrix(queries)
        if self.scale is not None:
            csr = quantize(csr, self.scale)
        elif not _is_integer(csr):
            raise ValueError("scale=None needs integer query weights")
        return [dict(zip(csr.indices[csr.indptr[i]:csr.indptr[i + 1]].tolist(),
                         csr.data[csr.indptr[i]:csr.indptr[i + 1]].astype(np.int64).tolist()))
                for i in range(csr.shape[0])]

    def _jquery(self, query: dict[int, int]):
        jq = self._map()
        for j, w in query.items():
            jq.put(str(j), self._int(w))
        return jq

    def search(self, query: SparseQuery, k: int = 10) -> list[Hit]:
        """Top ``k`` for one query (a 1-row CSR or a dict), best first."""
        (q,) = self._query_dicts(query)
        if not q:
            return []
        return [Hit(h.docid, float(h.score)) for h in self._searcher.search(self._jquery(q), check_k(k))]

    def batch_search(self, queries: sp.spmatrix | Sequence[Mapping[int, int]], qids: Sequence[str] | None = None,
                     k: int = 10, threads: int = 1) -> dict[str, list[Hit]]:
        """``{qid: hits}`` for the rows of ``queries`` (CSR, or a list of dicts) on ``threads`` Java threads
        (Pyserini's argument order)."""
        dicts = ([d for q in queries for d in self._query_dicts(q)]
                 if not sp.issparse(queries) else self._query_dicts(queries))
        qids, _ = batch_items(dicts, qids)
        jqueries, jqids = self._list(), self._list()
        for qid, q in zip(qids, dicts):
            if q:  # an empty query matches nothing
                jqueries.add(self._jquery(q))
                jqids.add(qid)
        run: dict[str, list[Hit]] = {qid: [] for qid in qids}
        if jqids.size():
            results = self._searcher.batch_search(jqueries, jqids, check_k(k), int(threads))
            for entry in results.entrySet().toArray():
                run[entry.getKey()] = [Hit(h.docid, float(h.score)) for h in entry.getValue()]
        return run

    def close(self) -> None:
        self._searcher.close()
