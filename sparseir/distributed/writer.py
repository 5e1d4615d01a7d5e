"""The writer of a sharded index: routes add, update and delete to the shards by a stable hash of the id."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..corpus import Document
from ..errors import UsageError
from ..index import IndexWriter, is_index
from ..index.format import UINT8_LEVELS
from ..index.segment_writer import check_vectors
from .shardmap import SEQ_FIELD, SHARD_MAP, ShardMap, check_shards, is_sharded, route, shard_dir

_SHARD_DIR = re.compile(r"^shard-\d{3,}$")


class ShardedWriter:
    """One :class:`~sparseir.index.IndexWriter` per shard behind the single-index writer's API.

    ``ShardedWriter(path, encoder, shards=N)`` creates a sharded index (``create=True`` replaces the
    documents of an existing one with the same shard count); ``ShardedWriter(path)`` opens one.
    Every document gets the next global sequence number (stored in its record as ``_seq``) and goes
    to shard ``blake2b(id) mod N``. All shards share one uint8 ``scale`` (default: fixed by the
    first batch of documents added, as one index's first segment fixes its scale), so shard scores
    are comparable and the merged results equal one unsharded index's.

    A commit commits every shard in turn: each shard is crash-safe on its own, but a crash between
    two shard commits publishes the change on some shards only (re-run the write; ``update`` is
    idempotent).
    """

    def __init__(self, path: str | Path, encoder: Any = None, *, shards: int | None = None,
                 terms: Sequence[str] | None = None, quantize: str = "uint8", store: bool = True,
                 create: bool = False, scale: float | None = None) -> None:
        self.path = Path(path)
        exists = is_sharded(self.path)
        if is_index(self.path):
            raise UsageError(f"{self.path} is an unsharded index; build a sharded one with --shards")
        if exists:
            smap = ShardMap.load(self.path)
            if shards is not None and shards != smap.n_shards:
                raise UsageError(f"{self.path} has {smap.n_shards} shards, not {shards}; the shard count of an "
                                 "index is fixed (build a new index to reshard)")
        elif shards is None:
            raise UsageError(f"{self.path}: not a sharded index (no {SHARD_MAP}); creating one needs shards")
        else:
            _check_empty(self.path)
        self.map = ShardMap(check_shards(shards if shards is not None else smap.n_shards)) \
            if not exists or create else smap
        self._new_map = not exists or create
        self.writers: list[IndexWriter] = []
        try:
            for s in range(self.map.n_shards):
                self.writers.append(IndexWriter(self.path / shard_dir(s), encoder, terms=terms, quantize=quantize,
                                                store=store, create=self._new_map, scale=scale))
        except BaseException:
            self._release()
            raise

    @property
    def n_shards(self) -> int:
        return self.map.n_shards

    @property
    def encoder(self) -> Any:
        return self.writers[0].encoder

    @property
    def scale(self) -> float | None:
        return self.writers[0].settings["scale"]

    def _fix_scale(self, x: sp.csr_matrix) -> None:
        """Give every shard the same uint8 scale: the shards' own, or this batch's largest weight / 255."""
        if self.writers[0].settings["quantization"] != "uint8":
            return
        scales = {w.settings["scale"] for w in self.writers}
        known = scales - {None}
        if len(known) > 1:
            raise UsageError(f"{self.path}: the shards have different scales {sorted(known)}; rebuild the index")
        if None not in scales:
            return
        scale = known.pop() if known else float(x.data.max()) / UINT8_LEVELS if x.nnz else None
        for w in self.writers:
            w.settings["scale"] = scale

    def add(self, docs: Iterable[Any], vectors: sp.spmatrix | None = None, *, upsert: bool = False) -> int:
        """Add documents (:class:`~sparseir.corpus.Document` s, or id strings with ``vectors``), each to its
        shard; returns how many. A duplicate id is an error unless ``upsert``."""
        docs = list(docs)
        ids = [d if isinstance(d, str) else d.id for d in docs]
        bad = [i for i in ids if not isinstance(i, str) or not i]
        if bad:
            raise UsageError(f"document ids must be non-empty strings, got {bad[0]!r}")
        if vectors is None:
            if any(isinstance(d, str) for d in docs):
                raise UsageError("plain id strings need vectors; pass Documents to encode their text")
            vectors = self.encoder.encode_document([d.text for d in docs], show_progress_bar=False)
        x = check_vectors(vectors, len(ids), self.writers[0].settings["n_dims"])
        if not ids:
            return 0
        if len(set(ids)) != len(ids):
            raise UsageError(f"duplicate document id in one add ({len(ids) - len(set(ids))} repeats)")
        self._fix_scale(x)
        first = self.map.next_seq
        shards = route(ids, self.n_shards)
        for s in np.unique(shards):  # every shard validates its part before any is written
            if not upsert:
                rows = np.flatnonzero(shards == s)
                present = self.writers[s].contains(ids[r] for r in rows)  # no partial add
                if present:
                    raise UsageError(f"document id {sorted(present)[0]!r} is already in the index ({len(present)} "
                                     "of the added ids are); use upsert=True (--upsert) to replace documents")
        for s in np.unique(shards):
            rows = np.flatnonzero(shards == s)
            self.writers[s].add([with_seq(docs[r], first + int(r)) for r in rows], x[rows], upsert=upsert)
        self.map = replace(self.map, next_seq=first + len(ids))
        return len(ids)

    def update(self, docs: Iterable[Any], vectors: sp.spmatrix | None = None) -> int:
        """Add or replace documents (``add(..., upsert=True)``); a replaced document moves to the end."""
        return self.add(docs, vectors, upsert=True)

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete documents by id; returns the (distinct) ids that were in no shard."""
        ids = list(dict.fromkeys(ids))
        missing = set()
        shards = route(ids, self.n_shards)
        for s in np.unique(shards):
            missing.update(self.writers[s].delete([ids[r] for r in np.flatnonzero(shards == s)]))
        return [i for i in ids if i in missing]

    def add_segments(self, shard: int, folders: Sequence[str | Path], n_seqs: int = 0) -> None:
        """Adopt standalone segments (from :func:`~sparseir.index.write_segment`) into ``shard``.

        Their documents must belong to ``shard``; their stored sequence numbers are the caller's (a
        build numbers the whole corpus and passes each shard's count as ``n_seqs``, by which the
        shard map's ``next_seq`` moves on).
        """
        self.writers[shard].add_segments(folders)
        self.map = replace(self.map, next_seq=self.map.next_seq + n_seqs)

    def optimize(self, max_segments: int = 1, *, reorder: bool = False) -> None:
        """Merge every shard down to at most ``max_segments`` segments, each reordered if ``reorder``
        (see :meth:`IndexWriter.optimize`; takes effect with :meth:`commit`)."""
        for w in self.writers:
            w.optimize(max_segments, reorder=reorder)

    def commit(self) -> tuple[int, ...]:
        """Commit every shard (the shard map first: sequence numbers are reserved before they are used);
        returns the shards' generations."""
        if self._new_map or self.map != ShardMap.load(self.path):
            self.map.save(self.path)
            self._new_map = False
        return tuple(w.commit() for w in self.writers)

    def rollback(self) -> None:
        """Drop every shard's uncommitted changes."""
        for w in self.writers:
            w.rollback()
        self.map = ShardMap(self.map.n_shards) if self._new_map else ShardMap.load(self.path)

    def close(self) -> None:
        """Release every shard's lock; uncommitted changes are dropped."""
        self._release()

    def _release(self) -> None:
        for w in self.writers:
            w.close()
        self.writers = []

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.close()


def with_seq(doc: Any, seq: int) -> Document:
    """``doc`` (a Document or an id) with its global sequence number among its stored fields."""
    if isinstance(doc, str):
        return Document(doc, "", "", {SEQ_FIELD: seq})
    return Document(doc.id, doc.text, getattr(doc, "title", "") or "", {**(getattr(doc, "fields", None) or {}),
                                                                          SEQ_FIELD: seq})


def _check_empty(path: Path) -> None:
    """A new sharded index goes into a new or empty folder (shard folders of a crashed creation aside)."""
    if path.is_file():
        raise UsageError(f"{path} is a file, not a directory")
    if path.is_dir():
        other = [n for n in os.listdir(path) if not _SHARD_DIR.match(n) and ".tmp" not in n]
        if other:
            raise UsageError(f"{path} exists and is not a sparseir index; refusing to write into it "
                             "(choose an empty or new directory)")
