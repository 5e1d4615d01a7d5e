"""Exact merge of per-shard top-k lists into one global top-k."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..search import Hit


class ShardHits(NamedTuple):
    """One shard's top-k for one query: external ids, float32 scores, global sequence numbers."""

    ids: list[str]
    scores: np.ndarray
    seqs: np.ndarray


def merge_topk(parts: Sequence[ShardHits], k: int) -> list[Hit]:
    """The global top-k of per-shard top-k lists: score descending, then global sequence ascending.

    Exact: every document of the global top-k is in its own shard's top-k, because each shard
    ranks by the same total order (within a shard, insertion order follows the global sequence).
    Scores are compared as the float32 values the shards computed, so the result has the same ids
    and scores as one unsharded index over the same documents.
    """
    parts = [p for p in parts if len(p.ids)]
    if not parts:
        return []
    scores = np.concatenate([np.asarray(p.scores, dtype=np.float32) for p in parts])
    seqs = np.concatenate([np.asarray(p.seqs, dtype=np.int64) for p in parts])
    ids = [i for p in parts for i in p.ids]
    order = np.lexsort((seqs, -scores))[:k]
    return [Hit(ids[i], float(scores[i])) for i in order]
