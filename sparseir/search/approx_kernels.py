"""Numba kernels of the approximate search mode (see :mod:`sparseir.search.approx`).

Build: a forward index (documents -> dims, ascending) and, per dimension, its ``n_postings``
highest-impact postings in impact order, cut into blocks of ``block_size`` postings whose
summary is their largest impact. Search: score-at-a-time over the blocks of the query's
heaviest dimensions in decreasing ``q_t * block_max`` order (a lazy merge of the per-dimension
block lists), until a budget of distinct documents is touched, into a dense accumulator of
partial scores; then the best partial scores are re-scored exactly
through the forward index, stopping at the first candidate whose partial score falls below
``heap_factor`` times the k-th exact score (their forward rows prefetched first).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .kernels import (CHUNK, CORRUPT, GROUP, Postings, Queries, Query, TopK, _lists_ok, _scan_chunk, group_maxima,
                      heap_push, heap_sort, search_one)
from .prefetch import prefetch


class Forward(NamedTuple):
    """Forward index: document ``d``'s (dim, impact) pairs are ``[indptr[d], indptr[d+1])``."""

    indptr: np.ndarray
    dims: np.ndarray
    vals: np.ndarray


class Pruned(NamedTuple):
    """Per dimension its highest-impact postings in impact order, cut into blocks of ``block_size``."""

    offsets: np.ndarray
    docs: np.ndarray
    impacts: np.ndarray
    block_size: int


class Knobs(NamedTuple):
    """Per-query knobs (see :class:`sparseir.search.params.ApproxParams`)."""

    k: int
    query_cut: int
    budget: int
    candidates: int
    heap_factor: float


class Scratch(NamedTuple):
    """Per-thread scratch: ``acc`` (float32, zeros; empty when ``acc16`` serves), ``touched`` (int64),
    ``q_dense`` (float32 [n_dims], zeros), ``acc16`` (uint16 [n_docs] zeros for :func:`candidates_u16`
    over uint8 impacts, else empty)."""

    acc: np.ndarray
    touched: np.ndarray
    q_dense: np.ndarray
    acc16: np.ndarray


@njit(cache=True, nogil=True)
def forward_index(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, doc_nnz: np.ndarray,
                  out_dims: np.ndarray, out_vals: np.ndarray) -> np.ndarray:
    """Transpose the postings into per-document (dim, impact) rows; returns the row offsets."""
    n_docs = doc_nnz.shape[0]
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    for d in range(n_docs):
        indptr[d + 1] = indptr[d] + doc_nnz[d]
    cursor = indptr[:-1].copy()
    for t in range(offsets.shape[0] - 1):
        for p in range(offsets[t], offsets[t + 1]):
            d = docs[p]
            out_dims[cursor[d]] = t
            out_vals[cursor[d]] = impacts[p]
            cursor[d] += 1
    return indptr


@njit(cache=True, nogil=True)
def pruned_lengths(offsets: np.ndarray, n_postings: int) -> np.ndarray:
    """Kept postings per dimension: ``min(list length, n_postings)``."""
    n_dims = offsets.shape[0] - 1
    lengths = np.empty(n_dims, dtype=np.int64)
    for t in range(n_dims):
        lengths[t] = min(offsets[t + 1] - offsets[t], n_postings)
    return lengths


@njit(cache=True, nogil=True)
def impact_order_uint8(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, p_offsets: np.ndarray,
                       out_docs: np.ndarray, out_impacts: np.ndarray) -> None:
    """Per dimension, its top postings by impact (ties: smaller doc first), by counting sort."""
    count = np.zeros(256, dtype=np.int64)
    start = np.zeros(256, dtype=np.int64)
    for t in range(offsets.shape[0] - 1):
        keep = p_offsets[t + 1] - p_offsets[t]
        if keep == 0:
            continue
        count[:] = 0
        for p in range(offsets[t], offsets[t + 1]):
            count[impacts[p]] += 1
        pos = p_offsets[t]
        for v in range(255, -1, -1):  # slot of the first posting of each impact level
            start[v] = pos
            pos += count[v]
        end = p_offsets[t + 1]
        for p in range(offsets[t], offsets[t + 1]):  # doc order within a level (lists are doc-sorted)
            v = impacts[p]
            s = start[v]
            if s < end:
                out_docs[s] = docs[p]
                out_impacts[s] = v
                start[v] = s + 1


