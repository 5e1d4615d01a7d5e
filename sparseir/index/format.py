"""On-disk layout of a sparseir index, version 2 (see FORMAT.md beside this file)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LockError as LockError  # re-exported: it lived here before it served other folders too
from ..errors import SparseirError

FORMAT_NAME = "sparseir-index"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
QUANTIZATIONS = ("uint8", "float32")
UINT8_LEVELS = 255
#: documents per compressed block of the document store
STORE_BLOCK = 64

#: array name -> file name inside a segment directory; every file is a plain .npy array.
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
#: the optional document store of a segment
STORE_ARRAYS = {
    "store_offsets": "store_offsets.npy",  # int64 [n_blocks + 1]: byte range of each zstd block
    "store_blocks": "store_blocks.npy",    # uint8: concatenated zstd frames of JSON lines
}


class IndexFormatError(SparseirError, ValueError):
    """A missing, partial, corrupt or incompatible index."""


def checksum(record: dict[str, Any]) -> str:
    """sha256 of a JSON record's canonical form, without its own ``checksum`` key."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object file whose ``checksum`` matches; ``IndexFormatError`` naming ``path`` otherwise."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{path}: corrupt {what} ({e})") from None
    if not isinstance(record, dict):
        raise IndexFormatError(f"{path}: corrupt {what} (a JSON {type(record).__name__}, expected an object)")
    if record.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path}: not a sparseir index (format {record.get('format')!r})")
    version = record.get("version")
    if type(version) is not int:
        raise IndexFormatError(f"{path}: corrupt {what}: version {version!r} is not an integer")
    if version == 1:
        raise IndexFormatError(f"{path.parent}: index format version 1; this sparseir reads version "
                               f"{FORMAT_VERSION}. Rebuild the index with sparseir >= 0.2 (`sparseir index "
                               "--overwrite`).")
    if version != FORMAT_VERSION:
        raise IndexFormatError(f"{path}: index format version {version}; this sparseir reads version "
                               f"{FORMAT_VERSION}. Rebuild the index with `sparseir index`, or upgrade sparseir.")
    if record.get("checksum") != checksum(record):
        raise IndexFormatError(f"{path}: {what} checksum mismatch, the file was modified or is corrupt")
    return record


def require(record: dict[str, Any], path: Path, **types: type | tuple[type, ...]) -> None:
    """Every key of ``types`` is present in ``record`` with that type."""
    for key, t in types.items():
        if not isinstance(record.get(key), t) or isinstance(record.get(key), bool):
            raise IndexFormatError(f"{path}: missing or invalid {key!r} ({record.get(key)!r})")


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
            self._lookup = {v: i for i, v in enumerate(self.tolist())}
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
