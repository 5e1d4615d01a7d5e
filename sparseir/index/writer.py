"""The single writer of a live index: add, delete, update, merge, commit (see FORMAT.md)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._fs import atomic_write
from ..errors import UsageError
from .commit import (LOCK, SEGMENTS, WriteLock, clean, generations, read_commit, read_deletes, write_commit,
                     write_deletes)
from .format import MANIFEST, QUANTIZATIONS, sha256_file
from .live import _read_terms, is_index, open_index
from .merge import MergePolicy, force_merges, merge_into
from .reorder import bp_order
from .segment import SparseIndex
from .segment_writer import SegmentWriter, check_vectors

_SEGMENT = re.compile(r"^s(\d{8,})$")


def encoder_info(encoder: Any) -> dict[str, Any]:
    """What an index records about its encoder (any object with the SparseEncoder attributes)."""
    info = {"name": encoder.name, "config": encoder.config(), "fingerprint": encoder.fingerprint,
            "device": str(encoder.device)}
    health = getattr(encoder, "health", None)
    return {**info, "health": health} if health else info


def _terms_file(terms: Sequence[str]) -> tuple[str, bytes]:
    data = json.dumps(list(terms), ensure_ascii=False).encode("utf-8")
    return f"terms-{hashlib.sha256(data).hexdigest()[:16]}.json", data


class IndexWriter:
    """The single writer of an index: add, delete and update documents, then :meth:`commit`.

    ``IndexWriter(path, encoder)`` opens the index at ``path`` or creates it (creating needs an
    ``encoder`` or ``terms``). ``encoder`` may also be the dict :func:`encoder_info` records, for
    vectors encoded elsewhere. ``create=True`` starts from an empty document set even if an index
    exists (``--overwrite``): the old documents stay visible until the first commit. Refuses a
    non-empty directory that is not a sparseir index. Holds ``write.lock`` until :meth:`close`;
    a second writer gets :class:`~sparseir.index.LockError` naming the holder. ``scale`` fixes a new
    uint8 index's dequantisation factor (default: the first segment's ``max_weight / 255``).

    Used as a context manager it commits on a clean exit and rolls back on an exception. Nothing
    is visible to readers before :meth:`commit` returns; after it returns the commit is durable.
    """

    def __init__(self, path: str | Path, encoder: Any = None, *, terms: Sequence[str] | None = None,
                 quantize: str = "uint8", store: bool = True, create: bool = False,
                 merge_policy: MergePolicy | None = MergePolicy(), max_buffered_docs: int = 50_000,
                 scale: float | None = None) -> None:
        if quantize not in QUANTIZATIONS:
            raise UsageError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
        if max_buffered_docs < 1:
            raise UsageError(f"max_buffered_docs must be >= 1, got {max_buffered_docs}")
        self.path = Path(path)
        info = dict(encoder) if isinstance(encoder, dict) else encoder_info(encoder) if encoder is not None else None
        encoder = None if isinstance(encoder, dict) else encoder
        self._encoder = encoder
        self.merge_policy = merge_policy
        self.max_buffered_docs = max_buffered_docs
        self._created_dir = _prepare_dir(self.path)
        self._lock: WriteLock | None = None
        try:
            self._lock = WriteLock(self.path)
            gens = generations(self.path)
            if not gens and (self.path / MANIFEST).is_file() and not create:
                open_index(self.path)  # the version-1 error
            if gens and not create:
                commit = read_commit(self.path, gens[-1])
                self.settings = commit["settings"]
                self._entries = [dict(e) for e in commit["segments"]]
            else:
                if terms is None and encoder is None:
                    raise UsageError(f"{self.path}: creating an index needs an encoder or terms")
                terms = list(terms if terms is not None else encoder.terms)
                name, data = _terms_file(terms)
                (self.path / SEGMENTS).mkdir(exist_ok=True)
                if not (self.path / SEGMENTS / name).is_file():
                    atomic_write(self.path / SEGMENTS / name, data)
                self.settings = {"n_dims": len(terms), "quantization": quantize,
                                 "scale": None if quantize == "uint8" and scale is None else float(scale or 1.0),
                                 "encoder": info,
                                 "store": bool(store), "terms": {"file": name, "sha256": sha256_file(
                                     self.path / SEGMENTS / name)}}
                self._entries = []
            if encoder is not None and gens and not create:
                self._check_encoder(encoder)
            self.generation = gens[-1] if gens else 0
            self._changed = create or not gens
            clean(self.path, protect={self.settings["terms"]["file"]} if self.settings.get("terms") else set())
            self._reset()
        except BaseException:
            self._release()
            raise

    # --- state --------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._segments: dict[str, SparseIndex] = {}
        self._dead: dict[str, np.ndarray] = {}
        self._dirty: set[str] = set()
        self._buffer: SegmentWriter | None = None
        self._buffer_dead: set[int] = set()
        self._ids: dict[str, tuple[str | None, int]] | None = None
        self._pending: set[str] = set()  # segments written since the last commit
        self._terms: list[str] | None = None

    @property
    def terms(self) -> list[str]:
        if self._terms is None:
            self._terms = _read_terms(self.path, self.settings)
        return self._terms

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            info = self.settings.get("encoder")
            if not info:
                raise UsageError(f"{self.path}: no encoder recorded in the index; pass vectors or an encoder")
            from ..encoders import load_encoder  # the index layer imports encoders only on demand

            self._encoder = load_encoder(info["config"])
            self._check_encoder(self._encoder)
        return self._encoder

    def _check_encoder(self, encoder: Any) -> None:
        """Refuse an encoder whose dimensions or weights differ from the index's."""
        info = self.settings.get("encoder") or {}
        if len(encoder.terms) != self.settings["n_dims"] or (
                info.get("fingerprint") and info["fingerprint"] != encoder.fingerprint):
            raise UsageError(f"{self.path}: the encoder ({encoder.name}, fingerprint {encoder.fingerprint}) differs "
                             f"from the one the index was built with ({info.get('fingerprint')}); documents encoded "
                             "by it would not be comparable")

    def _segment(self, name: str) -> SparseIndex:
        if name not in self._segments:
            self._segments[name] = SparseIndex.load(self.path / SEGMENTS / name, verify=False)
        return self._segments[name]

    def _mask(self, entry: dict[str, Any]) -> np.ndarray:
        name = entry["name"]
        if name not in self._dead:
            mask = read_deletes(self.path, entry.get("deletes"), entry["n_docs"], False)
            self._dead[name] = mask.copy() if mask is not None else np.zeros(entry["n_docs"], np.uint8)
        return self._dead[name]

    def _id_map(self) -> dict[str, tuple[str | None, int]]:
        """External id -> (segment name, or None for the buffer; internal id) of every live document."""
        if self._ids is None:
            ids: dict[str, tuple[str | None, int]] = {}
            for entry in self._entries:
                mask = self._mask(entry)
                for i, doc_id in enumerate(self._segment(entry["name"]).doc_ids.tolist()):
                    if not mask[i]:
                        ids[doc_id] = (entry["name"], i)
            self._ids = ids
        return self._ids

    def contains(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` that name a live (committed or buffered) document."""
        id_map = self._id_map()
        return {i for i in ids if i in id_map}

    def _next_name(self) -> str:
        used = [int(m.group(1)) for n in os.listdir(self.path / SEGMENTS) if (m := _SEGMENT.match(n))]
        return f"s{max(used, default=0) + 1:08d}"

    # --- documents ----------------------------------------------------------------------------
    def add(self, docs: Iterable[Any], vectors: sp.spmatrix | None = None, *, upsert: bool = False) -> int:
        """Add documents; returns how many. A duplicate id is an error unless ``upsert``.

        ``docs``: :class:`~sparseir.corpus.Document` records (``id``, ``text``, ``title``,
        ``fields``), or plain id strings when ``vectors`` are given. ``vectors``: CSR
        ``[n, n_dims]``; without them ``text`` is encoded with the writer's encoder.
        """
        docs = list(docs)
        ids = [d if isinstance(d, str) else d.id for d in docs]
        bad = [i for i in ids if not isinstance(i, str) or not i]
        if bad:
            raise UsageError(f"document ids must be non-empty strings, got {bad[0]!r}")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise UsageError(f"duplicate document id {dup!r} in one add")
        id_map = self._id_map()
        present = [i for i in ids if i in id_map]
        if present and not upsert:
            raise UsageError(f"document id {present[0]!r} is already in the index ({len(present)} of the added ids "
                             "are); use upsert=True (--upsert) to replace documents")
        if vectors is None:
            if any(isinstance(d, str) for d in docs):
                raise UsageError("plain id strings need vectors; pass Documents to encode their text")
            vectors = self.encoder.encode_document([d.text for d in docs], show_progress_bar=False)
        x = check_vectors(vectors, len(ids), self.settings["n_dims"])
        records = [_record(d) for d in docs] if self.settings.get("store") else None
        if present:
            if any(id_map[i][0] is None for i in present):
                self.flush()  # a segment holds each id once: the old version goes to its own segment
            self.delete(present)
        if self._buffer is None:
            self._buffer = SegmentWriter(self.path / SEGMENTS / self._next_name(), self.terms,
                                         quantize=self.settings["quantization"], scale=self.settings["scale"],
                                         encoder=self.settings.get("encoder"), store=bool(self.settings.get("store")))
        first = self._buffer.n_docs
        self._buffer.add(ids, x, records)
        for j, doc_id in enumerate(ids):
            id_map[doc_id] = (None, first + j)
        self._changed = True
        if self._buffer.n_docs >= self.max_buffered_docs:
            self.flush()
        return len(ids)

    def update(self, docs: Iterable[Any], vectors: sp.spmatrix | None = None) -> int:
        """Add or replace documents (``add(..., upsert=True)``)."""
        return self.add(docs, vectors, upsert=True)

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Delete documents by external id; returns the (distinct) ids that were not in the index."""
        id_map = self._id_map()
        missing = []
        by_name = {e["name"]: e for e in self._entries}
        for doc_id in dict.fromkeys(ids):
            loc = id_map.pop(doc_id, None)
            if loc is None:
                missing.append(doc_id)
                continue
            name, local = loc
            if name is None:
                self._buffer_dead.add(local)
            else:
                self._mask(by_name[name])[local] = 1
                self._dirty.add(name)
            self._changed = True
        return missing

    # --- segments -------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the buffered documents as a segment (not yet committed)."""
        buf, self._buffer = self._buffer, None
        if buf is None:
            return
        if buf.n_docs == 0:
            buf.abort()
            return
        manifest = buf.finish()
        name = buf.folder.name
        if self.settings["scale"] is None:
            self.settings["scale"] = manifest["scale"]
        self._pending.add(name)
        self._entries.append({"name": name, "n_docs": buf.n_docs, "n_deleted": 0,
                              "manifest_sha256": sha256_file(buf.folder / MANIFEST), "deletes": None})
        mask = np.zeros(buf.n_docs, np.uint8)
        mask[list(self._buffer_dead)] = 1
        self._dead[name] = mask
        if self._buffer_dead:
            self._dirty.add(name)
        self._buffer_dead = set()
        if self._ids is not None:
            for doc_id, (seg, local) in self._ids.items():
                if seg is None:
                    self._ids[doc_id] = (name, local)

    def _merge(self, ranges: list[tuple[int, int]], reorder: bool = False) -> None:
        for start, end in sorted(ranges, reverse=True):
            group = self._entries[start:end]
            name = self._next_name()
            writer = SegmentWriter(self.path / SEGMENTS / name, self.terms, quantize=self.settings["quantization"],
                                   scale=self.settings["scale"], encoder=self.settings.get("encoder"),
                                   store=bool(self.settings.get("store")), prequantized=True)
            try:
                merge_into(writer, [(self._segment(e["name"]), self._mask(e)) for e in group], reorder=reorder)
            except BaseException:
                writer.abort()
                raise
            if writer.n_docs == 0:
                writer.abort()
                self._entries[start:end] = []
            else:
                writer.finish({"merged_from": [e["name"] for e in group], "reordered": reorder})
                self._pending.add(name)
                self._dead[name] = np.zeros(writer.n_docs, np.uint8)
                self._entries[start:end] = [{"name": name, "n_docs": writer.n_docs, "n_deleted": 0,
                                             "manifest_sha256": sha256_file(writer.folder / MANIFEST),
                                             "deletes": None}]
            self._changed = True
        self._ids = None  # internal ids moved

    def _live_sizes(self) -> list[int]:
        return [e["n_docs"] - int(self._mask(e).sum()) for e in self._entries]

    def optimize(self, max_segments: int = 1, *, reorder: bool = False) -> None:
        """Merge down to at most ``max_segments`` segments, expunging deletions (Lucene's forceMerge).

        ``reorder`` rewrites every segment with its documents in a recursive-graph-bisection order
        (:mod:`sparseir.index.reorder`; its effect on search: ``bench/README.md``); equal scores then
        rank in that order. Takes effect with the next :meth:`commit`.
        """
        self.flush()
        sizes = self._live_sizes()
        deleted = [e["n_docs"] - s for e, s in zip(self._entries, sizes)]
        self._merge(force_merges(sizes, deleted, max_segments, rewrite_all=reorder), reorder)

    def add_segments(self, folders: Sequence[str | Path]) -> None:
        """Adopt standalone segments (written by :func:`write_segment`) in one commit, as Lucene's addIndexes.

        Their documents must not be in the index yet; their settings must match the index's.
        """
        self.flush()
        id_map = self._id_map()
        for folder in folders:
            seg = SparseIndex.load(folder, verify=True)
            s = self.settings
            if seg.n_dims != s["n_dims"] or seg.manifest["quantization"] != s["quantization"] or (
                    s["scale"] is not None and seg.scale != s["scale"]):
                raise UsageError(f"{folder}: segment settings (dimensions, quantisation, scale) differ from the "
                                 "index's")
            ids = seg.doc_ids.tolist()
            clash = next((i for i in ids if i in id_map), None)
            if clash is not None:
                raise UsageError(f"{folder}: document id {clash!r} is already in the index")
            name = self._next_name()
            shutil.copytree(folder, self.path / SEGMENTS / name)
            if s["scale"] is None:
                s["scale"] = seg.scale
            self._pending.add(name)
            self._entries.append({"name": name, "n_docs": seg.n_docs, "n_deleted": 0, "deletes": None,
                                  "manifest_sha256": sha256_file(self.path / SEGMENTS / name / MANIFEST)})
            for i, doc_id in enumerate(ids):
                id_map[doc_id] = (name, i)
            self._changed = True

    # --- commits ----------------------------------------------------------------------------------
    def commit(self) -> int:
        """Publish every change since the last commit atomically; returns the new generation.

        Durable when it returns. Applies the merge policy first. Without changes it returns the
        current generation.
        """
        self.flush()
        if self.merge_policy is not None:
            while merges := self.merge_policy.find_merges(self._live_sizes()):
                self._merge(merges)
        if not self._changed:
            return self.generation
        gen = self.generation + 1
        segments = []
        for entry in self._entries:
            mask = self._mask(entry)
            n_deleted = int(mask.sum())
            if n_deleted == entry["n_docs"]:
                continue  # fully deleted: dropped
            if entry["name"] in self._dirty:
                entry["deletes"] = write_deletes(self.path, entry["name"], gen, mask) if n_deleted else None
            entry["n_deleted"] = n_deleted
            segments.append(entry)
        if self.settings["scale"] is None and self.settings["quantization"] == "float32":
            self.settings["scale"] = 1.0
        write_commit(self.path, gen, self.settings, segments)
        self._entries = segments
        self.generation = gen
        self._dirty.clear()
        self._pending.clear()
        self._changed = False
        self._created_dir = False
        clean(self.path)
        return gen

    def rollback(self) -> None:
        """Drop every change since the last commit (the lock stays held)."""
        if self._buffer is not None:
            self._buffer.abort()
        for name in self._pending:
            shutil.rmtree(self.path / SEGMENTS / name, ignore_errors=True)
        gens = generations(self.path)
        if gens:
            commit = read_commit(self.path, gens[-1])
            self.settings, self._entries = commit["settings"], [dict(e) for e in commit["segments"]]
        else:
            self.settings["scale"], self._entries = None, []
        self._changed = False
        self._reset()

    def close(self) -> None:
        """Release the lock. Uncommitted changes are dropped; a directory this writer created and
        never committed to is removed."""
        if self._lock is None:
            return
        try:
            self.rollback()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._created_dir:
            shutil.rmtree(self.path, ignore_errors=True)
            self._created_dir = False

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.close()
                raise
        self.close()


def _record(doc: Any) -> dict[str, Any]:
    if isinstance(doc, str):
        return {"id": doc}
    record = {"id": doc.id, "title": getattr(doc, "title", "") or "", "text": doc.text}
    fields = getattr(doc, "fields", None)
    if fields:
        record.update({k: v for k, v in fields.items() if k not in record})
    return record


def _prepare_dir(path: Path) -> bool:
    """Check that ``path`` can hold an index; create it if absent. Returns whether it was created.

    An existing directory must be a sparseir index or empty (a leftover ``write.lock`` aside).
    """
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"{path}: {parent} is a file, not a directory")
        if parent.exists():
            break
    if path.is_dir():
        if not is_index(path) and [n for n in os.listdir(path) if n not in (LOCK, SEGMENTS) and ".tmp-" not in n]:
            raise UsageError(f"{path} exists and is not a sparseir index; refusing to write into it "
                             "(choose an empty or new directory)")
        return False
    path.mkdir(parents=True)
    return True


def write_index(out: str | Path, ids: Sequence[str], vectors: sp.spmatrix, terms: Sequence[str], *,
                quantize: str = "uint8", encoder: Any = None, overwrite: bool = False,
                store: bool = False, scale: float | None = None, reorder: bool = False) -> Path:
    """Write already-encoded vectors as a new single-segment index in one call.

    An existing index at ``out`` needs ``overwrite=True``; anything else there is refused.
    ``reorder`` numbers the documents in a recursive-graph-bisection order (see
    :meth:`IndexWriter.optimize`).
    """
    out = Path(out)
    if is_index(out) and not overwrite:
        raise UsageError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    ids = list(ids)
    if reorder:
        vectors = check_vectors(vectors, len(ids), len(terms))
        order = bp_order(vectors)
        ids, vectors = [ids[i] for i in order], vectors[order]
    with IndexWriter(out, encoder, terms=terms, quantize=quantize, store=store, create=True,
                     merge_policy=None, max_buffered_docs=max(len(ids), 1), scale=scale) as w:
        w.add(ids, vectors)
    return out


def write_segment(folder: str | Path, ids: Sequence[str], vectors: sp.spmatrix, terms: Sequence[str], *,
                  quantize: str = "uint8", scale: float | None = None, encoder: Any = None,
                  records: Sequence[dict[str, Any]] | None = None) -> Path:
    """Write a standalone segment without any lock, for :meth:`IndexWriter.add_segments`."""
    w = SegmentWriter(folder, terms, quantize=quantize, scale=scale, store=records is not None,
                      encoder=encoder_info(encoder) if encoder is not None else None)
    try:
        w.add(list(ids), vectors, records)
    except BaseException:
        w.abort()
        raise
    w.finish()
    return Path(folder)

