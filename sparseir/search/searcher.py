"""Exact top-k search and score explanations over a live index (all segments, deletions applied)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numba
import numpy as np
import scipy.sparse as sp

from ..encoders.sources import ProvenanceError
from ..errors import SparseirError, UsageError
from ..index.format import IndexFormatError
from ..index.live import LiveIndex, open_index
from ..index.segment import SparseIndex
from numba.typed import List as TypedList

from .kernels import (CORRUPT, Postings, Queries, Query as QueryArrays, TopK, search_one_split, search_segments,
                      search_segments_batch)
from .params import check_k
from .results import Contribution, Hit, batch_items

if TYPE_CHECKING:
    from ..encoders import SparseEncoder

#: Segments at least this large split a single query across threads.
SPLIT_MIN_DOCS = 1 << 18

Query = str | Mapping[str, float] | sp.spmatrix


class EncoderMismatchError(SparseirError, ValueError):
    """The encoder does not match the one the index was built with."""


class DocumentNotFoundError(SparseirError, KeyError):
    """No live document has this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@contextmanager
def numba_threads(threads: int | None) -> Iterator[None]:
    """Run the enclosed kernels on ``threads`` threads (all by default)."""
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be an integer >= 1, got {threads!r}")
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def as_live(index: LiveIndex | SparseIndex | str | Path) -> LiveIndex:
    """A :class:`LiveIndex` for a path, a live index, or one segment (a one-segment view)."""
    if isinstance(index, LiveIndex):
        return index
    if isinstance(index, SparseIndex):
        m = index.manifest
        settings = {"n_dims": index.n_dims, "quantization": m["quantization"], "scale": index.scale,
                    "encoder": m.get("encoder"), "store": bool(m.get("store"))}
        commit = {"generation": 0, "settings": settings,
                  "segments": [{"name": index.path.name, "n_docs": index.n_docs, "n_deleted": 0}]}
        return LiveIndex(index.path, commit, [index], [None])
    return open_index(index)


