"""One shard of a sharded index (a live index), opened for search in this process or in a Ray actor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from ..search import ApproxParams, ApproxSearcher, Contribution, Hit, Searcher
from .shardmap import SEQ_FIELD, ShardMap, shard_dir


class Shard:
    """A searcher over shard ``shard`` of the sharded index at ``folder``."""

    def __init__(self, folder: str | Path, shard: int, encoder=None, params: ApproxParams | None = None) -> None:
        folder = Path(folder)
        ShardMap.load(folder)  # a clear error if this is not a sharded index
        self.shard = shard
        path = folder / shard_dir(shard)
        self.searcher = ApproxSearcher(path, encoder, params) if params else Searcher(path, encoder)

    def query_vectors(self, queries: Any) -> sp.csr_matrix:
        return self.searcher.query_vectors(queries)

    def search(self, queries: sp.spmatrix, k: int, threads: int | None = None) -> list[list[Hit]]:
        """This shard's top-k for every query row (ties: insertion order, as in any live index)."""
        return list(self.searcher.batch_search(queries, k=k, threads=threads).values())

    def seqs(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """The global sequence numbers of ``doc_ids`` (kept in the document store; absent without one)."""
        out = {}
        for doc_id in doc_ids:
            record = self.searcher.doc(doc_id)
            if record is not None and SEQ_FIELD in record:
                out[doc_id] = int(record[SEQ_FIELD])
        return out

    def explain(self, query: sp.spmatrix, doc_id: str) -> list[Contribution]:
        return self.searcher.explain(query, doc_id)

    def doc(self, doc_id: str) -> dict[str, Any] | None:
        record = self.searcher.doc(doc_id)
        if record is not None:
            record.pop(SEQ_FIELD, None)
        return record

    def refresh(self) -> bool:
        return self.searcher.refresh()

    def generation(self) -> int:
        return self.searcher.generation

    def n_docs(self) -> int:
        return self.searcher.index.n_docs

    def ping(self) -> int:
        """The shard's number; a cheap call to check that an actor is up."""
        return self.shard
