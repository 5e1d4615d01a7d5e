"""A read-only view of one commit of a live index (Lucene's model; see FORMAT.md).

:func:`open_index` gives a :class:`LiveIndex`: segments in order, each with its deletion mask.
Writing is :mod:`sparseir.index.writer`'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .commit import SEGMENTS, generations, read_commit, read_deletes
from .format import MANIFEST, IndexFormatError, sha256_file
from .segment import SparseIndex

#: tries of a reader whose commit was cleaned up while it opened it (it then opens the newer one)
OPEN_RETRIES = 20


def is_index(path: str | Path) -> bool:
    """Whether ``path`` is a sparseir index directory (any format version)."""
    path = Path(path)
    return bool(generations(path)) or (path / MANIFEST).is_file() and _is_v1(path / MANIFEST)


def _is_v1(manifest: Path) -> bool:
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("format") == "sparseir-index"
    except (OSError, ValueError, AttributeError):
        return False


class LiveIndex:
    """The documents of one commit: segments in order, each with its deletion mask.

    Global document positions run over the segments in commit order (``bases[s] + internal id``),
    deleted documents included (``max_doc`` positions, ``n_docs`` of them live). Search breaks
    score ties by the smaller position, which equals insertion order.
    """

    def __init__(self, path: Path, commit: dict[str, Any], segments: list[SparseIndex],
                 dead: list[np.ndarray | None]) -> None:
        self.path = path
        self.commit = commit
        self.generation: int = commit["generation"]
        self.settings: dict[str, Any] = commit["settings"]
        self.segments = segments
        self.dead = dead
        self.bases = np.zeros(len(segments) + 1, dtype=np.int64)
        np.cumsum([s.n_docs for s in segments], out=self.bases[1:])
        self.n_deleted = sum(int(d.sum()) for d in dead if d is not None)
        self._terms: list[str] | None = None

    # --- counts and settings --------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        """The index settings (``n_dims``, ``quantization``, ``scale``, ``encoder``, ``store``)."""
        return self.settings

    @property
    def max_doc(self) -> int:
        """Document positions, deleted ones included."""
        return int(self.bases[-1])

    @property
    def n_docs(self) -> int:
        """Live documents."""
        return self.max_doc - self.n_deleted

    @property
    def n_dims(self) -> int:
        return int(self.settings["n_dims"])

    @property
    def scale(self) -> float:
        return float(self.settings["scale"] or 1.0)

    @property
    def terms(self) -> list[str]:
        if self._terms is None:
            self._terms = _read_terms(self.path, self.settings) if self.settings.get("terms") else \
                self.segments[0].terms.tolist()
        return self._terms

    # --- documents ---------------------------------------------------------------------------
    def locate(self, position: int) -> tuple[int, int]:
        """(segment number, internal id) of a global position."""
        s = int(np.searchsorted(self.bases, position, side="right")) - 1
        return s, int(position - self.bases[s])

    def doc_id(self, position: int) -> str:
        s, local = self.locate(position)
        return self.segments[s].doc_ids[local]

    def position(self, doc_id: str) -> int | None:
        """Global position of live document ``doc_id``, or ``None``."""
        for s in range(len(self.segments) - 1, -1, -1):
            try:
                local = self.segments[s].doc_ids.position(doc_id)
            except KeyError:
                continue
            dead = self.dead[s]
            if dead is None or not dead[local]:
                return int(self.bases[s] + local)
        return None

    def doc(self, doc_id: str) -> dict[str, Any] | None:
        """The stored record ``{"id", "title", "text", ...}`` of a live document, else ``None``.

        ``None`` too when the index was built without a document store (``--no-store``).
        """
        pos = self.position(doc_id)
        if pos is None:
            return None
        s, local = self.locate(pos)
        store = self.segments[s].store
        return store.get(local) if store is not None else None

    def live_ids(self) -> list[str]:
        """External ids of the live documents, in global order."""
        out: list[str] = []
        for seg, dead in zip(self.segments, self.dead):
            ids = seg.doc_ids.tolist()
            out.extend(ids if dead is None else [i for i, d in zip(ids, dead) if not d])
        return out

    def to_csr(self) -> sp.csr_matrix:
        """``[max_doc, n_dims]`` (de)quantised vectors; rows of deleted documents are empty."""
        if not self.segments:
            return sp.csr_matrix((0, self.n_dims), dtype=np.float32)
        rows = []
        for seg, dead in zip(self.segments, self.dead):
            x = seg.impacts_csr(np.float32(self.scale))
            if dead is not None:
                x = sp.diags((1 - dead).astype(np.float32)) @ x
            rows.append(x)
        return sp.vstack(rows, format="csr", dtype=np.float32)

    # --- integrity and statistics ---------------------------------------------------------------
    def verify(self) -> None:
        """Check the sha256 of every file of this commit (``sparseir check``)."""
        for seg in self.segments:
            seg.verify()
        for entry in self.commit["segments"]:
            read_deletes(self.path, entry.get("deletes"), entry["n_docs"], True)
        if self.settings.get("terms"):
            _read_terms(self.path, self.settings, verify=True)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.segments)

    def stats(self, bins: int = 10) -> dict[str, Any]:
        """Counts, sizes, the store's bytes per document and a histogram of stored weights."""
        impacts = [np.asarray(s.impacts, dtype=np.float32) for s in self.segments]
        weights = np.concatenate(impacts) * np.float32(self.scale) if impacts else np.zeros(0, np.float32)
        counts, edges = np.histogram(weights, bins=bins) if len(weights) else (np.zeros(0), np.zeros(1))
        store = sum(s.store.nbytes for s in self.segments if s.store is not None)
        stored_docs = sum(s.n_docs for s in self.segments if s.store is not None)
        n_postings = sum(s.n_postings for s in self.segments)
        return {
            "path": str(self.path),
            "generation": self.generation,
            "segments": [{"name": e["name"], "n_docs": e["n_docs"], "n_deleted": e["n_deleted"]}
                         for e in self.commit["segments"]],
            "n_docs": self.n_docs,
            "n_deleted": self.n_deleted,
            "max_doc": self.max_doc,
            "n_dims": self.n_dims,
            "n_postings": n_postings,
            "n_empty_docs": sum(int(s.manifest["n_empty_docs"]) for s in self.segments),
            "postings_per_doc": n_postings / max(self.max_doc, 1),
            "quantization": self.settings["quantization"],
            "scale": self.settings["scale"],
            "bytes": self.nbytes,
            "bytes_per_posting": self.nbytes / max(n_postings, 1),
            "store": bool(self.settings.get("store")),
            "store_bytes": store,
            "store_bytes_per_doc": store / stored_docs if stored_docs else None,
            "encoder": self.settings.get("encoder"),
            "weight_histogram": {"edges": edges.tolist(), "counts": counts.astype(int).tolist()},
        }


