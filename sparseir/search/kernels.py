"""Numba kernels for exact top-k dot-product search over flat postings arrays.

Term-at-a-time into a dense float32 accumulator, then one pass that keeps the ``k`` best
documents in a bounded heap. Ties are broken by the smaller document id. Only documents with
a positive score are returned.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _worse(s1: float, d1: int, s2: float, d2: int) -> bool:
    """Ranks (s1, d1) below (s2, d2): lower score, or equal score and larger id."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@njit(cache=True)
def _sift_down(scores: np.ndarray, ids: np.ndarray, i: int, n: int) -> None:
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
def _sift_up(scores: np.ndarray, ids: np.ndarray, i: int) -> None:
    while i > 0:
        parent = (i - 1) // 2
        if not _worse(scores[i], ids[i], scores[parent], ids[parent]):
            return
        scores[i], scores[parent] = scores[parent], scores[i]
        ids[i], ids[parent] = ids[parent], ids[i]
        i = parent


@njit(cache=True)
def topk_dense(acc: np.ndarray, k: int, out_ids: np.ndarray, out_scores: np.ndarray) -> int:
    """Best ``k`` positive entries of ``acc``, sorted; returns how many were found.

    Documents are visited in id order, so a later document enters only with a strictly
    higher score than the heap's worst: ties keep the smaller id.
    """
    n = 0
    for d in range(acc.shape[0]):
        s = acc[d]
        if s <= 0.0:
            continue
        if n < k:
            out_scores[n] = s
            out_ids[n] = d
            _sift_up(out_scores, out_ids, n)
            n += 1
        elif s > out_scores[0]:
            out_scores[0] = s
            out_ids[0] = d
            _sift_down(out_scores, out_ids, 0, k)
    # Heap sort: pop the worst to the back.
    for end in range(n - 1, 0, -1):
        out_scores[0], out_scores[end] = out_scores[end], out_scores[0]
        out_ids[0], out_ids[end] = out_ids[end], out_ids[0]
        _sift_down(out_scores, out_ids, 0, end)
    return n


@njit(cache=True)
def accumulate(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, q_dims: np.ndarray,
               q_weights: np.ndarray, acc: np.ndarray) -> None:
    """``acc[d] += w_t * impact`` over the postings of every query dimension ``t``."""
    for j in range(q_dims.shape[0]):
        t = q_dims[j]
        w = np.float32(q_weights[j])
        for p in range(offsets[t], offsets[t + 1]):
            acc[docs[p]] += w * np.float32(impacts[p])


@njit(cache=True)
def search_one(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, q_dims: np.ndarray,
               q_weights: np.ndarray, acc: np.ndarray, k: int, out_ids: np.ndarray,
               out_scores: np.ndarray) -> int:
    """Exact top-k for one query. ``acc`` must be zero and is zero again on return."""
    accumulate(offsets, docs, impacts, q_dims, q_weights, acc)
    n = topk_dense(acc, k, out_ids, out_scores)
    acc[:] = 0.0
    return n


@njit(cache=True, parallel=True)
def search_batch(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray, q_indptr: np.ndarray,
                 q_dims: np.ndarray, q_weights: np.ndarray, n_docs: int, k: int, n_blocks: int,
                 out_ids: np.ndarray, out_scores: np.ndarray, out_counts: np.ndarray) -> None:
    """Exact top-k for a CSR batch of queries, in parallel over blocks of queries.

    Each block owns one accumulator, reused across its queries.
    """
    n_queries = q_indptr.shape[0] - 1
    for b in prange(n_blocks):
        acc = np.zeros(n_docs, dtype=np.float32)
        for q in range(b, n_queries, n_blocks):
            lo, hi = q_indptr[q], q_indptr[q + 1]
            out_counts[q] = search_one(offsets, docs, impacts, q_dims[lo:hi], q_weights[lo:hi], acc, k,
                                       out_ids[q], out_scores[q])
