"""On-disk layout of a sparseir index (see FORMAT.md beside this file)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import SparseirError

FORMAT_NAME = "sparseir-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
QUANTIZATIONS = ("uint8", "float32")
UINT8_LEVELS = 255

#: array name -> file name; every file is a plain .npy array.
ARRAYS = {
    "offsets": "offsets.npy",              # int64 [n_dims + 1]: postings of dim t are [offsets[t], offsets[t+1])
    "docs": "postings_docs.npy",           # uint32 [n_postings]: internal doc ids, ascending within a dim
    "impacts": "postings_impacts.npy",     # uint8 or float32 [n_postings]: weight = impact * scale
    "doc_nnz": "doc_nnz.npy",              # uint32 [n_docs]: postings per document
    "doc_ids_offsets": "doc_ids_offsets.npy",  # int64 [n_docs + 1]
    "doc_ids_bytes": "doc_ids_bytes.npy",      # uint8: UTF-8 external ids, concatenated
    "terms_offsets": "terms_offsets.npy",      # int64 [n_dims + 1]
    "terms_bytes": "terms_bytes.npy",          # uint8: UTF-8 dimension names, concatenated
}


class IndexFormatError(SparseirError, ValueError):
    """A missing, partial, corrupt or incompatible index."""


def encode_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings to (int64 offsets, uint8 UTF-8 bytes)."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)


class StringTable(Sequence[str]):
    """A read-only list of strings backed by (offsets, bytes) arrays."""

    def __init__(self, offsets: np.ndarray, data: np.ndarray) -> None:
        self._offsets, self._data = offsets, data
        self._lookup: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        return bytes(self._data[self._offsets[i]:self._offsets[i + 1]]).decode("utf-8")

    def position(self, s: str) -> int:
        """Index of ``s``; raises ``KeyError`` if absent."""
        if self._lookup is None:
            self._lookup = {v: i for i, v in enumerate(self)}
        return self._lookup[s]

    def tolist(self) -> list[str]:
        data, off = bytes(self._data), self._offsets.tolist()
        return [data[a:b].decode("utf-8") for a, b in zip(off[:-1], off[1:])]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
