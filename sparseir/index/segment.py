"""Open one segment directory: validate its manifest, memory-map its arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .format import MANIFEST, IndexFormatError, StringTable, read_json, require, sha256_file
from .store import StoreReader

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
    """One immutable, memory-mapped segment: an inverted index of non-negative sparse vectors.

    A live index (:class:`sparseir.index.LiveIndex`) is a list of segments plus deletions.
    ``SparseIndex.load`` also opens an index directory whose latest commit is a single segment
    without deletions (what :func:`write_index` produces).
    """

    def __init__(self, path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.manifest = manifest
        self.offsets: np.ndarray = arrays["offsets"]
        self.docs: np.ndarray = arrays["docs"]
        self.impacts: np.ndarray = arrays["impacts"]
        #: 1 for each dim whose posting list a search kernel has found ascending and inside the segment
        #: (in memory, per process: each list is checked once, on first use)
        self.checked_dims = np.zeros(len(self.offsets) - 1, dtype=np.uint8)
        self.doc_nnz: np.ndarray = arrays["doc_nnz"]
        self.doc_ids = StringTable(arrays["doc_ids_offsets"], arrays["doc_ids_bytes"])
        self.terms = StringTable(arrays["terms_offsets"], arrays["terms_bytes"])
        self.scale = float(manifest["scale"])
        store = manifest.get("store")
        self.store = StoreReader(path, int(store["block"]), self.n_docs) if store else None

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True, mmap: bool = True) -> SparseIndex:
        """Open segment ``path``. ``verify`` checks every file's sha256 (reads each file once).

        Opening reads only the manifest and the ``offsets`` array (validated: a hostile offsets
        array could otherwise send the kernels out of bounds).
        """
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            from .live import is_index, open_index

            if is_index(path):
                live = open_index(path, verify=verify)
                if len(live.segments) != 1 or live.n_deleted:
                    raise IndexFormatError(f"{path}: {len(live.segments)} segments, {live.n_deleted} deletions; "
                                           "open it with sparseir.index.open_index")
                return live.segments[0]
            hint = " (an unfinished build?)" if path.is_dir() else ""
            raise IndexFormatError(f"{path}: not a sparseir index, no {MANIFEST}{hint}")
        manifest = read_json(manifest_path, "segment manifest")
        require(manifest, manifest_path, n_docs=int, n_dims=int, n_postings=int, scale=(int, float),
                files=dict, quantization=str)
        arrays = {}
        for name, (dtype, length) in _SPEC.items():
            arrays[name] = _load_array(path, manifest, name, dtype, length, verify, mmap)
        if manifest.get("store"):
            for name in ("store_offsets", "store_blocks"):
                _check_file(path, manifest, name, verify)
        expected = {"uint8": np.uint8, "float32": np.float32}.get(manifest["quantization"])
        if arrays["impacts"].dtype != expected:
            raise IndexFormatError(f"{path}: impacts are {arrays['impacts'].dtype}, manifest says "
                                   f"{manifest['quantization']}")
        off = np.asarray(arrays["offsets"])
        if len(off) and (off[0] != 0 or off[-1] != manifest["n_postings"] or (np.diff(off) < 0).any()):
            raise IndexFormatError(f"{path / manifest['files']['offsets']['file']}: offsets are not a valid "
                                   "partition of the postings")
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
        """Bytes on disk of the segment's files (its manifest and the files it lists; not the saved
        approximate-search structures, see ``ApproxIndex.nbytes``)."""
        files = [self.path / MANIFEST, *(self.path / f["file"] for f in self.manifest["files"].values())]
        return sum(f.stat().st_size for f in files)

    def verify(self) -> None:
        """Check every file's sha256; raises :class:`IndexFormatError` naming the file at fault."""
        for name in self.manifest["files"]:
            _check_file(self.path, self.manifest, name, True)

    def to_csr(self) -> sp.csr_matrix:
        """The stored document vectors as a ``[n_docs, n_dims]`` CSR matrix of (de)quantised weights."""
        return self.impacts_csr(np.float32(self.scale))

    def impacts_csr(self, scale: float = 1.0) -> sp.csr_matrix:
        """The stored impacts (times ``scale``) as a ``[n_docs, n_dims]`` CSR matrix."""
        if len(self.docs) and int(np.max(self.docs)) >= self.n_docs:
            raise IndexFormatError(f"{self.path}: posting document ids beyond n_docs ({self.n_docs})")
        dims = np.repeat(np.arange(self.n_dims, dtype=np.int64), np.diff(self.offsets))
        weights = np.asarray(self.impacts, dtype=np.float32) * np.float32(scale)
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


def _check_file(path: Path, manifest: dict[str, Any], name: str, verify: bool) -> Path:
    try:
        entry = manifest["files"][name]
        file = path / entry["file"]
    except (KeyError, TypeError):
        raise IndexFormatError(f"{path / MANIFEST}: manifest lists no {name!r} file") from None
    if not file.is_file():
        raise IndexFormatError(f"{path}: missing array file {entry['file']}")
    if verify and sha256_file(file) != entry.get("sha256"):
        raise IndexFormatError(f"{file}: checksum mismatch, the file is corrupt or was modified")
    return file


def _load_array(path: Path, manifest: dict[str, Any], name: str, dtype, length, verify: bool,
                mmap: bool) -> np.ndarray:
    file = _check_file(path, manifest, name, verify)
    try:
        arr = np.load(file, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise IndexFormatError(f"{file}: unreadable or truncated array ({e})") from None
    if arr.ndim != 1 or (dtype is not None and arr.dtype != dtype) or (
            length is not None and len(arr) != length(manifest)):
        raise IndexFormatError(f"{file}: shape {arr.shape} / dtype {arr.dtype} disagree with the manifest")
    return arr
