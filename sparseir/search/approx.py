"""Approximate top-k search: a query-term cut, candidate generation, exact re-scoring.

Learned sparse vectors ("wacky weights") defeat WAND/MaxScore: queries have many terms with
similar upper bounds, so dynamic pruning skips little. This mode bounds the work per query:

1. **Query-term cut**: only the ``query_cut`` heaviest query dimensions generate candidates.
2. **Candidates**, from one of two sources:

   - ``"full"`` (default): the exact kernel runs on the full posting lists of the cut dims only;
     the ``candidates`` best partial scores are kept. The heaviest query dims of SPLADE-like
     vectors are the rarer ones: on the 1M-document benchmark the 12 heaviest of ~50 dims hold
     about a fifth of the postings a query touches.
   - ``"pruned"`` (Seismic-style): each dimension keeps only its ``n_postings`` highest impacts
     (**static pruning**), cut in impact order into **blocks** of ``block_size`` whose
     **summary** is their largest impact, so ``q_t * summary`` bounds a block's contribution.
     Blocks of the cut dims are visited score-at-a-time in decreasing bound order until
     ``budget`` distinct documents are touched; the ``candidates`` best partial scores are kept.

3. **Exact re-scoring with a heap factor**: candidates, best partial score first, are scored
   with every query dim through a forward index; the scan stops at the first candidate whose
   partial score is below ``heap_factor`` times the current k-th exact score (0: score all).
   Returned scores are exact dot products, bit-identical to the exact path's.

Each segment of a live index gets its own structures; deleted documents are never candidates;
the per-segment results are merged as in exact search. The defaults were picked by measurement
(``bench/results/speed.md``): recall@10 >= 0.95 of exact on SciFact splade-tiny vectors and on
the 1M-document synthetic corpus, where the "pruned" source stays far below 0.95 at any speed
better than exact (its near-duplicate documents differ only in mid-weight terms that single-term
impact pruning drops).

The extra structures are built in memory from the exact index on demand (no change to the
on-disk format); :attr:`ApproxIndex.nbytes` reports their size. Exact search stays the default:
use :class:`ApproxSearcher` to opt in.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp

from ..errors import UsageError
from ..index.format import IndexFormatError
from ..index.live import LiveIndex
from ..index.segment import SparseIndex
from .approx_kernels import (Forward, Knobs, Pruned, Scratch, approx_search_batch, approx_search_one, forward_index,
                             full_search_one, impact_order_float, impact_order_uint8, pruned_lengths)
from .kernels import CORRUPT, Queries, Query, TopK
from .params import ApproxParams, check_k
from .searcher import Searcher, merge_topk, numba_threads


class ApproxIndex:
    """The approximate mode's in-memory structures for one segment (:class:`SparseIndex`)."""

    def __init__(self, index: SparseIndex, n_postings: int = ApproxParams.n_postings,
                 block_size: int = ApproxParams.block_size) -> None:
        ApproxParams(n_postings=n_postings, block_size=block_size)  # validates
        start = time.perf_counter()
        self.n_postings, self.block_size = n_postings, block_size
        self.n_docs, self.n_dims = index.n_docs, index.n_dims
        offsets, docs, impacts = index.offsets, np.asarray(index.docs), np.asarray(index.impacts)
        if len(docs) and int(docs.max()) >= index.n_docs:
            raise IndexFormatError(f"{index.path}: posting document ids beyond n_docs ({index.n_docs}), the index "
                                   "is corrupt (run `sparseir check`)")
        doc_nnz = np.asarray(index.doc_nnz)
        if int(doc_nnz.sum()) != len(docs):
            raise IndexFormatError(f"{index.path}: doc_nnz disagrees with the postings, the index is corrupt")
        dims_dtype = np.uint16 if index.n_dims <= np.iinfo(np.uint16).max + 1 else np.uint32
        self.fwd_dims = np.empty(index.n_postings, dtype=dims_dtype)
        self.fwd_vals = np.empty(index.n_postings, dtype=impacts.dtype)
        self.fwd_indptr = forward_index(offsets, docs, impacts, doc_nnz, self.fwd_dims, self.fwd_vals)
        self.p_offsets = np.zeros(index.n_dims + 1, dtype=np.int64)
        np.cumsum(pruned_lengths(offsets, n_postings), out=self.p_offsets[1:])
        self.p_docs = np.empty(self.p_offsets[-1], dtype=np.uint32)
        self.p_impacts = np.empty(self.p_offsets[-1], dtype=impacts.dtype)
        order = impact_order_uint8 if impacts.dtype == np.uint8 else impact_order_float
        order(offsets, docs, impacts, self.p_offsets, self.p_docs, self.p_impacts)
        self.forward = Forward(self.fwd_indptr, self.fwd_dims, self.fwd_vals)
        self.pruned = Pruned(self.p_offsets, self.p_docs, self.p_impacts, block_size)
        self.build_seconds = time.perf_counter() - start

    @property
    def nbytes(self) -> int:
        """Bytes of the forward index and the pruned, impact-ordered lists."""
        return sum(a.nbytes for a in (self.fwd_indptr, self.fwd_dims, self.fwd_vals, self.p_offsets, self.p_docs,
                                      self.p_impacts))


