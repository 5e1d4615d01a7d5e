"""Exact merge of per-shard top-k lists into one global top-k."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import groupby

from ..search import Hit

Candidate = tuple[float, int, int, str]  # score, shard, rank in the shard's list, doc id


def _score_groups(parts: Sequence[Sequence[Hit]]) -> list[list[Candidate]]:
    """Every shard's hits, best score first, grouped by equal score (in a group: by shard, then rank)."""
    cands = sorted(((h.score, s, r, h.doc_id) for s, hits in enumerate(parts) for r, h in enumerate(hits)),
                   key=lambda c: (-c[0], c[1], c[2]))
    return [list(g) for _, g in groupby(cands, key=lambda c: c[0])]


def _cross_shard(group: list[Candidate]) -> bool:
    return len({c[1] for c in group}) > 1


def cross_shard_ties(parts: Sequence[Sequence[Hit]], k: int) -> dict[int, list[str]]:
    """The ids (per shard) whose global sequence numbers :func:`merge_topk` needs: score ties between shards
    that reach into the top ``k``. Usually none."""
    need: dict[int, list[str]] = defaultdict(list)
    seen = 0
    for group in _score_groups(parts):
        if seen >= k:
            break
        if _cross_shard(group):
            for _, s, _, doc_id in group:
                need[s].append(doc_id)
        seen += len(group)
    return dict(need)


def merge_topk(parts: Sequence[Sequence[Hit]], k: int, seqs: Mapping[str, int] | None = None) -> list[Hit]:
    """The global top-k of per-shard top-k lists (each best first): score descending, then insertion order.

    Exact: within a shard, results are ordered by (score, position) and a shard's positions follow
    the global insertion sequence, so every document of the global top-k is in its own shard's
    top-k. Scores are the float32 values the shards computed with one shared dequantisation scale,
    so ids and scores equal one unsharded index's. Ties between shards are ordered by the global
    sequence numbers in ``seqs`` (``doc id -> seq``, see :func:`cross_shard_ties`); where one is
    unknown (an index without a document store), by shard, then rank.
    """
    out: list[Hit] = []
    known = seqs or {}
    for group in _score_groups(parts):
        if len(out) >= k:
            break
        if _cross_shard(group) and all(c[3] in known for c in group):
            group.sort(key=lambda c: known[c[3]])
        out.extend(Hit(c[3], c[0]) for c in group)
    return out[:k]
