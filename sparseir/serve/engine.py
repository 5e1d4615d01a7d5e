"""The served index: searchers that may run concurrently, the writer, and refresh on new commits.

A :class:`Searcher` keeps per-query scratch arrays, so one instance must not run two searches at
once. The engine keeps a pool of searchers over one shared, memory-mapped index; each request
borrows one. A refresh that finds a newer commit builds a new pool and swaps it in atomically;
requests already running finish on the old one (Lucene's SearcherManager).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import SparseirError, UsageError
from ..search import ApproxParams, ApproxSearcher, Contribution, Hit, Searcher

class ReadOnlyError(SparseirError):
    """A write reached a server started with ``--read-only``."""


class _Pool:
    """Searchers over one index state (one commit), lent one per running request."""

    def __init__(self, index: Any, encoder: Any, generation: int, size: int,
                 approx: ApproxSearcher | None = None) -> None:
        self.index, self.encoder, self.generation = index, encoder, generation
        self._idle: queue.SimpleQueue[Searcher] = queue.SimpleQueue()
        for _ in range(size):
            self._idle.put(Searcher(index, encoder))
        self.approx = approx  # built on the first approximate query; never searched with itself
        self._lock = threading.Lock()
        self._stats: dict[str, Any] | None = None

    @contextmanager
    def searcher(self) -> Iterator[Searcher]:
        s = self._idle.get()
        try:
            yield s
        finally:
            self._idle.put(s)

    def approx_searcher(self, knobs: Mapping[str, Any]) -> ApproxSearcher:
        """A searcher with these per-query knobs over approximate structures built once per index state."""
        with self._lock:
            if self.approx is None:
                self.approx = ApproxSearcher(self.index, self.encoder)
        return self.approx.with_params(**knobs)

    def stats(self) -> dict[str, Any]:
        """The index's statistics (a pass over every posting: computed once per index state)."""
        with self._lock:
            if self._stats is None:
                self._stats = self.index.stats()
            return self._stats


