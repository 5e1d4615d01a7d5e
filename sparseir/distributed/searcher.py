"""Search a sharded index: fan a query batch out to every shard, merge the top-k lists exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from ..errors import SparseirError
from ..search import ApproxParams, Contribution, Hit, check_k
from ..search.results import batch_items
from .merge import cross_shard_ties, merge_topk
from .shard import Shard
from .shardmap import ShardMap

Call = tuple[int, str, tuple]  # shard, method, arguments


class ShardError(SparseirError):
    """A shard failed to answer (after Ray restarted it and the call was retried once)."""


class ShardedSearcher:
    """The searcher API of :class:`sparseir.search.Searcher` over a sharded index, in this process.

    Opens every shard (a live index) and loops over them; :class:`~sparseir.distributed.RaySearcher`
    runs the same calls on one Ray actor per shard. Queries are encoded once (by shard 0) and the
    same vectors go to every shard. With ``params``, every shard searches approximately.
    """

    def __init__(self, path: str | Path, encoder=None, params: ApproxParams | None = None) -> None:
        self.path = Path(path)
        self.map = ShardMap.load(self.path)
        self.params = params
        self._shards = self._open(encoder)

    def _open(self, encoder) -> list[Any]:
        return [Shard(self.path, s, encoder, self.params) for s in range(self.map.n_shards)]

    def _run(self, calls: Sequence[Call]) -> list[Any]:
        """Run each ``(shard, method, args)``; results in order."""
        return [getattr(self._shards[s], method)(*args) for s, method, args in calls]

    def _fanout(self, method: str, *args: Any) -> list[Any]:
        """Run ``method`` on every shard; results in shard order."""
        return self._run([(s, method, args) for s in range(self.map.n_shards)])

    @property
    def n_shards(self) -> int:
        return self.map.n_shards

    @property
    def generation(self) -> tuple[int, ...]:
        """The commit generation seen of every shard."""
        return tuple(self._fanout("generation"))

    @property
    def n_docs(self) -> int:
        """Live documents over all shards."""
        return sum(self._fanout("n_docs"))

    def refresh(self) -> bool:
        """Move every shard to its newest commit; whether any changed."""
        return any(self._fanout("refresh"))

    def query_vectors(self, queries: Any):
        return self._run([(0, "query_vectors", (queries,))])[0]

    def search_vectors(self, vectors, k: int = 10, threads: int | None = None) -> list[list[Hit]]:
        """Top-k of every row of a CSR query matrix: one fan-out for the batch, then an exact merge per query."""
        check_k(k)
        n = vectors.shape[0]
        if n == 0:
            return []
        per_shard = self._fanout("search", vectors, k, threads)
        per_query = [[hits[q] for hits in per_shard] for q in range(n)]
        need: dict[int, set[str]] = {}
        for parts in per_query:
            for s, ids in cross_shard_ties(parts, k).items():
                need.setdefault(s, set()).update(ids)
        seqs: dict[str, int] = {}
        for found in self._run([(s, "seqs", (sorted(ids),)) for s, ids in sorted(need.items())]):
            seqs.update(found)
        return [merge_topk(parts, k, seqs) for parts in per_query]

    def search(self, query: Any, k: int = 10) -> list[Hit]:
        """Exact top-k for one query: the same ids and scores as one unsharded index."""
        check_k(k)
        return self.search_vectors(self.query_vectors(query), k)[0]

    def batch_search(self, queries: Mapping[str, Any] | Sequence[Any], qids: Sequence[str] | None = None,
                     k: int = 10, threads: int | None = None) -> dict[str, list[Hit]]:
        """Top-k for many queries, as ``{qid: hits}`` (Pyserini's argument order, as ``Searcher.batch_search``)."""
        check_k(k)
        qids, queries = batch_items(queries, qids, queries.shape[0] if sp.issparse(queries) else None)
        return dict(zip(qids, self.search_vectors(self.query_vectors(queries), k, threads)))

    def explain(self, query: Any, doc_id: str) -> list[Contribution]:
        """The dimensions behind ``doc_id``'s score, from the shard that holds it."""
        return self._run([(self.map.shard_of(doc_id), "explain", (self.query_vectors(query), doc_id))])[0]

    def doc(self, doc_id: str) -> dict[str, Any] | None:
        """The stored document ``doc_id``, from the shard that holds it (``None`` if absent)."""
        return self._run([(self.map.shard_of(doc_id), "doc", (doc_id,))])[0]
