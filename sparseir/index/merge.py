"""Merge policy and segment merging.

Segments keep their commit order, and a merge only joins *adjacent* segments, so the global
document order (segments in commit order, then internal id) and with it the tie-break of search
results never changes: a merged index ranks exactly as a fresh one built from the live
documents in that order. Merges copy the stored impacts and stored documents; nothing is
re-encoded or re-quantised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
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


def force_merges(sizes: list[int], deleted: list[int], max_segments: int) -> list[tuple[int, int]]:
    """Ranges that leave at most ``max_segments`` segments, joining the smallest neighbours first.

    A segment left alone is still rewritten if it has deletions (they are expunged).
    """
    if max_segments < 1:
        raise UsageError(f"max_segments must be >= 1, got {max_segments}")
    groups = [[i, i + 1, s] for i, s in enumerate(sizes)]
    while len(groups) > max_segments:
        j = min(range(len(groups) - 1), key=lambda g: groups[g][2] + groups[g + 1][2])
        groups[j:j + 2] = [[groups[j][0], groups[j + 1][1], groups[j][2] + groups[j + 1][2]]]
    return [(a, b) for a, b, _ in groups if b - a > 1 or deleted[a]]


def merge_into(writer: SegmentWriter, sources: list[tuple[SparseIndex, np.ndarray | None]]) -> None:
    """Copy the live documents of ``sources`` (segment, deletion mask), in order, into ``writer``."""
    for seg, dead in sources:
        live = np.flatnonzero(dead == 0) if dead is not None else np.arange(seg.n_docs)
        x = seg.impacts_csr()
        ids = seg.doc_ids.tolist()
        for lo in range(0, len(live), MERGE_CHUNK):
            rows = live[lo:lo + MERGE_CHUNK]
            records = [seg.store.get(int(r)) for r in rows] if seg.store is not None else None
            writer.add([ids[r] for r in rows], x[rows], records)