@njit(cache=True, nogil=True)
def impact_order_float(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, p_offsets: np.ndarray,
                       out_docs: np.ndarray, out_impacts: np.ndarray) -> None:
    """As :func:`impact_order_uint8` for float impacts, by a stable sort."""
    for t in range(offsets.shape[0] - 1):
        keep = p_offsets[t + 1] - p_offsets[t]
        if keep == 0:
            continue
        lo = offsets[t]
        order = np.argsort(-impacts[lo:offsets[t + 1]], kind="mergesort")[:keep]
        for i in range(keep):
            out_docs[p_offsets[t] + i] = docs[lo + order[i]]
            out_impacts[p_offsets[t] + i] = impacts[lo + order[i]]


@njit(cache=True, nogil=True)
def impact_prune(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, threshold: float,
                 out_offsets: np.ndarray, out_docs: np.ndarray, out_impacts: np.ndarray) -> int:
    """Copy every posting with ``impact >= threshold``, lists still doc-sorted; returns how many."""
    n = 0
    for t in range(offsets.shape[0] - 1):
        out_offsets[t] = n
        for p in range(offsets[t], offsets[t + 1]):
            if impacts[p] >= threshold:
                out_docs[n] = docs[p]
                out_impacts[n] = impacts[p]
                n += 1
    out_offsets[offsets.shape[0] - 1] = n
    return n


@njit(cache=True, nogil=True)
def _select_terms(q_dims: np.ndarray, q_weights: np.ndarray, query_cut: int) -> np.ndarray:
    """Positions of the ``query_cut`` heaviest query dims."""
    order = np.argsort(-q_weights, kind="mergesort")
    return order[:min(query_cut, order.shape[0])]


@njit(cache=True, nogil=True)
def approx_search_one(p: Postings, pr: Pruned, fw: Forward, q: Query, kn: Knobs, sc: Scratch,
                      out_ids: np.ndarray, out_scores: np.ndarray) -> int:
    """Approximate top-k for one query ("pruned" source); returns the number of hits written (best first).

    ``sc.acc`` needs ``n_docs`` zeros, ``sc.touched`` ``budget`` slots (``n_docs`` when
    ``budget`` is 0); ``acc`` and ``q_dense`` are zero again on return.
    """
    if kn.k < 1 or kn.candidates < 1:
        raise ValueError("k and candidates must be >= 1")
    q_dims, q_weights, acc, touched, q_dense = q.dims, q.weights, sc.acc, sc.touched, sc.q_dense
    if q_dims.shape[0] == 0:
        return 0
    for j in range(q_dims.shape[0]):
        q_dense[q_dims[j]] = np.float32(q_weights[j])
    terms = _select_terms(q_dims, q_weights, kn.query_cut)
    nt = terms.shape[0]
    cursor = np.empty(nt, dtype=np.int64)  # next block of each kept term; blocks are in impact order
    stop = np.empty(nt, dtype=np.int64)
    weight = np.empty(nt, dtype=np.float32)
    for j in range(nt):
        t = q_dims[terms[j]]
        cursor[j], stop[j] = pr.offsets[t], pr.offsets[t + 1]
        weight[j] = np.float32(q_weights[terms[j]])
    # Score-at-a-time: repeatedly take the block with the largest bound q_t * block max, a lazy
    # merge of the kept terms' block lists, until the budget of distinct documents is spent.
    n_touched = 0
    limit = kn.budget if kn.budget > 0 else touched.shape[0]
    while n_touched < limit:
        best, best_ub = -1, np.float32(0.0)
        for j in range(nt):
            if cursor[j] < stop[j]:
                ub = weight[j] * np.float32(pr.impacts[cursor[j]])
                if ub > best_ub:
                    best, best_ub = j, ub
        if best < 0:
            break
        w = weight[best]
        first = cursor[best]
        last = min(first + pr.block_size, stop[best])
        cursor[best] = last
        docs, impacts = pr.docs[first:last], pr.impacts[first:last]
        for i in range(docs.shape[0]):
            c = w * np.float32(impacts[i])
            if c <= 0.0:  # a zero impact (or weight) must not make a document look untouched
                continue
            d = docs[i]
            if acc[d] == 0.0:
                if n_touched == limit:
                    continue
                touched[n_touched] = d
                n_touched += 1
            acc[d] += c
    # The best partial scores of live documents, in decreasing order.
    n_cand = min(kn.candidates, n_touched)
    cand_scores = np.empty(n_cand, dtype=np.float32)
    cand_ids = np.empty(n_cand, dtype=np.int64)
    m = 0
    for i in range(n_touched):
        d = touched[i]
        if n_cand > 0 and p.dead[d] == 0:
            m = heap_push(cand_scores, cand_ids, m, n_cand, acc[d], d)
        acc[d] = 0.0
    heap_sort(cand_scores, cand_ids, m)
    n = rescore(fw, q_dense, cand_ids, cand_scores, m, kn.k, kn.heap_factor, out_ids, out_scores)
    for j in range(q_dims.shape[0]):
        q_dense[q_dims[j]] = 0.0
    return n


