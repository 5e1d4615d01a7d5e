"""Exact top-k search and score explanations over a :class:`SparseIndex`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import numba
import numpy as np
import scipy.sparse as sp

from ..encoders import SparseEncoder, load_encoder
from ..errors import SparseirError
from ..index import SparseIndex
from .kernels import search_batch, search_one, search_one_split

#: Indexes at least this large split a single query across threads.
SPLIT_MIN_DOCS = 1 << 18

Query = str | Mapping[str, float] | sp.spmatrix


class Hit(NamedTuple):
    doc_id: str
    score: float


class Contribution(NamedTuple):
    """One shared dimension's share of a score: ``query_weight * doc_weight``."""

    term: str
    query_weight: float
    doc_weight: float
    product: float


class EncoderMismatchError(SparseirError, ValueError):
    """The encoder does not match the one the index was built with."""


@contextmanager
def numba_threads(threads: int | None) -> Iterator[None]:
    """Run the enclosed kernels on ``threads`` threads (all by default)."""
    if threads is None:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


class Searcher:
    """Search an index with text (through its encoder), term-weight dicts, or CSR query vectors.

    Without an explicit ``encoder``, the encoder recorded in the index manifest is loaded on first
    use of a text query.
    """

    def __init__(self, index: SparseIndex | str | Path, encoder: SparseEncoder | None = None) -> None:
        self.index = index if isinstance(index, SparseIndex) else SparseIndex.load(index)
        self._encoder = encoder
        if encoder is not None:
            self._check_encoder(encoder)
        self._acc = np.zeros(self.index.n_docs, dtype=np.float32)
        self._split_acc = np.zeros((0, 0), dtype=np.float32)
        self._term_ids: dict[str, int] | None = None

    @property
    def encoder(self) -> SparseEncoder:
        if self._encoder is None:
            info = self.index.manifest.get("encoder")
            if not info:
                raise EncoderMismatchError(f"{self.index.path}: no encoder recorded; pass one, or query with vectors")
            encoder = load_encoder(info["config"])
            self._check_encoder(encoder)
            self._encoder = encoder
        return self._encoder

    def _check_encoder(self, encoder: SparseEncoder) -> None:
        info = self.index.manifest.get("encoder") or {}
        if encoder.dim != self.index.n_dims:
            raise EncoderMismatchError(f"encoder has {encoder.dim} dimensions, the index {self.index.n_dims}")
        if info.get("fingerprint") and info["fingerprint"] != encoder.fingerprint:
            raise EncoderMismatchError(
                f"encoder weights (fingerprint {encoder.fingerprint}) differ from those the index was built "
                f"with ({info['fingerprint']}, {info.get('config', {}).get('model')})")

    # --- queries to vectors --------------------------------------------------------------
    def query_vectors(self, queries: Query | Sequence[Query]) -> sp.csr_matrix:
        """Queries (texts, ``{term: weight}`` dicts, or sparse rows) as a ``[n, n_dims]`` CSR matrix."""
        if isinstance(queries, (str, Mapping)) or sp.issparse(queries):
            queries = [queries]
        queries = list(queries)
        if all(isinstance(q, str) for q in queries):
            return self.encoder.encode_query(queries)
        rows = [self._one_vector(q) for q in queries]
        return sp.vstack(rows, format="csr", dtype=np.float32) if rows else sp.csr_matrix((0, self.index.n_dims))

    def _one_vector(self, query: Query) -> sp.csr_matrix:
        if isinstance(query, str):
            return self.encoder.encode_query([query])
        if isinstance(query, Mapping):
            if self._term_ids is None:
                self._term_ids = {t: i for i, t in enumerate(self.index.terms.tolist())}
            unknown = [t for t in query if t not in self._term_ids]
            if unknown:
                raise KeyError(f"terms not in the index vocabulary: {unknown[:5]}")
            cols = [self._term_ids[t] for t in query]
            return sp.csr_matrix((np.asarray(list(query.values()), np.float32), ([0] * len(cols), cols)),
                                 shape=(1, self.index.n_dims))
        q = sp.csr_matrix(query, dtype=np.float32)
        if q.shape != (1, self.index.n_dims):
            raise ValueError(f"query vector has shape {q.shape}, expected (1, {self.index.n_dims})")
        return q

    # --- search ----------------------------------------------------------------------------
    def search_vectors(self, queries: sp.spmatrix, k: int = 10,
                       threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k internal doc ids ``[n, k]``, scores ``[n, k]`` and hit counts ``[n]``."""
        q = sp.csr_matrix(queries, dtype=np.float32)
        q.sum_duplicates()
        ix = self.index
        weights = q.data * np.float32(ix.scale)  # fold the dequantisation scale into the query
        n = q.shape[0]
        ids = np.zeros((n, k), dtype=np.int64)
        scores = np.zeros((n, k), dtype=np.float32)
        counts = np.zeros(n, dtype=np.int64)
        if n == 1:
            with numba_threads(threads):
                parts = numba.get_num_threads() if ix.n_docs >= SPLIT_MIN_DOCS else 1
                if parts > 1:  # one query, several cores: split the document range
                    if self._split_acc.shape[0] != parts:
                        self._split_acc = np.zeros((parts, -(-ix.n_docs // parts)), dtype=np.float32)
                    counts[0] = search_one_split(ix.offsets, ix.docs, ix.impacts, q.indices, weights,
                                                 self._split_acc, k, ids[0], scores[0])
                else:
                    counts[0] = search_one(ix.offsets, ix.docs, ix.impacts, q.indices, weights, self._acc, k,
                                           ids[0], scores[0])
        elif n:
            with numba_threads(threads):
                blocks = min(n, 4 * numba.get_num_threads())
                search_batch(ix.offsets, ix.docs, ix.impacts, q.indptr, q.indices, weights, ix.n_docs, k, blocks,
                             ids, scores, counts)
        return ids, scores, counts

    def search(self, query: Query, k: int = 10) -> list[Hit]:
        """Exact top-k documents for one query, best first (ties: smaller internal id first)."""
        ids, scores, counts = self.search_vectors(self.query_vectors(query), k)
        return self._hits(ids[0], scores[0], counts[0])

    def batch_search(self, queries: Mapping[str, Query] | Sequence[Query], k: int = 10,
                     threads: int | None = None) -> dict[str, list[Hit]] | list[list[Hit]]:
        """Top-k for many queries in parallel. A dict of queries gives a dict of results."""
        keys = list(queries) if isinstance(queries, Mapping) else None
        vectors = self.query_vectors([queries[q] for q in keys] if keys is not None else queries)
        ids, scores, counts = self.search_vectors(vectors, k, threads)
        results = [self._hits(i, s, c) for i, s, c in zip(ids, scores, counts)]
        return dict(zip(keys, results)) if keys is not None else results

    def _hits(self, ids: np.ndarray, scores: np.ndarray, count: int) -> list[Hit]:
        return [Hit(self.index.doc_ids[int(d)], float(s)) for d, s in zip(ids[:count], scores[:count])]

    def explain(self, query: Query, doc_id: str) -> list[Contribution]:
        """Each dimension shared by the query and ``doc_id``, largest contribution first.

        The products sum to the document's score.
        """
        ix = self.index
        try:
            doc = ix.doc_ids.position(doc_id)
        except KeyError:
            raise KeyError(f"document {doc_id!r} is not in the index") from None
        q = self.query_vectors(query)
        out = []
        for t, w in zip(q.indices, q.data):
            lo, hi = ix.offsets[t], ix.offsets[t + 1]
            p = lo + np.searchsorted(ix.docs[lo:hi], doc)
            if p < hi and ix.docs[p] == doc:
                dw = float(ix.impacts[p]) * ix.scale
                out.append(Contribution(ix.terms[int(t)], float(w), dw, float(w) * dw))
        return sorted(out, key=lambda c: -c.product)