class Searcher:
    """Search an index with text (through its encoder), term-weight dicts, or CSR query vectors.

    ``index``: a path (the latest commit is opened), a :class:`LiveIndex`, or one segment.
    Without an explicit ``encoder``, the encoder recorded in the index is loaded on first use
    of a text query. :meth:`refresh` picks up newer commits.
    """

    def __init__(self, index: LiveIndex | SparseIndex | str | Path, encoder: SparseEncoder | None = None) -> None:
        self._encoder = encoder
        self._use(as_live(index))
        if encoder is not None:
            self._check_encoder(encoder)

    def _use(self, index: LiveIndex) -> None:
        self.index = index
        self._postings = [Postings(s.offsets, s.docs, s.impacts, d if d is not None else np.zeros(s.n_docs, np.uint8),
                                   s.checked_dims) for s, d in zip(index.segments, index.dead)]
        self._segs = TypedList(self._postings) if self._postings else None
        self._acc = np.zeros(max((min(s.n_docs, 1 << 20) for s in index.segments), default=0), dtype=np.float32)
        self._split_acc = np.zeros((0, 0), dtype=np.float32)
        self._term_ids: dict[str, int] | None = None

    @property
    def generation(self) -> int:
        """The commit generation this searcher sees."""
        return self.index.generation

    def refresh(self) -> bool:
        """Switch to the index's newest commit if there is one; returns whether it changed."""
        from ..index.commit import generations

        gens = generations(self.index.path)
        if not gens or gens[-1] == self.index.generation:
            return False
        self._use(open_index(self.index.path, previous=self.index))
        return True

    @property
    def encoder(self) -> SparseEncoder:
        if self._encoder is None:
            info = self.index.settings.get("encoder")
            if not info:
                raise EncoderMismatchError(f"{self.index.path}: no encoder recorded; pass one, or query with vectors")
            from ..encoders import load_encoder

            encoder = load_encoder(info["config"])
            self._check_encoder(encoder)
            self._encoder = encoder
        return self._encoder

    def _check_encoder(self, encoder: SparseEncoder) -> None:
        info = self.index.settings.get("encoder") or {}
        if encoder.dim != self.index.n_dims:
            raise EncoderMismatchError(f"encoder has {encoder.dim} dimensions, the index {self.index.n_dims}")
        if info.get("fingerprint") and info["fingerprint"] != encoder.fingerprint:
            raise EncoderMismatchError(
                f"encoder weights (fingerprint {encoder.fingerprint}) differ from those the index was built "
                f"with ({info['fingerprint']}, {info.get('config', {}).get('model')})")

    # --- queries to vectors --------------------------------------------------------------
    def query_vectors(self, queries: Query | Sequence[Query]) -> sp.csr_matrix:
        """Queries (texts, ``{term: weight}`` dicts, or sparse rows) as a ``[n, n_dims]`` CSR matrix."""
        if sp.issparse(queries):
            q = sp.csr_matrix(queries, dtype=np.float32)
            if q.shape[1] != self.index.n_dims:
                raise UsageError(f"query vectors have {q.shape[1]} columns, the index {self.index.n_dims} dimensions")
            return q
        if isinstance(queries, (str, Mapping)):
            queries = [queries]
        queries = list(queries)
        if queries and all(isinstance(q, str) for q in queries):
            return self.encoder.encode_query(queries)
        rows = [self._one_vector(q) for q in queries]
        return sp.vstack(rows, format="csr", dtype=np.float32) if rows else sp.csr_matrix((0, self.index.n_dims))

    def _one_vector(self, query: Query) -> sp.csr_matrix:
        if isinstance(query, str):
            return self.encoder.encode_query([query])
        if isinstance(query, Mapping):
            if self._term_ids is None:
                self._term_ids = {t: i for i, t in enumerate(self.index.terms)}
            unknown = [t for t in query if t not in self._term_ids]
            if unknown:
                raise UsageError(f"terms not in the index vocabulary: {unknown[:5]}")
            cols = [self._term_ids[t] for t in query]
            return sp.csr_matrix((np.asarray(list(query.values()), np.float32), ([0] * len(cols), cols)),
                                 shape=(1, self.index.n_dims))
        q = sp.csr_matrix(query, dtype=np.float32)
        if q.shape != (1, self.index.n_dims):
            raise UsageError(f"query vector has shape {q.shape}, expected (1, {self.index.n_dims})")
        return q

    # --- search ----------------------------------------------------------------------------
    def search_vectors(self, queries: sp.spmatrix, k: int = 10,
                       threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k global document positions ``[n, k]``, scores ``[n, k]`` and hit counts ``[n]``.

        The segments are scanned in order into one heap, deletions applied, so ties go to the
        smaller position and the order equals a single fresh segment's.
        """
        check_k(k)
        q = canonical_csr(queries)
        weights = q.data * np.float32(self.index.scale)  # fold the dequantisation scale into the query
        qs = Queries(q.indptr, q.indices, weights)
        n = q.shape[0]
        out = TopK(np.zeros((n, k), dtype=np.int64), np.zeros((n, k), dtype=np.float32), np.zeros(n, dtype=np.int64))
        if self._segs is None or n == 0:
            return out
        with numba_threads(threads):
            if n == 1 and numba.get_num_threads() > 1 and max(p.dead.shape[0] for p in self._postings) >= SPLIT_MIN_DOCS:
                return merge_topk([self._split_segment(s, qs, k) for s in range(len(self._postings))],
                                  self.index.bases, n, k)
            if n == 1:
                out.counts[0] = search_segments(self._segs, self.index.bases, QueryArrays(qs.dims, qs.weights),
                                                self._acc, k, out.ids[0], out.scores[0])
            else:
                search_segments_batch(self._segs, self.index.bases, qs, k, min(n, 4 * numba.get_num_threads()),
                                      len(self._acc), out)
        self._check(out.counts)
        return out

    def _split_segment(self, s: int, qs: Queries, k: int) -> TopK:
        """One query on one segment, split across threads over its document range."""
        p = self._postings[s]
        out = TopK(np.zeros((1, k), dtype=np.int64), np.zeros((1, k), dtype=np.float32), np.zeros(1, dtype=np.int64))
        shape = (numba.get_num_threads(), -(-p.dead.shape[0] // numba.get_num_threads()))
        if self._split_acc.shape != shape:
            self._split_acc = np.zeros(shape, dtype=np.float32)
        out.counts[0] = search_one_split(p, QueryArrays(qs.dims, qs.weights), self._split_acc, k, out.ids[0],
                                         out.scores[0])
        self._check(out.counts)
        return out

    def _check(self, counts: np.ndarray, where: Path | None = None) -> None:
        """Raise :class:`IndexFormatError` if a kernel found a bad posting (``where``: the segment, if known)."""
        if counts.min(initial=0) == CORRUPT:
            where = f"{where}: posting document ids out of range" if where else \
                f"{self.index.path}: posting document ids out of range in a segment"
            raise IndexFormatError(f"{where}, the index is corrupt (run `sparseir check`)")

    def search(self, query: Query, k: int = 10) -> list[Hit]:
        """Exact top-k documents for one query, best first (ties: earlier inserted document first)."""
        ids, scores, counts = self.search_vectors(self.query_vectors(query), k)
        return self._hits(ids[0], scores[0], counts[0]) if len(counts) else []

    def batch_search(self, queries: Mapping[str, Query] | Sequence[Query] | sp.spmatrix,
                     qids: Sequence[str] | None = None, k: int = 10,
                     threads: int | None = None) -> dict[str, list[Hit]]:
        """Top-k for many queries in parallel, as ``{qid: hits}`` (Pyserini's argument order).

        ``queries``: texts, term-weight dicts or a CSR matrix with ``qids`` beside them, or a
        ``{qid: query}`` mapping. Without ``qids`` the ids are ``"0", "1", ...``.
        """
        qids, queries = batch_items(queries, qids, queries.shape[0] if sp.issparse(queries) else None)
        vectors = self.query_vectors(queries)
        ids, scores, counts = self.search_vectors(vectors, k, threads)
        return {qid: self._hits(i, s, c) for qid, i, s, c in zip(qids, ids, scores, counts)}

    def _hits(self, ids: np.ndarray, scores: np.ndarray, count: int) -> list[Hit]:
        return [Hit(self.index.doc_id(int(d)), float(s)) for d, s in zip(ids[:count], scores[:count])]

    def doc(self, doc_id: str) -> dict[str, Any] | None:
        """The stored document ``{"id", "title", "text", ...}``; ``None`` if absent, deleted or not stored."""
        return self.index.doc(doc_id)

    def explain(self, query: Query, doc_id: str, provenance: bool = False) -> list[Contribution]:
        """Each dimension shared by the query and ``doc_id``, largest contribution first.

        The products sum to the document's score. Raises :class:`DocumentNotFoundError` for an
        id that is not a live document. ``provenance=True`` re-encodes the stored text (and a text
        query) and fills each contribution's ``doc_sources`` (and ``query_sources``) with the words
        its weight comes from; see :meth:`~sparseir.encoders.SparseEncoder.provenance`. A dimension the
        re-encoded text does not produce (a document added with vectors made elsewhere) gets no sources.
        """
        ix = self.index
        pos = ix.position(doc_id)
        if pos is None:
            raise DocumentNotFoundError(f"document {doc_id!r} is not in the index {ix.path} (absent or deleted)")
        s, doc = ix.locate(pos)
        seg = ix.segments[s]
        q = self.query_vectors(query)
        if q.shape[0] != 1:
            raise UsageError(f"explain takes one query, got {q.shape[0]}")
        terms = ix.terms
        out = []
        for t, w in zip(q.indices, q.data):
            lo, hi = seg.offsets[t], seg.offsets[t + 1]
            p = lo + np.searchsorted(seg.docs[lo:hi], doc)
            if p < hi and seg.docs[p] == doc:
                dw = float(seg.impacts[p]) * ix.scale
                out.append(Contribution(terms[int(t)], float(w), dw, float(w) * dw))
        out.sort(key=lambda c: -c.product)
        return add_sources(out, self.encoder, query, self._stored_text(doc_id)) if provenance else out

    def _stored_text(self, doc_id: str) -> str:
        """The stored text of ``doc_id`` (a live document), for provenance."""
        if not self.index.settings.get("store"):
            raise ProvenanceError(f"{self.index.path} keeps no document text (built with --no-store), so provenance "
                                  "cannot re-encode the document; rebuild the index with its document store")
        stored = self.doc(doc_id)
        if stored is None or not isinstance(stored.get("text"), str):
            raise ProvenanceError(f"document {doc_id!r} has no stored text in {self.index.path}")
        return stored["text"]


def add_sources(contributions: list[Contribution], encoder: SparseEncoder, query: Query,
                doc_text: str) -> list[Contribution]:
    """``contributions`` with their source words: ``doc_text`` (and ``query`` when it is a text) re-encoded by
    ``encoder`` (:meth:`~sparseir.encoders.SparseEncoder.provenance`), matched by term."""
    dims = {t: i for i, t in enumerate(encoder.terms)}
    doc_sources = encoder.provenance(doc_text)
    query_sources = encoder.provenance(query, is_query=True) if isinstance(query, str) else None
    return [c._replace(query_sources=query_sources.get(dims[c.term], []) if query_sources is not None else None,
                       doc_sources=doc_sources.get(dims[c.term], [])) for c in contributions]


def canonical_csr(queries: sp.spmatrix) -> sp.csr_matrix:
    """``queries`` as float32 CSR with sorted, distinct columns per row: as given when it is one
    already (a single query's conversion costs more than its approximate search's scan).

    A NaN or infinite weight is a :class:`UsageError` naming the query row.
    """
    if sp.isspmatrix_csr(queries) and queries.dtype == np.float32 and queries.has_canonical_format:
        q = queries
    else:
        q = sp.csr_matrix(queries, dtype=np.float32)
        q.sum_duplicates()
    if not np.isfinite(q.data).all():
        first = int(np.flatnonzero(~np.isfinite(q.data))[0])
        row = int(np.searchsorted(q.indptr, first, side="right")) - 1
        raise UsageError(f"query {row}: weight {q.data[first]} in dimension {q.indices[first]} is not finite")
    return q


def merge_topk(parts: list[TopK], bases: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-segment top-k lists (internal ids) into global positions, by (score desc, position asc)."""
    if not parts:
        return np.zeros((n, k), np.int64), np.zeros((n, k), np.float32), np.zeros(n, np.int64)
    if len(parts) == 1:
        return parts[0].ids + bases[0], parts[0].scores, parts[0].counts
    ids = np.concatenate([p.ids + bases[s] for s, p in enumerate(parts)], axis=1)
    scores = np.concatenate([p.scores for p in parts], axis=1)
    valid = np.concatenate([np.arange(k)[None, :] < p.counts[:, None] for p in parts], axis=1)
    scores = np.where(valid, scores, -np.inf)
    ids = np.where(valid, ids, np.iinfo(np.int64).max)
    order = np.lexsort((ids, -scores))[:, :k]
    counts = np.minimum(sum(p.counts for p in parts), k)
    top_ids = np.take_along_axis(ids, order, axis=1)
    top_scores = np.take_along_axis(scores, order, axis=1)
    mask = np.arange(k)[None, :] < counts[:, None]
    return np.where(mask, top_ids, 0), np.where(mask, top_scores, 0).astype(np.float32), counts
