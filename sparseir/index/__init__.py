"""The inverted index: a versioned directory of flat, memory-mapped arrays (see FORMAT.md)."""

from .format import FORMAT_VERSION, IndexFormatError
from .reader import SparseIndex
from .writer import IndexWriter, write_index

__all__ = ["FORMAT_VERSION", "IndexFormatError", "IndexWriter", "SparseIndex", "write_index"]