class Engine:
    """One index served: search, explain, stored documents, writes and refresh."""

    def __init__(self, path: str | Path, *, read_only: bool = False, pool_size: int = 4) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.pool_size = pool_size
        probe = Searcher(self.path)
        self.encoder = probe.encoder  # loaded now: the first query must not pay for it
        self._probe = probe  # only ever used by refresh(), under its lock
        self._pool = self._new_pool()
        self._refresh_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._term_ids: dict[str, int] | None = None
        self.warm_up()
        self.writer = None
        if not self.read_only:
            from ..index import IndexWriter

            self.writer = IndexWriter(self.path, self.encoder)

    def warm_up(self) -> None:
        """Run the encoder and every search kernel once, so the first client does not pay for compiling."""
        one, two = self.encode_queries(["warm up"]), self.encode_queries(["warm", "up"])
        self.search(one, k=1, explain=1)
        self.search(two, k=1)

    # --- reading -------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self._pool.generation

    def encode_queries(self, texts: list[str]) -> list[sp.csr_matrix]:
        """Encode query texts in one call; one CSR row per text (the micro-batcher's batch function)."""
        m = self.encoder.encode_query(texts)
        return [m[i] for i in range(m.shape[0])]

    def vector(self, weights: Mapping[str, float]) -> sp.csr_matrix:
        """A ``{term: weight}`` mapping as a CSR row; an unknown term is a :class:`UsageError`."""
        if self._term_ids is None:
            self._term_ids = {t: i for i, t in enumerate(self.encoder.terms)}
        unknown = [t for t in weights if t not in self._term_ids]
        if unknown:
            raise UsageError(f"terms not in the encoder's vocabulary: {unknown[:5]}")
        cols = np.fromiter((self._term_ids[t] for t in weights), dtype=np.int32, count=len(weights))
        vals = np.fromiter(weights.values(), dtype=np.float32, count=len(weights))
        return sp.csr_matrix((vals, cols, [0, len(cols)]), shape=(1, self.encoder.dim))

    def search(self, vectors: Sequence[sp.csr_matrix], k: int, approx: Mapping[str, Any] | None = None,
               explain: int = 0) -> list[list[tuple[Hit, list[Contribution]]]]:
        """Top-k hits of each query vector, with up to ``explain`` contributions per hit (0: none)."""
        pool = self._pool
        queries = {str(i): v for i, v in enumerate(vectors)}
        if approx is not None:
            s = pool.approx_searcher(approx)
            results = s.batch_search(queries, k=k, threads=1)
            return self._explained(s, vectors, results, explain)
        with pool.searcher() as s:
            results = s.batch_search(queries, k=k, threads=1 if len(queries) < 8 else None)
            return self._explained(s, vectors, results, explain)

    @staticmethod
    def _explained(s: Searcher, vectors: Sequence[sp.csr_matrix], results: dict[str, list[Hit]],
                   explain: int) -> list[list[tuple[Hit, list[Contribution]]]]:
        return [[(h, s.explain(v, h.doc_id)[:explain] if explain else []) for h in results[str(i)]]
                for i, v in enumerate(vectors)]

    def explain(self, vector: sp.csr_matrix, doc_id: str, text: str | None = None) -> list[Contribution]:
        """Contributions of ``doc_id`` to the query ``vector``; given the query ``text``, with source words."""
        with self._pool.searcher() as s:
            return s.explain(text, doc_id, provenance=True) if text is not None else s.explain(vector, doc_id)

    def inspect(self, term: str, top: int = 10, spans: bool = False) -> dict[str, Any]:
        """:func:`~sparseir.search.dimensions.inspect_dimension` on the served commit; ``spans`` adds each top
        document's source words."""
        from ..search.dimensions import inspect_dimension, source_spans

        index = self._pool.index
        report = inspect_dimension(index, term, top=top)
        if spans:
            source_spans(index, self.encoder, report)
        return report

    def doc(self, doc_id: str) -> dict | None:
        """The stored document, or ``None``."""
        with self._pool.searcher() as s:
            return s.doc(doc_id)

    def stats(self) -> dict[str, Any]:
        """The index's statistics and the serving state."""
        pool = self._pool
        info = pool.stats().get("encoder") or {}
        return {**pool.stats(), "path": str(self.path), "generation": self.generation, "read_only": self.read_only,
                "encoder": {"name": self.encoder.name, "model": info.get("config", {}).get("model"),
                                          "fingerprint": self.encoder.fingerprint},
                "approx_defaults": asdict(ApproxParams())}

    def refresh(self) -> bool:
        """Swap in searchers over a newer commit if there is one; True if it did."""
        with self._refresh_lock:
            if not self._probe.refresh():
                return False
            approx = self._pool.approx
            if approx is not None:
                approx.refresh()  # keeps the structures of segments that did not change
            self._pool = self._new_pool(approx)
            return True

    def _new_pool(self, approx: ApproxSearcher | None = None) -> _Pool:
        p = self._probe
        return _Pool(p.index, self.encoder, p.generation, self.pool_size, approx)

    # --- writing -------------------------------------------------------------------------
    def _writable(self):
        if self.writer is None:
            raise ReadOnlyError("this server is read-only (--read-only)")
        return self.writer

    def add(self, docs: Sequence[Any], vectors: sp.csr_matrix | None, *, upsert: bool, commit: bool) -> dict:
        """Add (or upsert) documents; with ``commit`` the write is durable before this returns."""
        writer = self._writable()
        with self._write_lock:
            n = writer.add(docs, vectors, upsert=upsert)
            generation = self._commit(writer) if commit else None
        return {"added": n, "committed": commit, "generation": generation}

    def delete(self, ids: Sequence[str], *, commit: bool) -> dict:
        writer = self._writable()
        with self._write_lock:
            missing = writer.delete(list(ids))
            generation = self._commit(writer) if commit else None
        return {"deleted": len(ids) - len(missing), "not_found": missing, "committed": commit,
                "generation": generation}

    def commit(self) -> int:
        writer = self._writable()
        with self._write_lock:
            return self._commit(writer)

    def _commit(self, writer) -> int:
        generation = writer.commit()
        self.refresh()
        return generation

    def close(self) -> None:
        """Commit what clients added without committing (as Lucene's ``IndexWriter.close``), then release."""
        if self.writer is not None:
            with self._write_lock:
                self.writer.commit()
                self.writer.close()
                self.writer = None


def open_engine(config: Any) -> Engine:
    """The engine for ``config.index`` (a :class:`~sparseir.serve.config.ServeConfig`): :class:`Engine` for
    one index, ``ShardedEngine`` for a sharded index (on Ray actors with ``config.ray``)."""
    from ..distributed.api import is_sharded, require_sharded

    if config.ray or config.ray_address:
        require_sharded(config.index)
    if is_sharded(config.index):
        from .sharded import ShardedEngine

        return ShardedEngine(config.index, read_only=config.read_only, ray=config.ray or bool(config.ray_address),
                             ray_address=config.ray_address)
    return Engine(config.index, read_only=config.read_only, pool_size=config.search_threads)