def _read_terms(path: Path, settings: dict[str, Any], verify: bool = False) -> list[str]:
    entry = settings.get("terms") or {}
    file = path / SEGMENTS / str(entry.get("file"))
    if verify and sha256_file(file) != entry.get("sha256"):
        raise IndexFormatError(f"{file}: checksum mismatch, the file is corrupt or was modified")
    try:
        terms = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{file}: unreadable dimension names ({e})") from None
    if not isinstance(terms, list) or len(terms) != settings["n_dims"]:
        raise IndexFormatError(f"{file}: {len(terms)} dimension names, the index has {settings['n_dims']}")
    return terms


def open_index(path: str | Path, *, verify: bool = False, previous: LiveIndex | None = None) -> LiveIndex:
    """Open the latest commit of index ``path``. Cheap: maps the arrays, reads no postings.

    ``verify`` checks every file's sha256. ``previous`` reuses its still-live segments (refresh).
    Readers take no lock. If the commit being opened is cleaned up by a writer meanwhile (only
    possible after two newer commits), the reader retries with the newest commit; an error is
    reported only if it concerns the newest commit.
    """
    path = Path(path)
    for _ in range(OPEN_RETRIES):
        gens = generations(path)
        if not gens:
            if (path / MANIFEST).is_file():
                SparseIndex.load(path, verify=False)  # raises the version-1 "rebuild" error, or the reason
            if path.is_file():
                raise IndexFormatError(f"{path}: not a sparseir index (a file, not a directory)")
            raise IndexFormatError(f"{path}: not a sparseir index (no commit-*.json)")
        try:
            return _open(path, gens[-1], verify, previous)
        except (IndexFormatError, OSError):
            if generations(path)[-1:] == gens[-1:]:
                raise
    raise IndexFormatError(f"{path}: the index changed {OPEN_RETRIES} times while being opened")


def _open(path: Path, generation: int, verify: bool, previous: LiveIndex | None) -> LiveIndex:
    commit = read_commit(path, generation)
    cached = {s.path.name: s for s in previous.segments} if previous is not None else {}
    segments, dead = [], []
    settings = commit["settings"]
    for entry in commit["segments"]:
        folder = path / SEGMENTS / entry["name"]
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise IndexFormatError(f"{folder}: segment listed by commit {generation} is missing")
        if sha256_file(manifest) != entry["manifest_sha256"]:
            raise IndexFormatError(f"{manifest}: checksum mismatch with commit {generation}")
        seg = cached.get(entry["name"])
        if seg is None or verify:
            seg = SparseIndex.load(folder, verify=verify)
        if seg.n_docs != entry["n_docs"] or seg.n_dims != settings["n_dims"] or \
                seg.manifest["quantization"] != settings["quantization"] or seg.scale != settings["scale"]:
            raise IndexFormatError(f"{manifest}: segment disagrees with commit {generation} (documents, "
                                   "dimensions, quantisation or scale)")
        segments.append(seg)
        mask = read_deletes(path, entry.get("deletes"), seg.n_docs, verify)
        if mask is not None and int(mask.sum()) != entry["n_deleted"]:
            raise IndexFormatError(f"{path / SEGMENTS / entry['deletes']['file']}: {int(mask.sum())} deletions, "
                                   f"commit {generation} says {entry['n_deleted']}")
        dead.append(mask)
    return LiveIndex(path, commit, segments, dead)
