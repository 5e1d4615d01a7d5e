"""Numba kernels for exact top-k dot-product search over flat postings arrays.

Term-at-a-time (TAAT) into a dense float32 accumulator, blocked over the documents: the document
range is cut into chunks of ``CHUNK`` ids, and for each chunk every query term scatters its postings
of that chunk (found by binary search in the doc-sorted list) into an accumulator of ``CHUNK``
floats that stays in cache. The chunk is then scanned once (group maxima first:
:func:`float_maxima`), feeding a bounded heap, and zeroed while it is still hot. Per document the
terms are added in query order, so the scores are bit-identical to an unblocked TAAT pass. Ties are
broken by the smaller document id (documents reach the heap in id order and a later one needs a
strictly higher score). Only documents with a positive score are returned. See ``bench/README.md``
("Query speed") for the measurements behind the choice.

Kernels take a few NamedTuples of arrays: :class:`Postings` (one segment, with its deletion
mask: deleted documents are never offered to the heap), :class:`Query` / :class:`Queries` and
:class:`TopK` (the output). A corrupt or hostile index must not make a kernel write out of bounds:
the first time a kernel reads a dim's posting list it checks that the list is strictly ascending
and inside the segment (and records that in ``Postings.checked``), so the scatter loops need no
per-posting check; a bad list makes the kernel return ``CORRUPT`` (cost: ``bench/results/live.md``).

Hot loops run over 0-based slices (``d = docs[lo:hi]; for i in range(d.shape[0])``) rather than
``for i in range(lo, hi)`` over the whole array: Numba cannot prove ``lo >= 0`` and tests every
index for negative wraparound, which kept the scatter from pipelining. For the same reason the
accumulator is indexed by an unsigned ``docs[i] - lo`` (``docs`` is uint32 and ``lo`` <= every
doc of the range). Together they made exact search on realtext 37% faster.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange


class Postings(NamedTuple):
    """One segment's postings: dim ``t`` owns ``[offsets[t], offsets[t+1])`` of ``docs``/``impacts``."""

    offsets: np.ndarray  #: int64 [n_dims + 1]
    docs: np.ndarray     #: uint32 [n_postings], ascending within a dim
    impacts: np.ndarray  #: uint8 or float32 [n_postings]
    dead: np.ndarray     #: uint8 [n_docs]: 1 = deleted; its length is the segment's n_docs
    checked: np.ndarray  #: uint8 [n_dims]: 1 = the dim's list was found ascending and < n_docs


class Query(NamedTuple):
    """One sparse query: dims and weights (scale already folded in)."""

    dims: np.ndarray
    weights: np.ndarray


class Queries(NamedTuple):
    """A CSR batch of queries."""

    indptr: np.ndarray
    dims: np.ndarray
    weights: np.ndarray


class TopK(NamedTuple):
    """Results of a batch: ids and scores ``[n, k]``, hit counts ``[n]`` (``CORRUPT`` on bad postings)."""

    ids: np.ndarray
    scores: np.ndarray
    counts: np.ndarray


#: a kernel's hit count when a posting names a document outside the segment
CORRUPT = -1

#: documents per accumulator chunk: 1 Mi float32 = 4 MiB, inside the L3. Measured on the
#: 2-core EPYC (32 MiB L3, 1 MiB L2) at 1M documents, 64 Ki-doc (L2-sized) chunks were ~15%
#: slower than one 4 MiB chunk (bench/README.md, "Query speed").
CHUNK = 1 << 20
#: scores reduced to one maximum before the heap looks at them one by one.
GROUP = 64
#: from this ``k`` on (e.g. the approximate mode's candidates, or 1,000 hits for a run file), and on
#: chunks of at least ``WIDE_MIN_GROUPS`` groups, the scan bounds the k-th score before it scans.
WIDE = 32
WIDE_MIN_GROUPS = 64


