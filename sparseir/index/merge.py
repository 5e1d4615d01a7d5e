"""Merge policy and segment merging.

Segments keep their commit order, and a merge only joins *adjacent* segments, so the global
document order (segments in commit order, then internal id) and with it the tie-break of search
results never changes: a merged index ranks exactly as a fresh one built from the live
documents in that order. The exception is an explicit ``optimize(reorder=True)``, which renumbers
the merged documents by recursive graph bisection (faster search; ties then go to that order).
Merges copy the stored impacts and stored documents; nothing is re-encoded or re-quantised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import UsageError
from .reorder import bp_order
from .segment import SparseIndex
from .segment_writer import SegmentWriter

#: rows copied per chunk while merging
MERGE_CHUNK = 1 << 16


@dataclass(frozen=True)
class MergePolicy:
    """Tiered (logarithmic) merges of adjacent segments, as Lucene's LogMergePolicy.

    A segment's tier is ``floor(log_{merge_factor}(max(live_docs, min_docs) / min_docs))``;
    ``merge_factor`` adjacent segments of one tier merge into one of the next tier. So ``n``
    documents take about ``merge_factor - 1`` segments per tier, ``log(n / min_docs)`` tiers, and
    never more than ``max_segments`` (then the smallest adjacent window merges).
    """

    merge_factor: int = 10
    min_docs: int = 1000
    max_segments: int = 50

    def __post_init__(self) -> None:
        if self.merge_factor < 2 or self.min_docs < 1 or self.max_segments < 1:
            raise UsageError("merge_factor must be >= 2, min_docs and max_segments >= 1")

    def tier(self, docs: int) -> int:
        return int(math.log(max(docs, self.min_docs) / self.min_docs, self.merge_factor) + 1e-9)

    def find_merges(self, sizes: list[int]) -> list[tuple[int, int]]:
        """Non-overlapping ``[start, end)`` ranges of adjacent segments to merge now."""
        tiers = [self.tier(s) for s in sizes]
        merges, i = [], 0
        while i < len(sizes):
            j = i
            while j < len(sizes) and tiers[j] == tiers[i]:
                j += 1
            for start in range(i, j - self.merge_factor + 1, self.merge_factor):
                merges.append((start, start + self.merge_factor))
            i = j
        if not merges and len(sizes) > self.max_segments:
            width = min(self.merge_factor, len(sizes) - self.max_segments + 1)
            totals = np.convolve(sizes, np.ones(width, dtype=np.int64), mode="valid")
            start = int(np.argmin(totals))
            merges.append((start, start + width))
        return merges


def force_merges(sizes: list[int], deleted: list[int], max_segments: int,
                 rewrite_all: bool = False) -> list[tuple[int, int]]:
    """Ranges that leave at most ``max_segments`` segments, joining the smallest neighbours first.

    A segment left alone is still rewritten if it has deletions (they are expunged), or with
    ``rewrite_all``.
    """
    if max_segments < 1:
        raise UsageError(f"max_segments must be >= 1, got {max_segments}")
    groups = [[i, i + 1, s] for i, s in enumerate(sizes)]
    while len(groups) > max_segments:
        j = min(range(len(groups) - 1), key=lambda g: groups[g][2] + groups[g + 1][2])
        groups[j:j + 2] = [[groups[j][0], groups[j + 1][1], groups[j][2] + groups[j + 1][2]]]
    return [(a, b) for a, b, _ in groups if b - a > 1 or deleted[a] or rewrite_all]


def merge_into(writer: SegmentWriter, sources: list[tuple[SparseIndex, np.ndarray | None]], *,
               reorder: bool = False) -> None:
    """Copy the live documents of ``sources`` (segment, deletion mask) into ``writer``: in order, or
    in a recursive-graph-bisection order of all of them (``reorder``; see :mod:`.reorder`)."""
    live = [np.flatnonzero(dead == 0) if dead is not None else np.arange(seg.n_docs) for seg, dead in sources]
    if not reorder:
        for (seg, _), rows in zip(sources, live):
            _copy(writer, seg, seg.impacts_csr(), rows)
        return
    x = sp.vstack([seg.impacts_csr()[rows] for (seg, _), rows in zip(sources, live)], format="csr")
    owner = np.repeat(np.arange(len(sources)), [len(rows) for rows in live])
    local = np.concatenate(live) if live else np.zeros(0, np.int64)
    order = bp_order(x)
    for lo in range(0, len(order), MERGE_CHUNK):
        picked = order[lo:lo + MERGE_CHUNK]
        ids = [sources[o][0].doc_ids[int(r)] for o, r in zip(owner[picked], local[picked])]
        records = ([sources[o][0].store.get(int(r)) for o, r in zip(owner[picked], local[picked])]
                   if writer.store is not None else None)
        writer.add(ids, x[picked], records)


def _copy(writer: SegmentWriter, seg: SparseIndex, x: sp.csr_matrix, rows: np.ndarray) -> None:
    ids = seg.doc_ids.tolist()
    for lo in range(0, len(rows), MERGE_CHUNK):
        chunk = rows[lo:lo + MERGE_CHUNK]
        records = [seg.store.get(int(r)) for r in chunk] if seg.store is not None else None
        writer.add([ids[r] for r in chunk], x[chunk], records)
