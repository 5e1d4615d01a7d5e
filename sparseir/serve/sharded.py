"""The served sharded index: the :class:`Engine` API over a sharded searcher (in process or on Ray actors)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from ..errors import UsageError
from ..search import Contribution, Hit
from .engine import Engine


class ShardedEngine(Engine):
    """Search, explain, stored documents, writes and refresh over a sharded index.

    With ``ray``, every call goes to one Ray actor per shard (``RaySearcher``); otherwise the
    shards are searched in this process, one request at a time. Writes go through a
    ``ShardedWriter`` (documents routed by id). Approximate search is not served for a sharded
    index (use ``sparseir search --approx``).
    """

    def __init__(self, path: str | Path, *, read_only: bool = False, ray: bool = False,
                 ray_address: str | None = None) -> None:
        from ..distributed import ShardedWriter, open_searcher, shard_paths
        from ..encoders import load_encoder
        from ..index import open_index

        self.path = Path(path)
        self.read_only = read_only
        info = open_index(shard_paths(self.path)[0]).settings.get("encoder")
        if not info:
            raise UsageError(f"{self.path}: no encoder recorded in the index; it cannot serve text queries")
        self.encoder = load_encoder(info["config"])
        self.searcher = open_searcher(self.path, ray=ray, ray_address=ray_address, encoder=self.encoder)
        # In-process shard searchers keep per-query scratch arrays: one request at a time. Ray actors
        # run one call at a time each, so concurrent requests are safe there.
        self._busy: Any = contextlib.nullcontext() if ray else threading.Lock()
        self._refresh_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._term_ids: dict[str, int] | None = None
        self._stats: dict[str, Any] | None = None
        self.warm_up()
        self.writer = None if read_only else ShardedWriter(self.path, self.encoder)

    @property
    def generation(self) -> tuple[int, ...]:
        """Every shard's commit generation."""
        return self.searcher.generation

    def search(self, vectors: Sequence[sp.csr_matrix], k: int, approx: Mapping[str, Any] | None = None,
               explain: int = 0) -> list[list[tuple[Hit, list[Contribution]]]]:
        if approx is not None:
            raise UsageError("approximate search is not served for a sharded index; search it exactly, or with "
                             "`sparseir search --approx`")
        with self._busy:
            results = self.searcher.batch_search(sp.vstack(list(vectors), format="csr"), k=k)
            return self._explained(self.searcher, vectors, results, explain)

    def explain(self, vector: sp.csr_matrix, doc_id: str, text: str | None = None) -> list[Contribution]:
        from ..encoders.sources import ProvenanceError
        from ..search.searcher import add_sources

        with self._busy:
            contributions = self.searcher.explain(vector, doc_id)
            stored = self.searcher.doc(doc_id) if text is not None else None
        if text is None:
            return contributions
        if not stored or not isinstance(stored.get("text"), str):
            raise ProvenanceError(f"document {doc_id!r} has no stored text (a shard built with --no-store?)")
        return add_sources(contributions, self.encoder, text, stored["text"])

    def inspect(self, term: str, top: int = 10, spans: bool = False) -> dict[str, Any]:
        raise UsageError("the dimension browser is not served for a sharded index; run `sparseir inspect` on a shard")

    def doc(self, doc_id: str) -> dict | None:
        with self._busy:
            return self.searcher.doc(doc_id)

    def stats(self) -> dict[str, Any]:
        """Totals over the shards, each shard's statistics, and the serving state."""
        from ..distributed import shard_paths
        from ..index import open_index

        with self._refresh_lock:
            if self._stats is None:
                shards = [open_index(p).stats() for p in shard_paths(self.path)]
                self._stats = {"n_shards": len(shards), "shards": shards,
                               **{key: sum(s[key] for s in shards) for key in ("n_docs", "n_deleted", "n_postings")},
                               "n_dims": shards[0]["n_dims"]}
            stats = self._stats
        return {**stats, "path": str(self.path), "generation": self.generation, "read_only": self.read_only,
                "live": True, "encoder": {"name": self.encoder.name, "model": self.encoder.config().get("model"),
                                          "fingerprint": self.encoder.fingerprint}}

    def refresh(self) -> bool:
        """Move every shard to its newest commit; True if any changed."""
        with self._refresh_lock, self._busy:
            changed = self.searcher.refresh()
            if changed:
                self._stats = None
            return changed

    def close(self) -> None:
        super().close()
        if hasattr(self.searcher, "close"):  # a RaySearcher's actors
            self.searcher.close()