@njit(cache=True, nogil=True)
def rescore(fw: Forward, q_dense: np.ndarray, cand_ids: np.ndarray, cand_scores: np.ndarray, m: int, k: int,
            heap_factor: float, out_ids: np.ndarray, out_scores: np.ndarray) -> int:
    """Exact scores of ``m`` candidates (best partial score first) through the forward index.

    Stops at the first candidate whose partial score is below ``heap_factor`` times the k-th
    exact score; returns the number of hits written (best first).
    """
    # The rows are scattered over the forward index: read every row's bounds first, then prefetch
    # every row's cache lines, so their misses overlap instead of stalling one row at a time.
    start, end = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
    for i in range(m):
        start[i], end[i] = fw.indptr[cand_ids[i]], fw.indptr[cand_ids[i] + 1]
    dims_line, vals_line = 64 // fw.dims.itemsize, 64 // fw.vals.itemsize
    for i in range(m):
        for j in range(start[i], end[i], dims_line):
            prefetch(fw.dims, j)
        for j in range(start[i], end[i], vals_line):
            prefetch(fw.vals, j)
    n = 0
    for i in range(m):
        if n == k and cand_scores[i] < heap_factor * out_scores[0]:
            break
        s = np.float32(0.0)
        dims, vals = fw.dims[start[i]:end[i]], fw.vals[start[i]:end[i]]
        for j in range(dims.shape[0]):
            s += q_dense[dims[j]] * np.float32(vals[j])
        if s > 0.0:
            n = heap_push(out_scores, out_ids, n, k, s, cand_ids[i])
    heap_sort(out_scores, out_ids, n)
    return n


@njit(cache=True, nogil=True)
def candidates_u16(p: Postings, q: Query, acc16: np.ndarray, m: int, cand_ids: np.ndarray,
                   cand_scores: np.ndarray) -> int:
    """The ``m`` best partial scores over ``q``'s dims of uint8-impact lists, in 16-bit integers.

    Positive weights are scaled by ``65535 / (255 * their sum)`` and floored, so no sum of
    products can overflow. Half the bytes of :func:`search_one`'s accumulator to scatter into, take
    group maxima of and zero (at 500k documents it fits a 1 MiB L2). The partial scores are only a
    candidate ranking (their rounding loses at most one unit per dim); the candidates are re-scored
    exactly. ``cand_scores`` come back in the query's units, best first; ``CORRUPT`` on bad postings.
    """
    if not _lists_ok(p, q):
        return CORRUPT
    total = 0.0  # float64: the sum of huge float32 weights must not overflow to inf
    for j in range(q.dims.shape[0]):
        total += max(np.float64(q.weights[j]), 0.0)
    if total <= 0.0:
        return 0
    scale = 65535.0 / (255.0 * total)
    n_docs = p.dead.shape[0]
    for j in range(q.dims.shape[0]):
        w = np.uint16(max(np.float64(q.weights[j]), 0.0) * scale)
        if w == 0:
            continue
        t = q.dims[j]
        docs, impacts = p.docs[p.offsets[t]:p.offsets[t + 1]], p.impacts[p.offsets[t]:p.offsets[t + 1]]
        for i in range(docs.shape[0]):  # in range: the list was checked above
            acc16[docs[i]] += w * np.uint16(impacts[i])
    n_groups = n_docs // GROUP
    gmax = np.empty(n_groups, dtype=np.float32)  # as float32, the bits _scan_chunk reads
    group_maxima(acc16, n_groups, GROUP, gmax)
    n = _scan_chunk(acc16, gmax.view(np.int32), n_docs, 0, 0, m, cand_ids, cand_scores, 0, p.dead)
    acc16[:n_docs] = 0
    heap_sort(cand_scores, cand_ids, n)
    for i in range(n):
        cand_scores[i] = np.float32(cand_scores[i] / scale)
    return n