@njit(cache=True, nogil=True, inline="always")
def _worse(s1: float, d1: int, s2: float, d2: int) -> bool:
    """Ranks (s1, d1) below (s2, d2): lower score, or equal score and larger id."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def sift_up(scores: np.ndarray, ids: np.ndarray, i: int) -> None:
    """Move entry ``i`` up the min-heap."""
    while i > 0:
        parent = (i - 1) // 2
        if not _worse(scores[i], ids[i], scores[parent], ids[parent]):
            return
        scores[i], scores[parent] = scores[parent], scores[i]
        ids[i], ids[parent] = ids[parent], ids[i]
        i = parent


@njit(cache=True, nogil=True, inline="always")
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


@njit(cache=True, nogil=True)
def heap_sort(scores: np.ndarray, ids: np.ndarray, n: int) -> None:
    """Sort a min-heap of ``n`` entries in place, best first."""
    for end in range(n - 1, 0, -1):
        scores[0], scores[end] = scores[end], scores[0]
        ids[0], ids[end] = ids[end], ids[0]
        sift_down(scores, ids, 0, end)


@njit(cache=True, nogil=True)
def group_maxima(bits: np.ndarray, n_groups: int, group: int, out: np.ndarray) -> None:
    """``out[g]`` = the largest of ``bits[g * group:(g + 1) * group]``, or 0 when none is positive.

    ``bits`` is an integer accumulator (uint16 in the approximate mode's candidates) or a float32
    one viewed as int32: positive floats order as their bit patterns, and an integer maximum
    vectorises where a float one (NaN rules) does not. Negative scores and NaNs never lower a
    maximum below what the float comparison gives, so a group skipped on this bound holds nothing
    above it. ``group`` is a run-time argument on purpose: a compile-time length is unrolled into
    scalar code (2.5x slower, ``bench/README.md``).
    """
    for g in range(n_groups):
        s = bits[g * group:(g + 1) * group]
        m = np.int32(0)
        for i in range(s.shape[0]):
            m = max(m, s[i])
        out[g] = m


@njit(cache=True, nogil=True)
def float_maxima(acc: np.ndarray, length: int) -> np.ndarray:
    """The maxima of ``acc[:length]``'s whole groups (float32 accumulator), as float32 bits."""
    gmax = np.empty(length // GROUP, dtype=np.int32)
    group_maxima(acc.view(np.int32), gmax.shape[0], GROUP, gmax)
    return gmax


@njit(cache=True, nogil=True, inline="always")
def _scan_group(acc: np.ndarray, g: int, stop: int, first: int, base: int, k: int, heap_ids: np.ndarray,
                heap_scores: np.ndarray, n: int, dead: np.ndarray) -> int:
    """Offer ``acc[g:stop]`` that beats the heap's threshold to the heap, in id order."""
    threshold = heap_scores[0] if n == k else np.float32(0.0)
    scores, gone = acc[g:stop], dead[first + g:first + stop]
    for i in range(scores.shape[0]):
        s = scores[i]
        if s > threshold and gone[i] == 0:  # strictly: a later equal score loses the tie
            n = heap_push(heap_scores, heap_ids, n, k, s, base + first + g + i)
            if n == k:
                threshold = heap_scores[0]
    return n


@njit(cache=True, nogil=True)
def _scan_wide(acc: np.ndarray, gmax: np.ndarray, length: int, first: int, base: int, k: int,
               heap_ids: np.ndarray, heap_scores: np.ndarray, n: int, dead: np.ndarray) -> int:
    """:func:`_scan_chunk` for a large ``k``: bound the k-th score first, then scan only the groups above it.

    Pass 1 histograms the positive group maxima (``gmax``, float32 bits) by their bits
    (exponent and three mantissa bits: bins 1/8 octave wide, ordered as the values). The lowest bin
    ``b`` whose groups and those above number ``k`` or more bounds the k-th score from below: those
    groups hold ``k`` distinct scores at least ``tau``, their smallest maximum. Pass 2 scans only
    them, in id order, so ties break as in the one-pass scan. A skipped group's scores are all below
    ``tau``, so unless the heap ends below ``tau`` (possible only when some of those maxima were
    deleted documents) they cannot be in the top-k; in that case the skipped groups are offered too.
    """
    n_groups = gmax.shape[0]
    bins = gmax >> 20  # positive floats: monotone in the value; 0.0 -> bin 0
    gmaxf = gmax.view(np.float32)
    hist = np.zeros(1 << 11, dtype=np.int64)
    for g in range(n_groups):
        if gmax[g] > 0:
            hist[bins[g]] += 1
    low, count = 1, 0
    for b in range(hist.shape[0] - 1, 0, -1):
        count += hist[b]
        if count >= k:
            low = b
            break
    tau = np.float32(np.inf)
    for g in range(n_groups):
        if bins[g] >= low:
            tau = min(tau, gmaxf[g])
            if n < k or gmaxf[g] > heap_scores[0]:
                n = _scan_group(acc, g * GROUP, g * GROUP + GROUP, first, base, k, heap_ids, heap_scores, n, dead)
    n = _scan_group(acc, n_groups * GROUP, length, first, base, k, heap_ids, heap_scores, n, dead)
    if n < k or heap_scores[0] < tau:  # offered out of id order: heap_push breaks the ties
        for g in range(n_groups):
            if bins[g] < low and gmax[g] > 0:
                for i in range(g * GROUP, g * GROUP + GROUP):
                    s = acc[i]
                    if s > 0.0 and dead[first + i] == 0 and (n < k or s >= heap_scores[0]):
                        n = heap_push(heap_scores, heap_ids, n, k, s, base + first + i)
    return n


@njit(cache=True, nogil=True)
def _scan_chunk(acc: np.ndarray, gmax: np.ndarray, length: int, first: int, base: int, k: int,
                heap_ids: np.ndarray, heap_scores: np.ndarray, n: int, dead: np.ndarray) -> int:
    """Offer ``acc[:length]`` (segment documents ``first + i``, unless ``dead``, as positions
    ``base + first + i``) to the heap.

    ``gmax`` holds the maxima of its groups of ``GROUP`` scores as float32 bits (one vectorised
    pass: :func:`float_maxima`); only a group that beats the heap's threshold is scanned entry by
    entry. From ``k >= WIDE`` on, :func:`_scan_wide` first bounds the k-th score, so fewer groups
    reach the heap while its threshold is still low.
    """
    n_groups = gmax.shape[0]
    if k >= WIDE and n_groups >= WIDE_MIN_GROUPS:
        n = _scan_wide(acc, gmax, length, first, base, k, heap_ids, heap_scores, n, dead)
    else:
        gmaxf = gmax.view(np.float32)  # the float maxima (a NaN bound never skips its group)
        for g in range(n_groups):
            if gmaxf[g] <= (heap_scores[0] if n == k else np.float32(0.0)):
                continue
            n = _scan_group(acc, g * GROUP, g * GROUP + GROUP, first, base, k, heap_ids, heap_scores, n, dead)
        n = _scan_group(acc, n_groups * GROUP, length, first, base, k, heap_ids, heap_scores, n, dead)
    return n


@njit(cache=True, nogil=True)
def _scan_and_zero(acc: np.ndarray, length: int, first: int, base: int, k: int, heap_ids: np.ndarray,
                   heap_scores: np.ndarray, n: int, dead: np.ndarray) -> int:
    """:func:`_scan_chunk` of a float32 chunk, which is then zeroed while it is hot."""
    n = _scan_chunk(acc, float_maxima(acc, length), length, first, base, k, heap_ids, heap_scores, n, dead)
    acc[:length] = 0.0
    return n


@njit(cache=True, nogil=True)
def search_one(p: Postings, q: Query, acc: np.ndarray, k: int, out_ids: np.ndarray, out_scores: np.ndarray) -> int:
    """Exact top-k for one query; returns the number of hits written (best first), or ``CORRUPT``.

    ``acc`` is scratch of at least ``min(n_docs, CHUNK)`` zeros and is zero again on return.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    n = _search_into(p, q, acc, k, 0, out_ids, out_scores, 0)
    if n != CORRUPT:
        heap_sort(out_scores, out_ids, n)
    return n


@njit(cache=True, nogil=True)
def search_segments(segs, bases: np.ndarray, q: Query, acc: np.ndarray, k: int, out_ids: np.ndarray,
                    out_scores: np.ndarray) -> int:
    """Exact top-k over several segments (a typed list of :class:`Postings`) into one heap.

    Segment ``s``'s document ``d`` is position ``bases[s] + d``. Segments are scanned in order and
    a later equal score loses, so ties go to the smaller position, as in one segment.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    n = 0
    for s in range(len(segs)):
        n = _search_into(segs[s], q, acc, k, bases[s], out_ids, out_scores, n)
        if n == CORRUPT:
            return CORRUPT
    heap_sort(out_scores, out_ids, n)
    return n


@njit(cache=True, nogil=True, parallel=True)
def search_segments_batch(segs, bases: np.ndarray, qs: Queries, k: int, n_blocks: int, acc_len: int,
                          out: TopK) -> None:
    """:func:`search_segments` for a CSR batch of queries, in parallel over blocks of queries."""
    if k < 1:
        raise ValueError("k must be >= 1")
    n_queries = qs.indptr.shape[0] - 1
    out_ids, out_scores, out_counts = out  # unpacked: Numba's parfors lose writes through tuple fields
    for b in prange(n_blocks):
        acc = np.zeros(acc_len, dtype=np.float32)
        for i in range(b, n_queries, n_blocks):
            lo, hi = qs.indptr[i], qs.indptr[i + 1]
            out_counts[i] = search_segments(segs, bases, Query(qs.dims[lo:hi], qs.weights[lo:hi]), acc, k,
                                            out_ids[i], out_scores[i])


@njit(cache=True, nogil=True)
def _list_ok(p: Postings, t: int) -> bool:
    """Whether dim ``t``'s posting list is strictly ascending and inside the segment (checked once)."""
    if p.checked[t]:
        return True
    n_docs = p.dead.shape[0]
    prev = np.int64(-1)
    for i in range(p.offsets[t], p.offsets[t + 1]):
        d = np.int64(p.docs[i])
        if d <= prev or d >= n_docs:
            return False
        prev = d
    p.checked[t] = 1  # a race with another thread writes the same 1
    return True


@njit(cache=True, nogil=True)
def _lists_ok(p: Postings, q: Query) -> bool:
    for j in range(q.dims.shape[0]):
        if not _list_ok(p, q.dims[j]):
            return False
    return True


@njit(cache=True, nogil=True)
def _search_into(p: Postings, q: Query, acc: np.ndarray, k: int, base: int, heap_ids: np.ndarray,
                 heap_scores: np.ndarray, n: int) -> int:
    """Offer one segment's scores (positions ``base + d``) to a heap of ``n`` entries; returns its
    new size, or ``CORRUPT`` on a bad posting list."""
    if not _lists_ok(p, q):
        return CORRUPT
    offsets, docs, impacts = p.offsets, p.docs, p.impacts
    nq = q.dims.shape[0]
    cursor = np.empty(nq, dtype=np.int64)
    end = np.empty(nq, dtype=np.int64)
    weight = np.empty(nq, dtype=np.float32)
    n_scored = 0  # documents past the last posting of every query term score zero
    for j in range(nq):
        cursor[j] = offsets[q.dims[j]]
        end[j] = offsets[q.dims[j] + 1]
        weight[j] = np.float32(q.weights[j])
        if end[j] > cursor[j]:
            n_scored = max(n_scored, np.int64(docs[end[j] - 1]) + 1)
    for lo in range(0, n_scored, CHUNK):
        hi = min(lo + CHUNK, n_scored)
        for j in range(nq):
            p0, e = cursor[j], end[j]
            if p0 == e:
                continue
            stop = e if docs[e - 1] < hi else p0 + np.searchsorted(docs[p0:e], np.uint32(hi))
            w = weight[j]
            d, v = docs[p0:stop], impacts[p0:stop]  # lo <= d < hi: the list is ascending (checked above)
            lo32 = np.uint32(lo)
            for i in range(d.shape[0]):
                acc[d[i] - lo32] += w * np.float32(v[i])
            cursor[j] = stop
        n = _scan_and_zero(acc, hi - lo, lo, base, k, heap_ids, heap_scores, n, p.dead)
    return n


@njit(cache=True, nogil=True, parallel=True)
def search_one_split(p: Postings, q: Query, acc: np.ndarray, k: int, out_ids: np.ndarray,
                     out_scores: np.ndarray) -> int:
    """Exact top-k for one query, parallel within the query over ``acc.shape[0]`` document ranges.

    ``acc`` is ``[n_parts, part_len]`` scratch of zeros (``n_parts * part_len >= n_docs``), zero
    again on return. Each part scores its range into its own heap; the heaps are merged by
    (score desc, doc id asc), so results equal :func:`search_one`'s.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if not _lists_ok(p, q):
        return CORRUPT
    offsets, docs, impacts = p.offsets, p.docs, p.impacts
    n_docs = p.dead.shape[0]
    n_parts, part_len = acc.shape
    nq = q.dims.shape[0]
    part_ids = np.zeros((n_parts, k), dtype=out_ids.dtype)
    part_scores = np.zeros((n_parts, k), dtype=np.float32)
    counts = np.zeros(n_parts, dtype=np.int64)
    for part in prange(n_parts):
        lo = part * part_len
        hi = min(lo + part_len, n_docs)
        row = acc[part]
        for j in range(nq):
            t = q.dims[j]
            p0, e = offsets[t], offsets[t + 1]
            if p0 == e:
                continue
            start = p0 + np.searchsorted(docs[p0:e], np.uint32(lo)) if lo > 0 else p0
            stop = p0 + np.searchsorted(docs[p0:e], np.uint32(hi)) if hi <= docs[e - 1] else e
            w = np.float32(q.weights[j])
            d, v = docs[start:stop], impacts[start:stop]
            lo32 = np.uint32(lo)
            for i in range(d.shape[0]):
                row[d[i] - lo32] += w * np.float32(v[i])
        counts[part] = _scan_and_zero(row, max(hi - lo, 0), lo, 0, k, part_ids[part], part_scores[part], 0, p.dead)
    n = 0
    for part in range(n_parts):  # merge: offer every part's survivors to one heap, in id order
        for i in range(counts[part]):
            n = heap_push(out_scores, out_ids, n, k, part_scores[part, i], part_ids[part, i])
    heap_sort(out_scores, out_ids, n)
    return n
