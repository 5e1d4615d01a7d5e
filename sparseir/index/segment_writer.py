"""Write one immutable segment: CSR chunks in, a directory of flat arrays (and a doc store) out."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import UsageError
from .format import (ARRAYS, FORMAT_NAME, FORMAT_VERSION, MANIFEST, QUANTIZATIONS, UINT8_LEVELS,
                     IndexFormatError, checksum, encode_strings, sha256_file)
from .kernels import scatter_postings
from .store import STORE_FILE, STORE_OFFSETS, StoreWriter


def check_vectors(vectors: sp.spmatrix, n_rows: int, n_dims: int) -> sp.csr_matrix:
    """``vectors`` as float32 CSR ``[n_rows, n_dims]`` of finite non-negative weights."""
    x = sp.csr_matrix(vectors, dtype=np.float32)
    if x.shape != (n_rows, n_dims):
        raise UsageError(f"vectors have shape {x.shape}, expected ({n_rows}, {n_dims})")
    x.sum_duplicates()
    x.eliminate_zeros()
    if x.nnz and (not np.isfinite(x.data).all() or x.data.min() < 0):
        raise UsageError("weights must be finite and non-negative")
    return x


class SegmentWriter:
    """Build a segment in ``folder`` from CSR chunks without holding them in memory.

    ``add`` spills each chunk; ``finish`` lays the postings out with a Numba scatter kernel and
    writes ``manifest.json`` last. ``scale`` fixes the uint8 dequantisation factor (weights above
    ``255 * scale`` saturate and are counted as ``n_clipped``); ``None`` derives it from this
    segment's largest weight. ``prequantized`` chunks already hold impacts (used by merges).
    """

    def __init__(self, folder: str | Path, terms: Sequence[str], *, quantize: str = "uint8",
                 scale: float | None = None, encoder: dict[str, Any] | None = None, store: bool = True,
                 prequantized: bool = False) -> None:
        if quantize not in QUANTIZATIONS:
            raise UsageError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True)
        self.terms = list(terms)
        self.quantize, self.scale, self.encoder, self.prequantized = quantize, scale, encoder, prequantized
        self.store = StoreWriter(self.folder) if store else None
        self.counts = np.zeros(len(self.terms), dtype=np.int64)
        self.doc_nnz: list[np.ndarray] = []
        self.ids: list[str] = []
        self._seen: set[str] = set()
        self.max_weight = 0.0
        self._chunks = 0
        self._start = time.perf_counter()

    @property
    def n_docs(self) -> int:
        return len(self.ids)

    def abort(self) -> None:
        if self.store is not None:
            self.store.abort()
        shutil.rmtree(self.folder, ignore_errors=True)

    def add(self, ids: Sequence[str], vectors: sp.spmatrix, records: Sequence[dict[str, Any]] | None = None) -> None:
        """Append documents ``ids`` with their ``[len(ids), n_dims]`` vectors and stored records."""
        x = check_vectors(vectors, len(ids), len(self.terms))
        for doc_id in ids:
            if doc_id in self._seen:
                raise UsageError(f"duplicate document id {doc_id!r}")
            self._seen.add(doc_id)
        self.ids.extend(ids)
        if self.store is not None:
            for i, doc_id in enumerate(ids):
                self.store.add(records[i] if records is not None else {"id": doc_id})
        stem = self.folder / f"chunk{self._chunks:06d}"
        for name, arr in (("indptr", x.indptr.astype(np.int64)), ("indices", x.indices.astype(np.int32)),
                          ("data", x.data)):
            np.save(f"{stem}.{name}.npy", arr)
        self._chunks += 1
        self.counts += np.bincount(x.indices, minlength=len(self.terms))
        self.doc_nnz.append(np.diff(x.indptr).astype(np.uint32))
        if x.nnz:
            self.max_weight = max(self.max_weight, float(x.data.max()))

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Lay out the arrays and write the manifest; returns it. On error the folder is removed."""
        try:
            return self._finish(extra or {})
        except BaseException:
            self.abort()
            raise

    def _finish(self, extra: dict[str, Any]) -> dict[str, Any]:
        n_dims, n_docs = len(self.terms), len(self.ids)
        if n_docs >= 2**32 - 1:
            raise IndexFormatError("more than 2^32 - 1 documents do not fit uint32 doc ids")
        offsets = np.zeros(n_dims + 1, dtype=np.int64)
        np.cumsum(self.counts, out=offsets[1:])
        n_postings = int(offsets[-1])
        quantize = self.quantize == "uint8"
        if self.scale is None:
            self.scale = self.max_weight / UINT8_LEVELS if quantize and self.max_weight > 0 else 1.0
        inv_scale = 1.0 if self.prequantized else 1.0 / self.scale
        docs = np.lib.format.open_memmap(self.folder / ARRAYS["docs"], "w+", np.uint32, (n_postings,))
        impacts = np.lib.format.open_memmap(self.folder / ARRAYS["impacts"], "w+",
                                            np.uint8 if quantize else np.float32, (n_postings,))
        cursor = offsets[:-1].copy()
        first = 0
        for c in range(self._chunks):
            stem = self.folder / f"chunk{c:06d}"
            indptr, indices, data = (np.load(f"{stem}.{n}.npy") for n in ("indptr", "indices", "data"))
            scatter_postings(indptr, indices, data, first, cursor, docs, impacts, inv_scale, quantize)
            first += len(indptr) - 1
            for n in ("indptr", "indices", "data"):
                os.remove(f"{stem}.{n}.npy")
        docs.flush()
        impacts.flush()
        del docs, impacts
        doc_nnz = np.concatenate(self.doc_nnz) if self.doc_nnz else np.zeros(0, np.uint32)
        ids_off, ids_bytes = encode_strings(self.ids)
        terms_off, terms_bytes = encode_strings(self.terms)
        for name, arr in (("offsets", offsets), ("doc_nnz", doc_nnz), ("doc_ids_offsets", ids_off),
                          ("doc_ids_bytes", ids_bytes), ("terms_offsets", terms_off), ("terms_bytes", terms_bytes)):
            np.save(self.folder / ARRAYS[name], arr)
        files = dict(ARRAYS)
        store = None
        if self.store is not None:
            store = self.store.close()
            files.update(store_offsets=STORE_OFFSETS, store_blocks=STORE_FILE)
        clipped = 0 if self.prequantized or not quantize else int(self.max_weight > UINT8_LEVELS * self.scale)
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "kind": "segment",
            "n_docs": n_docs,
            "n_dims": n_dims,
            "n_postings": n_postings,
            "n_empty_docs": int((doc_nnz == 0).sum()),
            "quantization": self.quantize,
            "scale": self.scale,
            "max_weight": self.max_weight * (self.scale if self.prequantized else 1.0),
            "saturated": bool(clipped),
            "encoder": self.encoder,
            "store": store,
            "build_seconds": round(time.perf_counter() - self._start, 3),
            **extra,
            "files": {name: {"file": f, "sha256": sha256_file(self.folder / f)} for name, f in files.items()},
        }
        manifest["checksum"] = checksum(manifest)
        write_json(self.folder / MANIFEST, manifest)
        return manifest


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` and fsync it (not atomic: see ``_fs.atomic_write``)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