class ApproxSearcher(Searcher):
    """A :class:`Searcher` whose searches are approximate (see the module docstring).

    ``params`` sets every knob; ``approx`` reuses structures already built (one
    :class:`ApproxIndex` per segment, or one for a one-segment index) with the same
    ``n_postings`` and ``block_size``. :meth:`exact` gives the exact searcher of the same index.
    """

    def __init__(self, index: LiveIndex | SparseIndex | str | Path, encoder=None,
                 params: ApproxParams = ApproxParams(), approx: ApproxIndex | list[ApproxIndex] | None = None) -> None:
        self.params = params
        self._given = [approx] if isinstance(approx, ApproxIndex) else approx
        super().__init__(index, encoder)

    def _use(self, index: LiveIndex) -> None:
        super()._use(index)
        p, given = self.params, self._given
        if given is not None:
            if len(given) != len(index.segments) or any(
                    (a.n_postings, a.block_size, a.n_docs) != (p.n_postings, p.block_size, s.n_docs)
                    for a, s in zip(given, index.segments)):
                raise UsageError("approx was built for another index or other n_postings/block_size")
            self.approx = list(given)
        else:
            old = {id(s): a for s, a in zip(getattr(self, "_approx_segments", []), getattr(self, "approx", []))}
            self.approx = [old.get(id(s)) or ApproxIndex(s, p.n_postings, p.block_size) for s in index.segments]
        self._given = None  # a refresh builds structures for new segments
        self._approx_segments = list(index.segments)
        self._scratch: list[Scratch | None] = [None] * len(index.segments)

    def with_params(self, **changes) -> ApproxSearcher:
        """A searcher over the same structures with other per-query knobs."""
        params = ApproxParams(**{**asdict(self.params), **changes})
        return ApproxSearcher(self.index, self._encoder, params, self.approx)

    def exact(self) -> Searcher:
        return Searcher(self.index, self._encoder)

    def _touched_size(self, n_docs: int) -> int:
        b = self.params.budget
        return max(1, min(n_docs, b) if b > 0 else n_docs)

    def search_vectors(self, queries: sp.spmatrix, k: int = 10,
                       threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Approximate top-k global positions ``[n, k]``, exact scores ``[n, k]`` and hit counts ``[n]``."""
        check_k(k)
        q = sp.csr_matrix(queries, dtype=np.float32)
        q.sum_duplicates()
        p = self.params
        qs = Queries(q.indptr, q.indices, q.data * np.float32(self.index.scale))
        kn = Knobs(k, p.query_cut, p.budget, p.candidates, p.heap_factor)
        n = q.shape[0]
        parts = []
        for s, (post, a) in enumerate(zip(self._postings, self.approx)):
            out = TopK(np.zeros((n, k), np.int64), np.zeros((n, k), np.float32), np.zeros(n, np.int64))
            n_docs = post.dead.shape[0]
            if n == 1:
                sc = self._scratch[s]
                if sc is None or sc.touched.shape[0] != self._touched_size(n_docs):
                    sc = self._scratch[s] = Scratch(np.zeros(n_docs, np.float32),
                                                    np.empty(self._touched_size(n_docs), np.int64),
                                                    np.zeros(self.index.n_dims, np.float32))
                one = Query(qs.dims, qs.weights)
                if p.source == "full":
                    out.counts[0] = full_search_one(post, a.forward, one, kn, sc, out.ids[0], out.scores[0])
                else:
                    out.counts[0] = approx_search_one(post, a.pruned, a.forward, one, kn, sc, out.ids[0],
                                                      out.scores[0])
            elif n:
                with numba_threads(threads):
                    blocks = min(n, 4 * numba.get_num_threads())
                    approx_search_batch(post, a.pruned, a.forward, qs, kn, p.source == "full", self.index.n_dims,
                                        blocks, self._touched_size(n_docs), out)
            if (out.counts == CORRUPT).any():
                raise IndexFormatError(f"{self.index.segments[s].path}: posting document ids out of range, the "
                                       "index is corrupt (run `sparseir check`)")
            parts.append(out)
        return merge_topk(parts, self.index.bases, n, k)
