"""Document reordering by recursive graph bisection (BP; Dhulipala et al., KDD 2016).

Documents that share terms get nearby ids, so a posting list's documents cluster into few blocks.
That tightens the per-block score bounds of :mod:`sparseir.search.blockmax` (the reason BMP and
PISA reorder) and makes postings compress better.

The algorithm, as in PISA's ``reorder-docids --recursive-graph-bisection``: split the documents in
two halves; for a few iterations, compute for every document the drop of the log-gap cost
``sum_t deg_t * log2(n / (deg_t + 1))`` if it moved to the other half, sort each half by that
gain and swap pairs while the two gains sum to a positive number; recurse on both halves until
they are ``leaf`` documents or fewer. Terms in a single document are ignored (moving them costs
nothing). Both halves of a level are independent, so each level runs in parallel over its parts.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

#: recursion stops at parts of this many documents
LEAF = 16
#: swap rounds per part (PISA's default)
ITERATIONS = 20


@njit(cache=True, nogil=True, inline="always")
def _cost(deg: int, log_n: float, log2: np.ndarray) -> float:
    return deg * (log_n - log2[deg + 1])


@njit(cache=True, nogil=True)
def _gains(perm: np.ndarray, lo: int, hi: int, indptr: np.ndarray, indices: np.ndarray, deg_from: np.ndarray,
           deg_to: np.ndarray, log_from: float, log_to: float, log2: np.ndarray, out: np.ndarray) -> None:
    """``out[i]``: the cost saved by moving document ``perm[lo + i]`` from its half to the other."""
    for i in range(hi - lo):
        d = perm[lo + i]
        g = 0.0
        for p in range(indptr[d], indptr[d + 1]):
            t = indices[p]
            a, b = deg_from[t], deg_to[t]
            g += (_cost(a, log_from, log2) + _cost(b, log_to, log2)
                  - _cost(a - 1, log_from, log2) - _cost(b + 1, log_to, log2))
        out[i] = g


@njit(cache=True, nogil=True)
def _add_degrees(perm: np.ndarray, lo: int, hi: int, indptr: np.ndarray, indices: np.ndarray,
                 deg: np.ndarray, delta: int) -> None:
    for i in range(lo, hi):
        d = perm[i]
        for p in range(indptr[d], indptr[d + 1]):
            deg[indices[p]] += delta


@njit(cache=True, nogil=True)
def _bisect(perm: np.ndarray, lo: int, hi: int, indptr: np.ndarray, indices: np.ndarray, iterations: int,
            log2: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
    """Improve the split of ``perm[lo:hi]`` at its middle (``left``/``right``: zeroed degree scratch,
    zero again on return)."""
    mid = lo + (hi - lo) // 2
    _add_degrees(perm, lo, mid, indptr, indices, left, 1)
    _add_degrees(perm, mid, hi, indptr, indices, right, 1)
    log_l, log_r = np.log2(mid - lo), np.log2(hi - mid)
    gain_l = np.empty(mid - lo)
    gain_r = np.empty(hi - mid)
    for _ in range(iterations):
        _gains(perm, lo, mid, indptr, indices, left, right, log_l, log_r, log2, gain_l)
        _gains(perm, mid, hi, indptr, indices, right, left, log_r, log_l, log2, gain_r)
        order_l = np.argsort(-gain_l, kind="mergesort")  # stable: the result does not depend on the sort
        order_r = np.argsort(-gain_r, kind="mergesort")
        new_l = perm[lo:mid][order_l]
        new_r = perm[mid:hi][order_r]
        swaps = 0
        while swaps < min(len(order_l), len(order_r)) and gain_l[order_l[swaps]] + gain_r[order_r[swaps]] > 0:
            swaps += 1
        if swaps == 0:
            break
        moved_l, moved_r = new_l[:swaps].copy(), new_r[:swaps].copy()
        new_l[:swaps], new_r[:swaps] = moved_r, moved_l
        perm[lo:mid] = new_l
        perm[mid:hi] = new_r
        _add_degrees(moved_l, 0, swaps, indptr, indices, left, -1)
        _add_degrees(moved_l, 0, swaps, indptr, indices, right, 1)
        _add_degrees(moved_r, 0, swaps, indptr, indices, right, -1)
        _add_degrees(moved_r, 0, swaps, indptr, indices, left, 1)
    _add_degrees(perm, lo, mid, indptr, indices, left, -1)
    _add_degrees(perm, mid, hi, indptr, indices, right, -1)


@njit(cache=True, nogil=True, parallel=True)
def _level(perm: np.ndarray, parts: np.ndarray, indptr: np.ndarray, indices: np.ndarray, n_terms: int,
           iterations: int, log2: np.ndarray, n_workers: int) -> None:
    """Bisect every part ``[parts[i, 0], parts[i, 1])`` of one recursion level, in parallel."""
    for w in prange(n_workers):
        left = np.zeros(n_terms, np.int32)
        right = np.zeros(n_terms, np.int32)
        for i in range(w, parts.shape[0], n_workers):
            _bisect(perm, parts[i, 0], parts[i, 1], indptr, indices, iterations, log2, left, right)


def bp_order(docs: sp.csr_matrix, *, leaf: int = LEAF, iterations: int = ITERATIONS, seed: int = 0,
             progress: bool = False) -> np.ndarray:
    """A document order for ``docs`` (CSR ``[n_docs, n_dims]``): ``order[new_id] = old row``.

    Deterministic for a given ``seed`` (the initial order is a seeded shuffle, as the method
    prescribes, so an already sorted input is not a bias) and thread count independent.
    """
    from numba import get_num_threads
    from tqdm.auto import tqdm

    if leaf < 2:
        raise ValueError(f"leaf must be >= 2, got {leaf}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    x = sp.csr_matrix(docs)
    n = x.shape[0]
    df = np.bincount(x.indices, minlength=x.shape[1])
    keep = df >= 2
    x = x[:, keep] if not keep.all() else x
    x = sp.csr_matrix((np.ones(x.nnz, np.int8), x.indices, x.indptr), shape=x.shape)
    indptr, indices = x.indptr.astype(np.int64), x.indices.astype(np.int32)
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    log2 = np.log2(np.maximum(np.arange(n + 2, dtype=np.float64), 1.0))
    parts = np.array([[0, n]], dtype=np.int64) if n > leaf else np.zeros((0, 2), np.int64)
    depth = max(0, int(np.ceil(np.log2(max(n, 1) / leaf))))
    with tqdm(total=depth, desc="BP reordering", unit="level", disable=not progress) as bar:
        while len(parts):
            _level(perm, parts, indptr, indices, x.shape[1], iterations, log2, min(get_num_threads(), len(parts)))
            mids = parts[:, 0] + (parts[:, 1] - parts[:, 0]) // 2
            halves = np.concatenate([np.stack([parts[:, 0], mids], 1), np.stack([mids, parts[:, 1]], 1)])
            parts = halves[halves[:, 1] - halves[:, 0] > leaf]
            parts = parts[np.argsort(parts[:, 0], kind="stable")]
            bar.update()
    return perm


def log_gap_cost(docs: sp.csr_matrix, order: np.ndarray | None = None) -> float:
    """Mean log2 of the d-gaps over all posting lists of ``docs`` in ``order``: the bits per posting
    an ideal gap coder would need, the figure BP minimises (lower is better)."""
    x = sp.csr_matrix(docs)
    postings = (x[order] if order is not None else x).tocsc()
    postings.sort_indices()
    idx = postings.indices.astype(np.int64)
    if not len(idx):
        return 0.0
    gaps = np.empty_like(idx)
    gaps[1:] = idx[1:] - idx[:-1]
    starts = postings.indptr[:-1][np.diff(postings.indptr) > 0]
    gaps[starts] = idx[starts] + 1
    return float(np.log2(gaps).mean())
