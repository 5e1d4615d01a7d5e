"""The inverted index: segments of flat, memory-mapped arrays, deletions and commits (see FORMAT.md).

Names are imported lazily, so importing this package pulls in neither Numba nor the encoders.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "FORMAT_VERSION": "format", "IndexFormatError": "format", "LockError": "format",
    "SparseIndex": "segment", "SegmentWriter": "segment_writer",
    "LiveIndex": "live", "open_index": "live", "is_index": "live",
    "IndexWriter": "writer", "write_index": "writer",
    "write_segment": "writer", "encoder_info": "writer",
    "MergePolicy": "merge",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'sparseir.index' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
