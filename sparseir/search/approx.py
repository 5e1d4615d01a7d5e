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

The defaults were picked by measurement (``bench/results/speed.md``): recall@10 >= 0.95 of exact
on SciFact splade-tiny vectors and on the 1M-document synthetic corpus, where the "pruned"
source stays far below 0.95 at any speed better than exact (its near-duplicate documents differ
only in mid-weight terms that single-term impact pruning drops).

The extra structures are built in memory from the exact index on demand (no change to the
on-disk format); :attr:`ApproxIndex.nbytes` reports their size. Exact search stays the default:
use :class:`ApproxSearcher` to opt in.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp

from ..encoders import SparseEncoder
from ..index import SparseIndex
from .approx_kernels import (approx_search_batch, approx_search_one, forward_index, full_search_one,
                             impact_order_float, impact_order_uint8, pruned_lengths)
from .searcher import Searcher, numba_threads


SOURCES = ("pruned", "full")


@dataclass(frozen=True)
class ApproxParams:
    """Knobs of the approximate mode. Build-time: ``n_postings``, ``block_size``; the rest per query.

    The defaults reach recall@10 >= 0.95 of exact search on SciFact splade-tiny vectors and on
    the 1M-document synthetic corpus (see ``bench/results/speed.md``). Larger ``query_cut``,
    ``candidates``, ``budget``, ``n_postings`` and smaller ``heap_factor`` trade speed for recall.
    """

    source: str = "full"        #: candidates from the "full" lists of the cut dims, or "pruned" blocks
    n_postings: int = 4096      #: "pruned": postings kept per dimension (the highest impacts)
    block_size: int = 32        #: "pruned": postings per block; a block's summary is its maximum impact
    query_cut: int = 12         #: heaviest query dimensions that generate candidates
    budget: int = 20_000        #: "pruned": distinct documents touched per query (0: no limit)
    candidates: int = 200       #: most documents re-scored exactly
    heap_factor: float = 0.0    #: stop re-scoring below heap_factor * k-th exact score (0: score all)

    def __post_init__(self) -> None:
        for name in ("n_postings", "block_size", "query_cut", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.budget < 0:
            raise ValueError(f"budget must be >= 0, got {self.budget}")
        if not 0.0 <= self.heap_factor <= 1.0:
            raise ValueError(f"heap_factor must be in [0, 1], got {self.heap_factor}")


class ApproxIndex:
    """The approximate mode's in-memory structures for one :class:`SparseIndex`."""

    def __init__(self, index: SparseIndex, n_postings: int = ApproxParams.n_postings,
                 block_size: int = ApproxParams.block_size) -> None:
        ApproxParams(n_postings=n_postings, block_size=block_size)  # validates
        start = time.perf_counter()
        self.n_postings, self.block_size = n_postings, block_size
        self.n_docs, self.n_dims = index.n_docs, index.n_dims
        offsets, docs, impacts = index.offsets, np.asarray(index.docs), np.asarray(index.impacts)
        dims_dtype = np.uint16 if index.n_dims <= np.iinfo(np.uint16).max + 1 else np.uint32
        self.fwd_dims = np.empty(index.n_postings, dtype=dims_dtype)
        self.fwd_vals = np.empty(index.n_postings, dtype=impacts.dtype)
        self.fwd_indptr = forward_index(offsets, docs, impacts, np.asarray(index.doc_nnz), self.fwd_dims,
                                        self.fwd_vals)
        self.p_offsets = np.zeros(index.n_dims + 1, dtype=np.int64)
        np.cumsum(pruned_lengths(offsets, n_postings), out=self.p_offsets[1:])
        self.p_docs = np.empty(self.p_offsets[-1], dtype=np.uint32)
        self.p_impacts = np.empty(self.p_offsets[-1], dtype=impacts.dtype)
        order = impact_order_uint8 if impacts.dtype == np.uint8 else impact_order_float
        order(offsets, docs, impacts, self.p_offsets, self.p_docs, self.p_impacts)
        self.build_seconds = time.perf_counter() - start

    @property
    def nbytes(self) -> int:
        """Bytes of the forward index and the pruned, impact-ordered lists."""
        return sum(a.nbytes for a in (self.fwd_indptr, self.fwd_dims, self.fwd_vals, self.p_offsets, self.p_docs,
                                      self.p_impacts))


class ApproxSearcher(Searcher):
    """A :class:`Searcher` whose searches are approximate (see the module docstring).

    ``params`` sets every knob; ``approx`` reuses structures already built for this index with the
    same ``n_postings`` and ``block_size``. :meth:`exact` gives the exact searcher of the same index.
    """

    def __init__(self, index: SparseIndex | str | Path, encoder: SparseEncoder | None = None,
                 params: ApproxParams = ApproxParams(), approx: ApproxIndex | None = None) -> None:
        super().__init__(index, encoder)
        if approx is None:
            approx = ApproxIndex(self.index, params.n_postings, params.block_size)
        elif (approx.n_postings, approx.block_size, approx.n_docs) != (params.n_postings, params.block_size,
                                                                       self.index.n_docs):
            raise ValueError("approx was built for another index or other n_postings/block_size")
        self.params, self.approx = params, approx
        self._partial = np.zeros(self.index.n_docs, dtype=np.float32)
        self._q_dense = np.zeros(self.index.n_dims, dtype=np.float32)
        self._touched = np.empty(self._touched_size(), dtype=np.int64)

    def with_params(self, **changes) -> ApproxSearcher:
        """A searcher over the same structures with other per-query knobs."""
        params = ApproxParams(**{**asdict(self.params), **changes})
        return ApproxSearcher(self.index, self._encoder, params, self.approx)

    def exact(self) -> Searcher:
        return Searcher(self.index, self._encoder)

    def _touched_size(self) -> int:
        b = self.params.budget
        return max(1, min(self.index.n_docs, b) if b > 0 else self.index.n_docs)

    def search_vectors(self, queries: sp.spmatrix, k: int = 10,
                       threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Approximate top-k internal doc ids ``[n, k]``, exact scores ``[n, k]`` and hit counts ``[n]``."""
        q = sp.csr_matrix(queries, dtype=np.float32)
        q.sum_duplicates()
        a, p = self.approx, self.params
        weights = q.data * np.float32(self.index.scale)
        n = q.shape[0]
        ids = np.zeros((n, k), dtype=np.int64)
        scores = np.zeros((n, k), dtype=np.float32)
        counts = np.zeros(n, dtype=np.int64)
        ix = self.index
        if n == 1 and p.source == "full":
            counts[0] = full_search_one(ix.offsets, ix.docs, ix.impacts, a.fwd_indptr, a.fwd_dims, a.fwd_vals,
                                        q.indices, weights, k, p.query_cut, p.candidates, p.heap_factor, self._acc,
                                        self._q_dense, ids[0], scores[0])
        elif n == 1:
            counts[0] = approx_search_one(a.p_offsets, a.p_docs, a.p_impacts, a.block_size, a.fwd_indptr,
                                          a.fwd_dims, a.fwd_vals, q.indices, weights, k, p.query_cut, p.budget,
                                          p.candidates, p.heap_factor, self._partial, self._touched, self._q_dense,
                                          ids[0], scores[0])
        elif n:
            with numba_threads(threads):
                blocks = min(n, 4 * numba.get_num_threads())
                approx_search_batch(ix.offsets, ix.docs, ix.impacts, a.p_offsets, a.p_docs, a.p_impacts, a.block_size,
                                    a.fwd_indptr, a.fwd_dims, a.fwd_vals, q.indptr, q.indices, weights, ix.n_dims, k,
                                    p.source == "full", p.query_cut, p.budget, p.candidates, p.heap_factor, blocks,
                                    self._touched_size(), ids, scores, counts)
        return ids, scores, counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--approx`` and one option per :class:`ApproxParams` knob to a search/eval parser."""
    g = parser.add_argument_group("approximate search (exact unless --approx)")
    g.add_argument("--approx", action="store_true", help="search approximately (see sparseir.search.approx)")
    for f in fields(ApproxParams):
        g.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None, metavar="N",
                       help=f"{_KNOB_HELP[f.name]} (default {f.default})")


def params_from_args(args: argparse.Namespace) -> ApproxParams | None:
    """The :class:`ApproxParams` asked for on the command line, or ``None`` for exact search."""
    if not args.approx:
        return None
    return ApproxParams(**{f.name: getattr(args, f.name) for f in fields(ApproxParams)
                           if getattr(args, f.name, None) is not None})


_KNOB_HELP = {
    "source": f"where candidates come from: {' or '.join(SOURCES)}",
    "n_postings": "postings kept per dimension",
    "block_size": "postings per block",
    "query_cut": "heaviest query dimensions traversed",
    "budget": "distinct documents touched per query, 0 = no limit",
    "candidates": "most documents re-scored exactly",
    "heap_factor": "stop re-scoring below this fraction of the k-th exact score",
}
