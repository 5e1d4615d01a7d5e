"""Numba kernels for exact top-k dot-product search over flat postings arrays.

Term-at-a-time (TAAT) into a dense float32 accumulator, blocked over the documents: the document
range is cut into chunks of ``CHUNK`` ids, and for each chunk every query term scatters its
postings of that chunk (found by binary search in the doc-sorted list) into an accumulator of
``CHUNK`` floats that stays in cache. The chunk is then scanned once, feeding a bounded
heap, and zeroed while it is still hot. Per document the terms are added in query order, so the
scores are bit-identical to an unblocked TAAT pass. Ties are broken by the smaller document id
(documents reach the heap in id order and a later one needs a strictly higher score). Only
documents with a positive score are returned. See ``bench/README.md`` ("Query speed") for the
measurements behind the choice.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: documents per accumulator chunk: 1 Mi float32 = 4 MiB, inside the L3. Measured on the
#: 2-core EPYC (32 MiB L3, 1 MiB L2) at 1M documents, 64 Ki-doc (L2-sized) chunks were ~15%
#: slower than one 4 MiB chunk (bench/README.md, "Query speed").
CHUNK = 1 << 20
#: scores reduced to one maximum before the heap looks at them one by one.
GROUP = 32


@njit(cache=True, inline="always")
def _worse(s1: float, d1: int, s2: float, d2: int) -> bool:
    """Ranks (s1, d1) below (s2, d2): lower score, or equal score and larger id."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@njit(cache=True)
def sift_down(scores: np.ndarray, ids: np.ndarray, i: int, n: int) -> None:
    """Restore the min-heap (worst at the root) below position ``i`` of a heap of ``n``."""
    while True:
        worst, left, right = i, 2 * i + 1, 2 * i + 2
        if left < n and _worse(scores[left], ids[left], scores[worst], ids[worst]):
            worst = left
        if right < n and _worse(scores[right], ids[right], scores[worst], ids[worst]):
            worst = right
        if worst == i:
            return
        scores[i], scores[worst] = scores[worst], scores[i]
        ids[i], ids[worst] = ids[worst], ids[i]
        i = worst


@njit(cache=True)
def sift_up(scores: np.ndarray, ids: np.ndarray, i: int) -> None:
    """Move entry ``i`` up the min-heap."""
    while i > 0:
        parent = (i - 1) // 2
        if not _worse(scores[i], ids[i], scores[parent], ids[parent]):
            return
        scores[i], scores[parent] = scores[parent], scores[i]
        ids[i], ids[parent] = ids[parent], ids[i]
        i = parent


@njit(cache=True, inline="always")
def heap_push(scores: np.ndarray, ids: np.ndarray, n: int, k: int, s: float, d: int) -> int:
    """Offer (s, d) to a min-heap of ``n`` <= ``k`` entries; returns the new size."""
    if n < k:
        scores[n] = s
        ids[n] = d
        sift_up(scores, ids, n)
        return n + 1
    if _worse(scores[0], ids[0], s, d):
        scores[0] = s
        ids[0] = d
        sift_down(scores, ids, 0, k)
    return n


@njit(cache=True)
def heap_sort(scores: np.ndarray, ids: np.ndarray, n: int) -> None:
    """Sort a min-heap of ``n`` entries in place, best first."""
    for end in range(n - 1, 0, -1):
        scores[0], scores[end] = scores[end], scores[0]
        ids[0], ids[end] = ids[end], ids[0]
        sift_down(scores, ids, 0, end)


@njit(cache=True)
def topk_dense(acc: np.ndarray, k: int, out_ids: np.ndarray, out_scores: np.ndarray) -> int:
    """Best ``k`` positive entries of ``acc``, sorted; returns how many were found."""
    n = _scan_chunk(acc, acc.shape[0], 0, k, out_ids, out_scores, 0, False)
    heap_sort(out_scores, out_ids, n)
    return n


@njit(cache=True, fastmath=True, inline="always")
def _group_max(acc: np.ndarray, start: int) -> float:
    """Largest of ``acc[start:start + GROUP]`` (a vectorised reduction)."""
    m = np.float32(0.0)
    for i in range(start, start + GROUP):
        m = max(m, acc[i])
    return m


@njit(cache=True)
def _scan_chunk(acc: np.ndarray, length: int, first: int, k: int, heap_ids: np.ndarray,
                heap_scores: np.ndarray, n: int, zero: bool) -> int:
    """Offer ``acc[:length]`` (documents ``first + i``) to the heap; optionally zero it.

    Groups of ``GROUP`` scores are first reduced to their maximum; only a group that beats the
    heap's threshold is scanned entry by entry.
    """
    threshold = heap_scores[0] if n == k else np.float32(0.0)
    full = length - length % GROUP
    for g in range(0, length, GROUP):
        if g < full and _group_max(acc, g) <= threshold:
            continue
        for i in range(g, min(g + GROUP, length)):
            s = acc[i]
            if s > threshold:  # strictly: a later equal score loses the tie
                n = heap_push(heap_scores, heap_ids, n, k, s, first + i)
                if n == k:
                    threshold = heap_scores[0]
    if zero:
        acc[:length] = 0.0
    return n


