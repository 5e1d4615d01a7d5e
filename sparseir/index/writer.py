"""Chunked, atomic index writer: CSR chunks in, a finished index directory out."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._fs import publish_dir
from .format import (ARRAYS, FORMAT_NAME, FORMAT_VERSION, MANIFEST, QUANTIZATIONS, UINT8_LEVELS,
                     IndexFormatError, encode_strings, sha256_file)
from .kernels import scatter_postings


class IndexWriter:
    """Build an index from CSR chunks without holding the corpus in memory.

    ``add`` spills each chunk to the temporary directory; ``close`` lays the postings out in
    memory-mapped output arrays, writes the manifest and renames the directory into place.
    Use it as a context manager: on error the temporary directory is removed and nothing
    appears under ``out``.
    """

    def __init__(self, out: str | Path, terms: Sequence[str], *, quantize: str = "uint8",
                 encoder: dict[str, Any] | None = None, overwrite: bool = False) -> None:
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out} already exists (pass overwrite=True / --overwrite to replace it)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.terms = list(terms)
        self.quantize = quantize
        self.encoder = encoder
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        self.counts = np.zeros(len(self.terms), dtype=np.int64)
        self.doc_nnz: list[np.ndarray] = []
        self.ids: list[str] = []
        self._seen: set[str] = set()
        self.max_weight = 0.0
        self._chunks = 0
        self._start = time.perf_counter()

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def add(self, ids: Sequence[str], vectors: sp.spmatrix) -> None:
        """Append documents ``ids`` with their ``[len(ids), n_dims]`` non-negative vectors."""
        x = sp.csr_matrix(vectors, dtype=np.float32)
        if x.shape != (len(ids), len(self.terms)):
            raise ValueError(f"vectors have shape {x.shape}, expected ({len(ids)}, {len(self.terms)})")
        x.sum_duplicates()
        x.eliminate_zeros()
        if x.nnz and (not np.isfinite(x.data).all() or x.data.min() < 0):
            raise ValueError("weights must be finite and non-negative")
        for doc_id in ids:
            if doc_id in self._seen:
                raise ValueError(f"duplicate document id {doc_id!r}")
            self._seen.add(doc_id)
        self.ids.extend(ids)
        stem = self.tmp / f"chunk{self._chunks:06d}"
        for name, arr in (("indptr", x.indptr.astype(np.int64)), ("indices", x.indices.astype(np.int32)),
                          ("data", x.data)):
            np.save(f"{stem}.{name}.npy", arr)
        self._chunks += 1
        self.counts += np.bincount(x.indices, minlength=len(self.terms))
        self.doc_nnz.append(np.diff(x.indptr).astype(np.uint32))
        if x.nnz:
            self.max_weight = max(self.max_weight, float(x.data.max()))

    def close(self, extra: dict[str, Any] | None = None) -> Path:
        """Finish the index and move it to ``out``. Returns ``out``."""
        try:
            self._finish(extra or {})
        except BaseException:
            self.abort()
            raise
        publish_dir(self.tmp, self.out)
        return self.out

    def _finish(self, extra: dict[str, Any]) -> None:
        n_dims, n_docs = len(self.terms), len(self.ids)
        if n_docs >= 2**32 - 1:
            raise IndexFormatError("more than 2^32 - 1 documents do not fit uint32 doc ids")
        offsets = np.zeros(n_dims + 1, dtype=np.int64)
        np.cumsum(self.counts, out=offsets[1:])
        n_postings = int(offsets[-1])
        quantize = self.quantize == "uint8"
        scale = self.max_weight / UINT8_LEVELS if quantize and self.max_weight > 0 else 1.0
        docs = np.lib.format.open_memmap(self.tmp / ARRAYS["docs"], "w+", np.uint32, (n_postings,))
        impacts = np.lib.format.open_memmap(self.tmp / ARRAYS["impacts"], "w+",
                                            np.uint8 if quantize else np.float32, (n_postings,))
        cursor = offsets[:-1].copy()
        first = 0
        for c in range(self._chunks):
            stem = self.tmp / f"chunk{c:06d}"
            indptr, indices, data = (np.load(f"{stem}.{n}.npy") for n in ("indptr", "indices", "data"))
            scatter_postings(indptr, indices, data, first, cursor, docs, impacts, 1.0 / scale, quantize)
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
            np.save(self.tmp / ARRAYS[name], arr)
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "n_docs": n_docs,
            "n_dims": n_dims,
            "n_postings": n_postings,
            "n_empty_docs": int((doc_nnz == 0).sum()),
            "quantization": self.quantize,
            "scale": scale,
            "max_weight": self.max_weight,
            "encoder": self.encoder,
            "build_seconds": round(time.perf_counter() - self._start, 3),
            **extra,
            "files": {name: {"file": f, "sha256": sha256_file(self.tmp / f)} for name, f in ARRAYS.items()},
        }
        with open(self.tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())


def write_index(out: str | Path, ids: Sequence[str], vectors: sp.spmatrix, terms: Sequence[str], *,
                quantize: str = "uint8", encoder: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write already-encoded vectors as an index in one call."""
    with IndexWriter(out, terms, quantize=quantize, encoder=encoder, overwrite=overwrite) as w:
        w.add(ids, vectors)
        return w.close()
