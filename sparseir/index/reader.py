"""Open an index directory: validate the manifest, memory-map the arrays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._fs import dir_bytes
from .format import FORMAT_NAME, FORMAT_VERSION, MANIFEST, IndexFormatError, StringTable, sha256_file

#: expected dtype and length (as a function of the manifest) of every array.
_SPEC = {
    "offsets": (np.int64, lambda m: m["n_dims"] + 1),
    "docs": (np.uint32, lambda m: m["n_postings"]),
    "impacts": (None, lambda m: m["n_postings"]),
    "doc_nnz": (np.uint32, lambda m: m["n_docs"]),
    "doc_ids_offsets": (np.int64, lambda m: m["n_docs"] + 1),
    "doc_ids_bytes": (np.uint8, None),
    "terms_offsets": (np.int64, lambda m: m["n_dims"] + 1),
    "terms_bytes": (np.uint8, None),
}


class SparseIndex:
    """A memory-mapped inverted index of non-negative sparse vectors."""

    def __init__(self, path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.manifest = manifest
        self.offsets: np.ndarray = arrays["offsets"]
        self.docs: np.ndarray = arrays["docs"]
        self.impacts: np.ndarray = arrays["impacts"]
        self.doc_nnz: np.ndarray = arrays["doc_nnz"]
        self.doc_ids = StringTable(arrays["doc_ids_offsets"], arrays["doc_ids_bytes"])
        self.terms = StringTable(arrays["terms_offsets"], arrays["terms_bytes"])
        self.scale = float(manifest["scale"])

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True, mmap: bool = True) -> SparseIndex:
        """Open ``path``. ``verify`` checks every array's sha256 (reads each file once)."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            hint = " (an unfinished build?)" if path.is_dir() else ""
            raise IndexFormatError(f"{path}: not a sparseir index, no {MANIFEST}{hint}")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IndexFormatError(f"{manifest_path}: corrupt manifest ({e})") from None
        if manifest.get("format") != FORMAT_NAME:
            raise IndexFormatError(f"{path}: not a sparseir index (format {manifest.get('format')!r})")
        if manifest.get("version") != FORMAT_VERSION:
            raise IndexFormatError(f"{path}: index format version {manifest.get('version')}; this sparseir reads "
                                   f"version {FORMAT_VERSION}. Rebuild the index with `sparseir index`.")
        arrays = {}
        for name, (dtype, length) in _SPEC.items():
            try:
                entry = manifest["files"][name]
            except (KeyError, TypeError):
                raise IndexFormatError(f"{manifest_path}: manifest lists no {name!r} array") from None
            file = path / entry["file"]
            if not file.is_file():
                raise IndexFormatError(f"{path}: missing array file {entry['file']}")
            if verify and sha256_file(file) != entry["sha256"]:
                raise IndexFormatError(f"{file}: checksum mismatch, the file is corrupt or was modified")
            try:
                arr = np.load(file, mmap_mode="r" if mmap else None)
            except (ValueError, OSError, EOFError) as e:
                raise IndexFormatError(f"{file}: unreadable or truncated array ({e})") from None
            if arr.ndim != 1 or (dtype is not None and arr.dtype != dtype) or (
                    length is not None and len(arr) != length(manifest)):
                raise IndexFormatError(f"{file}: shape {arr.shape} / dtype {arr.dtype} disagree with the manifest")
            arrays[name] = arr
        expected = np.uint8 if manifest["quantization"] == "uint8" else np.float32
        if arrays["impacts"].dtype != expected:
            raise IndexFormatError(f"{path}: impacts are {arrays['impacts'].dtype}, manifest says {expected.__name__}")
        return cls(path, manifest, arrays)

    @property
    def n_docs(self) -> int:
        return int(self.manifest["n_docs"])

    @property
    def n_dims(self) -> int:
        return int(self.manifest["n_dims"])

    @property
    def n_postings(self) -> int:
        return int(self.manifest["n_postings"])

    @property
    def nbytes(self) -> int:
        """Bytes on disk of all arrays and the manifest."""
        return dir_bytes(self.path)

    def to_csr(self) -> sp.csr_matrix:
        """The stored document vectors as a ``[n_docs, n_dims]`` CSR matrix of (de)quantised weights."""
        dims = np.repeat(np.arange(self.n_dims, dtype=np.int64), np.diff(self.offsets))
        weights = np.asarray(self.impacts, dtype=np.float32) * np.float32(self.scale)
        return sp.csr_matrix((weights, (np.asarray(self.docs, dtype=np.int64), dims)),
                             shape=(self.n_docs, self.n_dims))

    def stats(self, bins: int = 10) -> dict[str, Any]:
        """Counts, sizes, and a histogram of stored weights."""
        weights = np.asarray(self.impacts, dtype=np.float32) * np.float32(self.scale)
        counts, edges = np.histogram(weights, bins=bins) if len(weights) else (np.zeros(0), np.zeros(1))
        list_lengths = np.diff(self.offsets)
        return {
            "path": str(self.path),
            "n_docs": self.n_docs,
            "n_dims": self.n_dims,
            "n_active_dims": int((list_lengths > 0).sum()),
            "n_postings": self.n_postings,
            "n_empty_docs": int(self.manifest["n_empty_docs"]),
            "postings_per_doc": self.n_postings / max(self.n_docs, 1),
            "longest_list": int(list_lengths.max()) if self.n_dims else 0,
            "quantization": self.manifest["quantization"],
            "bytes": self.nbytes,
            "bytes_per_posting": self.nbytes / max(self.n_postings, 1),
            "encoder": self.manifest.get("encoder"),
            "weight_histogram": {"edges": edges.tolist(), "counts": counts.astype(int).tolist()},
        }