@njit(cache=True)
def accumulate(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, q_dims: np.ndarray,
               q_weights: np.ndarray, acc: np.ndarray) -> None:
    """``acc[d] += w_t * impact`` over the postings of every query dimension ``t`` (unblocked)."""
    for j in range(q_dims.shape[0]):
        t = q_dims[j]
        w = np.float32(q_weights[j])
        for p in range(offsets[t], offsets[t + 1]):
            acc[docs[p]] += w * np.float32(impacts[p])


@njit(cache=True)
def search_one(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, q_dims: np.ndarray,
               q_weights: np.ndarray, acc: np.ndarray, k: int, out_ids: np.ndarray,
               out_scores: np.ndarray) -> int:
    """Exact top-k for one query; returns the number of hits written (best first).

    ``acc`` is scratch of at least ``min(n_docs, CHUNK)`` zeros and is zero again on return.
    """
    nq = q_dims.shape[0]
    cursor = np.empty(nq, dtype=np.int64)
    end = np.empty(nq, dtype=np.int64)
    weight = np.empty(nq, dtype=np.float32)
    n_scored = 0  # documents past the last posting of every query term score zero
    for j in range(nq):
        cursor[j] = offsets[q_dims[j]]
        end[j] = offsets[q_dims[j] + 1]
        weight[j] = np.float32(q_weights[j])
        if end[j] > cursor[j]:
            n_scored = max(n_scored, np.int64(docs[end[j] - 1]) + 1)
    n = 0
    for lo in range(0, n_scored, CHUNK):
        hi = min(lo + CHUNK, n_scored)
        for j in range(nq):
            p, e = cursor[j], end[j]
            if p == e:
                continue
            stop = e if docs[e - 1] < hi else p + np.searchsorted(docs[p:e], np.uint32(hi))
            w = weight[j]
            for i in range(p, stop):
                acc[docs[i] - lo] += w * np.float32(impacts[i])
            cursor[j] = stop
        n = _scan_chunk(acc, hi - lo, lo, k, out_ids, out_scores, n, True)
    heap_sort(out_scores, out_ids, n)
    return n


@njit(cache=True, parallel=True)
def search_batch(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, q_indptr: np.ndarray,
                 q_dims: np.ndarray, q_weights: np.ndarray, n_docs: int, k: int, n_blocks: int,
                 out_ids: np.ndarray, out_scores: np.ndarray, out_counts: np.ndarray) -> None:
    """Exact top-k for a CSR batch of queries, in parallel over blocks of queries.

    Each block owns one chunk-sized accumulator, reused across its queries.
    """
    n_queries = q_indptr.shape[0] - 1
    for b in prange(n_blocks):
        acc = np.zeros(min(n_docs, CHUNK), dtype=np.float32)
        for q in range(b, n_queries, n_blocks):
            lo, hi = q_indptr[q], q_indptr[q + 1]
            out_counts[q] = search_one(offsets, docs, impacts, q_dims[lo:hi], q_weights[lo:hi], acc, k,
                                       out_ids[q], out_scores[q])


@njit(cache=True, parallel=True)
def search_one_split(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, q_dims: np.ndarray,
                     q_weights: np.ndarray, acc: np.ndarray, k: int, out_ids: np.ndarray,
                     out_scores: np.ndarray) -> int:
    """Exact top-k for one query, parallel within the query over ``acc.shape[0]`` document ranges.

    ``acc`` is ``[n_parts, part_len]`` scratch of zeros (``n_parts * part_len >= n_docs``), zero
    again on return. Each part scores its range into its own heap; the heaps are merged by
    (score desc, doc id asc), so results equal :func:`search_one`'s.
    """
    n_parts, part_len = acc.shape
    nq = q_dims.shape[0]
    part_ids = np.zeros((n_parts, k), dtype=out_ids.dtype)
    part_scores = np.zeros((n_parts, k), dtype=np.float32)
    counts = np.zeros(n_parts, dtype=np.int64)
    for part in prange(n_parts):
        lo = part * part_len
        hi = lo + part_len
        row = acc[part]
        for j in range(nq):
            t = q_dims[j]
            p, e = offsets[t], offsets[t + 1]
            if p == e:
                continue
            start = p + np.searchsorted(docs[p:e], np.uint32(lo)) if lo > 0 else p
            stop = p + np.searchsorted(docs[p:e], np.uint32(hi)) if hi <= docs[e - 1] else e
            w = np.float32(q_weights[j])
            for i in range(start, stop):
                row[docs[i] - lo] += w * np.float32(impacts[i])
        counts[part] = _scan_chunk(row, part_len, lo, k, part_ids[part], part_scores[part], 0, True)
    n = 0
    for part in range(n_parts):  # merge: offer every part's survivors to one heap, in id order
        for i in range(counts[part]):
            n = heap_push(out_scores, out_ids, n, k, part_scores[part, i], part_ids[part, i])
    heap_sort(out_scores, out_ids, n)
    return n