@njit(cache=True, nogil=True)
def full_search_one(p: Postings, fw: Forward, q: Query, kn: Knobs, sc: Scratch, out_ids: np.ndarray,
                    out_scores: np.ndarray) -> int:
    """Approximate top-k from the lists ``p`` (the full ones, or the impact-pruned ones) of the
    ``query_cut`` heaviest query dims.

    Their partial scores (deleted documents skipped) give the ``candidates`` best documents, which
    are re-scored exactly with every query dim. The partial scores come from
    :func:`candidates_u16` when ``sc.acc16`` is there (uint8 impacts), else from the exact kernel
    on the cut dims (``sc.acc`` its scratch); ``q_dense`` as for :func:`approx_search_one`.
    Returns ``CORRUPT`` on postings outside the segment.
    """
    if kn.k < 1 or kn.candidates < 1:
        raise ValueError("k and candidates must be >= 1")
    if q.dims.shape[0] == 0:
        return 0
    keep = np.sort(_select_terms(q.dims, q.weights, kn.query_cut))  # ascending dims, as the exact kernel adds them
    cut = Query(q.dims[keep], q.weights[keep])
    cand_ids = np.empty(kn.candidates, dtype=np.int64)
    cand_scores = np.empty(kn.candidates, dtype=np.float32)
    if sc.acc16.shape[0]:
        m = candidates_u16(p, cut, sc.acc16, kn.candidates, cand_ids, cand_scores)
    else:
        m = search_one(p, cut, sc.acc, kn.candidates, cand_ids, cand_scores)
    if m == CORRUPT:
        return CORRUPT
    for j in range(q.dims.shape[0]):
        sc.q_dense[q.dims[j]] = np.float32(q.weights[j])
    n = rescore(fw, sc.q_dense, cand_ids, cand_scores, m, kn.k, kn.heap_factor, out_ids, out_scores)
    for j in range(q.dims.shape[0]):
        sc.q_dense[q.dims[j]] = 0.0
    return n


@njit(cache=True, nogil=True, parallel=True)
def approx_search_batch(p: Postings, pr: Pruned, fw: Forward, qs: Queries, kn: Knobs, full: bool, n_dims: int,
                        n_blocks: int, touched_size: int, acc16_len: int, out: TopK) -> None:
    """Approximate top-k for a CSR batch of queries, in parallel over blocks of queries.

    ``full`` selects :func:`full_search_one`, else :func:`approx_search_one`; ``acc16_len`` is
    the length of each thread's ``Scratch.acc16``.
    """
    if kn.k < 1 or kn.candidates < 1:
        raise ValueError("k and candidates must be >= 1")
    n_queries = qs.indptr.shape[0] - 1
    n_docs = fw.indptr.shape[0] - 1
    out_ids, out_scores, out_counts = out  # unpacked: Numba's parfors lose writes through tuple fields
    for blk in prange(n_blocks):
        sc = Scratch(np.zeros(0 if acc16_len else min(n_docs, CHUNK) if full else n_docs, dtype=np.float32),
                     np.empty(touched_size, dtype=np.int64), np.zeros(n_dims, dtype=np.float32),
                     np.zeros(acc16_len, dtype=np.uint16))
        for i in range(blk, n_queries, n_blocks):
            lo, hi = qs.indptr[i], qs.indptr[i + 1]
            q = Query(qs.dims[lo:hi], qs.weights[lo:hi])
            if full:
                out_counts[i] = full_search_one(p, fw, q, kn, sc, out_ids[i], out_scores[i])
            else:
                out_counts[i] = approx_search_one(p, pr, fw, q, kn, sc, out_ids[i], out_scores[i])
