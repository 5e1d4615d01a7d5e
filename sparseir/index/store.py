"""The document store of a segment: JSON records in zstd-compressed blocks.

``store.bin`` is a concatenation of zstd frames; frame ``b`` holds documents
``b * block .. (b + 1) * block - 1`` as JSON lines ``{"id", "title", "text", ...fields}``, and
``store_offsets.npy`` (int64 ``[n_blocks + 1]``) gives each frame's byte range.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from .format import STORE_BLOCK, IndexFormatError

STORE_FILE = "store.bin"
STORE_OFFSETS = "store_offsets.npy"
LEVEL = 3


class StoreWriter:
    """Append records; ``close`` writes the offsets. Blocks are compressed as they fill."""

    def __init__(self, folder: Path, block: int = STORE_BLOCK) -> None:
        self.folder, self.block = folder, block
        self._file = open(folder / STORE_FILE, "wb")
        self._offsets = [0]
        self._pending: list[bytes] = []
        self._zstd = zstandard.ZstdCompressor(level=LEVEL)
        self.n_docs = 0

    def add(self, record: dict[str, Any]) -> None:
        self._pending.append(json.dumps(record, ensure_ascii=False).encode("utf-8"))
        self.n_docs += 1
        if len(self._pending) == self.block:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            frame = self._zstd.compress(b"\n".join(self._pending))
            self._file.write(frame)
            self._offsets.append(self._offsets[-1] + len(frame))
            self._pending = []

    def close(self) -> dict[str, Any]:
        """Finish the files; returns the manifest entry."""
        self._flush()
        self._file.close()
        np.save(self.folder / STORE_OFFSETS, np.asarray(self._offsets, dtype=np.int64))
        return {"block": self.block, "n_docs": self.n_docs}

    def abort(self) -> None:
        self._file.close()


class StoreReader:
    """Random access to stored records; caches the last decompressed block."""

    def __init__(self, folder: Path, block: int, n_docs: int) -> None:
        self.folder, self.block, self.n_docs = folder, block, n_docs
        try:
            self.offsets = np.load(folder / STORE_OFFSETS, mmap_mode="r")
            self.data = np.memmap(folder / STORE_FILE, dtype=np.uint8, mode="r") \
                if (folder / STORE_FILE).stat().st_size else np.zeros(0, np.uint8)
        except (OSError, ValueError) as e:
            raise IndexFormatError(f"{folder}: unreadable document store ({e})") from None
        if self.offsets.ndim != 1 or len(self.offsets) != -(-n_docs // block) + 1 or (
                len(self.offsets) and self.offsets[-1] != len(self.data)):
            raise IndexFormatError(f"{folder / STORE_OFFSETS}: disagrees with the segment's document count")
        self._cache: tuple[int, list[bytes]] = (-1, [])
        self._zstd = zstandard.ZstdDecompressor()

    def get(self, position: int) -> dict[str, Any]:
        b, i = divmod(position, self.block)
        if self._cache[0] != b:
            lo, hi = int(self.offsets[b]), int(self.offsets[b + 1])
            try:
                lines = self._zstd.decompress(bytes(self.data[lo:hi])).split(b"\n")
            except zstandard.ZstdError as e:
                raise IndexFormatError(f"{self.folder / STORE_FILE}: corrupt block {b} ({e})") from None
            self._cache = (b, lines)
        try:
            return json.loads(self._cache[1][i])
        except (IndexError, ValueError) as e:
            raise IndexFormatError(f"{self.folder / STORE_FILE}: corrupt record {position} ({e})") from None

    @property
    def nbytes(self) -> int:
        return int(len(self.data) + self.offsets.nbytes)
