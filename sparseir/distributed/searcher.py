"""Search a sharded index: fan a query batch out to every shard, merge the top-k lists exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import SparseirError, UsageError
from ..search import ApproxParams, Contribution, Hit
from .merge import merge_topk
from .shard import Shard
from .shardmap import ShardMap


class ShardError(SparseirError):
    """A shard failed to answer (after Ray restarted it and the call was retried once)."""


def check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UsageError(f"k must be an integer >= 1, got {k!r}")
    return k


class ShardedSearcher:
    """The searcher API of :class:`sparseir.search.Searcher` over a sharded index.

    This class opens every shard in this process and loops over them; ``RaySearcher`` (in
    ``sparseir.distributed.actors``) runs the same calls on one Ray actor per shard. Queries are
    encoded once (by shard 0) and the same vectors go to every shard.
    """

    def __init__(self, path: str | Path, encoder=None, params: ApproxParams | None = None) -> None:
        self.path = Path(path)
        self.map = ShardMap.load(self.path)
        self.params = params
        self._shards = self._open(encoder)

    def _open(self, encoder) -> list[Any]:
        return [Shard(self.path, s, encoder, self.params) for s in range(self.map.n_shards)]

    def _call(self, shard: int, method: str, *args: Any) -> Any:
        """Run ``method`` on one shard."""
        return getattr(self._shards[shard], method)(*args)

    def _fanout(self, method: str, *args: Any) -> list[Any]:
        """Run ``method`` on every shard; results in shard order."""
        return [self._call(s, method, *args) for s in range(self.map.n_shards)]

    @property
    def n_shards(self) -> int:
        return self.map.n_shards

    def query_vectors(self, queries: Any):
        return self._call(0, "query_vectors", queries)

    def search_many(self, queries: Sequence[Any], k: int = 10, threads: int | None = None) -> list[list[Hit]]:
        """Top-k for every query, in order: one fan-out for the whole batch, then an exact merge per query."""
        check_k(k)
        if not queries:
            return []
        vectors = self.query_vectors(list(queries))
        per_shard = self._fanout("search", vectors, k, threads)
        return [merge_topk([hits[q] for hits in per_shard], k) for q in range(vectors.shape[0])]

    def search(self, query: Any, k: int = 10) -> list[Hit]:
        """Exact top-k for one query: the same ids and scores as one unsharded index."""
        return self.search_many([query], k)[0]

    def batch_search(self, queries: Mapping[str, Any] | Sequence[Any], qids: Sequence[str] | None = None,
                     k: int = 10, threads: int | None = None) -> dict[str, list[Hit]]:
        """Top-k for many queries; keys are the mapping's keys, ``qids``, or positions ``"0"``, ``"1"``, ..."""
        if isinstance(queries, Mapping):
            qids, queries = list(queries), list(queries.values())
        queries = list(queries)
        if qids is None:
            qids = [str(i) for i in range(len(queries))]
        elif len(qids) != len(queries):
            raise UsageError(f"{len(qids)} qids for {len(queries)} queries")
        return dict(zip(qids, self.search_many(queries, k, threads)))

    def explain(self, query: Any, doc_id: str) -> list[Contribution]:
        """The dimensions behind ``doc_id``'s score, from the shard that holds it."""
        return self._call(self.map.shard_of(doc_id), "explain", self.query_vectors(query), doc_id)

    def doc(self, doc_id: str) -> dict[str, Any] | None:
        """The stored document ``doc_id``, from the shard that holds it (``None`` if absent)."""
        return self._call(self.map.shard_of(doc_id), "doc", doc_id)
