"""One shard of a sharded index, opened for search in this process or inside a Ray actor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..search import ApproxParams, ApproxSearcher, Contribution, Searcher
from .merge import ShardHits
from .shardmap import ShardMap, shard_dir

SEQ_DIR = "seq"


def seq_path(folder: Path, shard: int) -> Path:
    """The global sequence numbers of a shard's documents, in the shard's internal order."""
    return folder / SEQ_DIR / f"{shard_dir(shard)}.npy"


class Shard:
    """A shard's searcher plus the global sequence number of each of its documents."""

    def __init__(self, folder: str | Path, shard: int, encoder=None, params: ApproxParams | None = None) -> None:
        folder = Path(folder)
        ShardMap.load(folder)  # a clear error if this is not a sharded index
        self.shard = shard
        path = folder / shard_dir(shard)
        self.searcher = ApproxSearcher(path, encoder, params) if params else Searcher(path, encoder)
        self.seqs = np.load(seq_path(folder, shard), mmap_mode="r")

    def query_vectors(self, queries: Any) -> sp.csr_matrix:
        return self.searcher.query_vectors(queries)

    def search(self, queries: sp.spmatrix, k: int, threads: int | None = None) -> list[ShardHits]:
        """This shard's top-k for every query row."""
        ids, scores, counts = self.searcher.search_vectors(queries, k, threads)
        table = self.searcher.index.doc_ids
        return [ShardHits([table[int(d)] for d in i[:c]], s[:c].copy(), np.asarray(self.seqs[i[:c]]))
                for i, s, c in zip(ids, scores, counts)]

    def explain(self, query: sp.spmatrix, doc_id: str) -> list[Contribution]:
        return self.searcher.explain(query, doc_id)

    def doc(self, doc_id: str) -> dict[str, Any] | None:
        return self.searcher.doc(doc_id)

    def ping(self) -> int:
        """The shard's number; a cheap call to check that an actor is up."""
        return self.shard
